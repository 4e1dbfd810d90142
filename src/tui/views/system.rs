//! System: per-core CPU bars, CPU and memory history, load and swap, and the GPU panel.

use std::borrow::Cow;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{bar, panel};
use crate::tui::app::App;
use crate::tui::widgets::chart::{GLYPHS, LineChart, Series};

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let Some(s) = &app.system else {
        f.render_widget(
            Paragraph::new(Span::styled("sampling…", t.muted())).block(panel(app, "System")),
            area,
        );
        return;
    };
    let cores = s.cpus.len().max(1) as u16;
    let per_row = if area.width >= 120 { 4 } else { 2 };
    let core_rows = cores.div_ceil(per_row) + 3;
    let [cpu_area, hist_area, gpu_area] = Layout::vertical([
        Constraint::Length(core_rows.min(area.height / 2)),
        Constraint::Min(5),
        Constraint::Length(3),
    ])
    .areas(area);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let block = panel(
        app,
        format!("CPU {:.0}% · load {:.2} {:.2} {:.2}", s.cpu_total, s.load[0], s.load[1], s.load[2]),
    );
    let inner = block.inner(cpu_area);
    f.render_widget(block, cpu_area);
    let col_w = (inner.width / per_row).max(20) as usize;
    let bar_w = col_w.saturating_sub(13).max(4);
    let mut lines = Vec::new();
    for chunk in s.cpus.chunks(per_row as usize).enumerate() {
        let (row, cpus) = chunk;
        let mut spans = Vec::new();
        for (j, c) in cpus.iter().enumerate() {
            let idx = row * per_row as usize + j;
            spans.push(Span::styled(format!("{idx:>3} "), t.muted()));
            spans.push(Span::styled(
                bar(*c as f64 / 100.0, bar_w),
                if *c > 90.0 { t.warn() } else { t.info() },
            ));
            spans.push(Span::raw(format!(" {c:>4.0}%  ")));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(vec![
        Span::styled("mem ", t.muted()),
        Span::styled(bar(s.memory_used as f64 / s.memory_total.max(1) as f64, bar_w), t.info()),
        Span::raw(format!(" {:.1}/{:.1} GiB  ", gib(s.memory_used), gib(s.memory_total))),
        Span::styled("swap ", t.muted()),
        Span::raw(format!("{:.1}/{:.1} GiB", gib(s.swap_used), gib(s.swap_total))),
    ]));
    f.render_widget(Paragraph::new(lines), inner);

    let history: Vec<(f64, f64)> =
        app.system_history.iter().enumerate().map(|(i, s)| (i as f64, s.cpu_total as f64)).collect();
    let memory: Vec<(f64, f64)> = app
        .system_history
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64, 100.0 * s.memory_used as f64 / s.memory_total.max(1) as f64))
        .collect();
    let block = panel(app, format!("History (last {} s): CPU % and memory %", history.len()));
    let inner = block.inner(hist_area);
    f.render_widget(block, hist_area);
    let chart = LineChart {
        series: vec![
            Series {
                name: "cpu".into(),
                points: Cow::Owned(history),
                color: t.series(0),
                glyph: GLYPHS[0],
                faint: false,
            },
            Series {
                name: "mem".into(),
                points: Cow::Owned(memory),
                color: t.series(1),
                glyph: GLYPHS[1],
                faint: false,
            },
        ],
        x_window: None,
        log_y: false,
        y_range: Some((0.0, 100.0)),
        cursor: None,
        colored: t.colored(),
        axis_style: t.muted(),
        cursor_style: t.accent(),
    };
    f.render_widget(chart, inner);
    f.render_widget(
        Paragraph::new(Span::styled("no GPU found", t.muted())).block(panel(app, "GPU")),
        gpu_area,
    );
}
