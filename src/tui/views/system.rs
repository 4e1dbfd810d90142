//! System: per-core CPU bars, CPU and memory history, each GPU's utilisation, memory,
//! temperature, power and clocks with their history, and a table of the processes that train
//! runs (CPU, resident memory, GPU memory). Without a GPU the panel says why in a sentence. The
//! history charts include what earlier sessions recorded in the store (x: minutes before now).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{bar, panel};
use crate::engine::system::SystemSample;
use crate::tui::app::App;
use crate::tui::widgets::chart::{GLYPHS, LineChart, Series, YUnit};

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn size(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", gib(b))
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

fn rate(b: f64) -> String {
    if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB/s", b / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB/s", b / 1024.0)
    }
}

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let Some(s) = &app.system else {
        f.render_widget(
            Paragraph::new(Span::styled("sampling…", t.muted())).block(panel(app, "System")),
            area,
        );
        return;
    };
    let per_row: u16 = if area.width >= 120 { 4 } else { 2 };
    // `z`: the focused panel alone, on the whole body.
    if app.panes.system.zoomed {
        match focused(app) {
            Some("CPU") => return draw_cpu(f, app, s, per_row, area),
            Some("GPU") => return draw_gpus(f, app, s, area),
            Some("Run processes") => return draw_processes(f, app, s, area),
            _ => return draw_history(f, app, s, area),
        }
    }
    let cores = s.cpus.len().max(1) as u16;
    let cpu_h = (cores.div_ceil(per_row) + 4).min(area.height / 3);
    let gpu_h = if s.gpus.is_empty() { 3 } else { s.gpus.len() as u16 + 2 };
    let proc_h = (s.processes.len() as u16 + 3).clamp(4, 8);
    let [cpu_area, hist_area, gpu_area, proc_area] = Layout::vertical([
        Constraint::Length(cpu_h),
        Constraint::Min(5),
        Constraint::Length(gpu_h),
        Constraint::Length(proc_h),
    ])
    .areas(area);
    draw_cpu(f, app, s, per_row, cpu_area);
    draw_history(f, app, s, hist_area);
    draw_gpus(f, app, s, gpu_area);
    draw_processes(f, app, s, proc_area);
}

fn focused(app: &App) -> Option<&'static str> {
    crate::tui::state::panes::focused(app, crate::tui::app::View::System)
}

/// A panel's block, its border thick and in the accent colour when it has the focus.
fn block<'a>(app: &App, name: &str, title: impl Into<String>) -> ratatui::widgets::Block<'a> {
    super::pane(app, crate::tui::app::View::System, name, title)
}

/// Lines the panel is scrolled by: the focused panel scrolls.
fn scroll(app: &App, name: &str) -> u16 {
    if focused(app) == Some(name) { app.panes.system.scroll } else { 0 }
}

fn draw_cpu(f: &mut Frame, app: &App, s: &SystemSample, per_row: u16, area: Rect) {
    let t = &app.theme;
    let title = format!("CPU {:.0}% · load {:.2} {:.2} {:.2}", s.cpu_total, s.load[0], s.load[1], s.load[2]);
    let block = block(app, "CPU", title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let col_w = (inner.width / per_row).max(20) as usize;
    let bar_w = col_w.saturating_sub(13).max(4);
    let mut lines = Vec::new();
    for (row, cpus) in s.cpus.chunks(per_row as usize).enumerate() {
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
    lines.push(Line::from(vec![
        Span::styled("disk ", t.muted()),
        Span::raw(format!("r {} w {}  ", rate(s.disk_read_bps), rate(s.disk_write_bps))),
        Span::styled("net ", t.muted()),
        Span::raw(format!("rx {} tx {}", rate(s.net_rx_bps), rate(s.net_tx_bps))),
    ]));
    // Many cores do not fit at 80x24: focused, the panel scrolls through them.
    f.render_widget(Paragraph::new(lines).scroll((scroll(app, "CPU"), 0)), inner);
}

fn percent_chart<'a>(app: &App, series: Vec<(String, Vec<(f64, f64)>)>) -> LineChart<'a> {
    let t = &app.theme;
    let series = series
        .into_iter()
        .enumerate()
        .map(|(i, (name, points))| Series::new(name, points, t.series(i), GLYPHS[i % GLYPHS.len()]))
        .collect();
    super::themed(app, series).y_range(0.0, 100.0).y_unit(YUnit::Percent).x_unit("s")
}

fn legend(app: &App, names: &[String]) -> Line<'static> {
    let t = &app.theme;
    let mut spans = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let style = if t.colored() { ratatui::style::Style::default().fg(t.series(i)) } else { t.accent() };
        spans.push(Span::styled(
            format!("{} ", if t.colored() { '━' } else { GLYPHS[i % GLYPHS.len()] }),
            style,
        ));
        spans.push(Span::raw(format!("{n}  ")));
    }
    Line::from(spans)
}

fn draw_history(f: &mut Frame, app: &App, s: &SystemSample, area: Rect) {
    let hist = &app.system_points;
    let (host, gpu) = crate::tui::state::chart::system_series(app, s);
    let areas: Vec<Rect> = if gpu.is_empty() {
        vec![area]
    } else {
        Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).split(area).to_vec()
    };
    // The stored history makes the span hours after a restart; x is the time before now.
    let span = super::fmt_duration(hist.span_s());
    let kept = if hist.past.is_empty() { "" } else { ", stored" };
    for (k, (title, data)) in [("Host", host), ("GPUs", gpu)].into_iter().enumerate() {
        if data.is_empty() || k >= areas.len() {
            continue;
        }
        let block = block(app, "History", format!("{title} · last {span}{kept} · x: {}", hist.unit().0));
        let inner = block.inner(areas[k]);
        f.render_widget(block, areas[k]);
        let [chart_area, legend_area] =
            Layout::vertical([Constraint::Min(2), Constraint::Length(1)]).areas(inner);
        let names: Vec<String> = data.iter().map(|(n, _)| n.clone()).collect();
        // At least the last minute on the axis, so the first samples do not stretch across it.
        let from = -(hist.span_s().max(60.0) / hist.unit().1);
        f.render_widget(percent_chart(app, data).x_window(Some((from, 0.0))), chart_area);
        f.render_widget(Paragraph::new(legend(app, &names)), legend_area);
    }
}

fn draw_gpus(f: &mut Frame, app: &App, s: &SystemSample, area: Rect) {
    let t = &app.theme;
    if s.gpus.is_empty() {
        // The sampler's note is a whole sentence (what is missing, why, what it means): shown as is.
        let note = s.gpu_note.as_deref().unwrap_or("no GPU found: GPU readings off");
        let line = Line::from(Span::styled(note.to_string(), t.muted()));
        f.render_widget(
            Paragraph::new(line).wrap(ratatui::widgets::Wrap { trim: true }).block(block(app, "GPU", "GPU")),
            area,
        );
        return;
    }
    let block = block(app, "GPU", format!("GPUs ({})", s.gpus.len()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let wide = inner.width >= 120;
    let bar_w = if wide { 12 } else { 6 };
    let lines: Vec<Line> = s
        .gpus
        .iter()
        .map(|g| {
            let mem = g.memory_used as f64 / g.memory_total.max(1) as f64;
            let mut spans = vec![
                Span::styled(format!("{} ", g.index), t.accent()),
                Span::raw(format!(
                    "{:<w$} ",
                    g.name.chars().take(if wide { 24 } else { 10 }).collect::<String>(),
                    w = if wide { 24 } else { 10 }
                )),
                Span::styled(
                    bar(g.utilization as f64 / 100.0, bar_w),
                    if g.utilization > 90 { t.warn() } else { t.info() },
                ),
                Span::raw(format!(" {:>3}% ", g.utilization)),
                Span::styled(bar(mem, bar_w), t.info()),
                Span::raw(format!(" {:.1}/{:.0}G ", gib(g.memory_used), gib(g.memory_total))),
                Span::raw(g.temperature.map_or("  -  ".into(), |c| format!("{c:>3}°C "))),
                Span::raw(match (g.power_watts, g.power_limit_watts) {
                    (Some(p), Some(l)) => format!("{p:>4.0}/{l:.0}W"),
                    (Some(p), None) => format!("{p:>4.0}W"),
                    _ => "   -W".into(),
                }),
            ];
            if wide {
                spans.push(Span::styled(
                    format!(
                        "  sm {} MHz  mem {} MHz  {} procs",
                        g.sm_clock_mhz.map_or("-".into(), |c| c.to_string()),
                        g.memory_clock_mhz.map_or("-".into(), |c| c.to_string()),
                        g.processes.len()
                    ),
                    t.muted(),
                ));
            }
            Line::from(spans)
        })
        .collect();
    f.render_widget(Paragraph::new(lines).scroll((scroll(app, "GPU"), 0)), inner);
}

fn draw_processes(f: &mut Frame, app: &App, s: &SystemSample, area: Rect) {
    let t = &app.theme;
    let total_gpu: u64 = s.gpus.iter().map(|g| g.memory_used).sum();
    let header = Row::new(
        ["pid", "cpu", "memory", "gpu mem", "gpu share", "runs"]
            .map(|h| Cell::from(Span::styled(h, t.muted()))),
    );
    let rows = s.processes.iter().skip(scroll(app, "Run processes") as usize).map(|p| {
        let share = if total_gpu > 0 {
            format!("{:.0}%", 100.0 * p.gpu_memory as f64 / total_gpu as f64)
        } else {
            "-".into()
        };
        Row::new(vec![
            Cell::from(p.pid.to_string()),
            Cell::from(format!("{:.0}%", p.cpu)),
            Cell::from(size(p.rss)),
            Cell::from(if p.gpu_memory > 0 { size(p.gpu_memory) } else { "-".into() }),
            Cell::from(share),
            Cell::from(p.runs.join(", ")),
        ])
    });
    let title = if s.processes.is_empty() {
        "Run processes: none training".to_string()
    } else {
        format!("Run processes ({})", s.processes.len())
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(block(app, "Run processes", title));
    f.render_widget(table, area);
}
