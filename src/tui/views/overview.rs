//! Overview: the runs that are training (progress, loss, ETA), the live loss curve of the run
//! it follows (the one training) or the one pinned (`P`, or ↑↓ through the active runs), marked
//! `▶` in the list, and a strip with the machine's state and the model service's.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{bar, chart_caption, fit, fmt_duration, pane, panel, status_style};
use crate::tui::app::{App, ServerState, View};
use crate::tui::keymap::Action;
use crate::tui::state::screens::Shown;
use crate::tui::widgets::ids::short_ids;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    // `z`: the focused panel alone, on the whole body.
    match super::zoomed(app, View::Overview) {
        Some("Active runs") => return draw_active(f, app, area),
        Some("System") => return draw_strip(f, app, area),
        Some(_) => return draw_curve(f, app, area),
        None => {}
    }
    let active = app.active();
    let rows = (active.len().max(1) as u16 + 2).min(area.height / 3).max(3);
    let [top, middle, strip] =
        Layout::vertical([Constraint::Length(rows), Constraint::Min(6), Constraint::Length(3)]).areas(area);
    draw_active(f, app, top);
    draw_curve(f, app, middle);
    draw_strip(f, app, strip);
}

fn draw_active(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let active = app.active();
    let block = pane(app, View::Overview, "Active runs", format!("Active runs ({})", active.len()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if active.is_empty() {
        let recent = app.runs.values().max_by(|a, b| a.info.created.cmp(&b.info.created));
        let text = match recent {
            Some(r) => format!(
                "nothing training · {} starts a run · last: {} {} (test acc {})",
                app.keymap.hint(crate::tui::keymap::Action::NewRun),
                r.info.id,
                r.status(),
                r.info.test_accuracy.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a)),
            ),
            None => {
                format!("no runs yet · {} starts one", app.keymap.hint(crate::tui::keymap::Action::NewRun))
            }
        };
        let text = fit(&text, inner.width + 4);
        f.render_widget(Paragraph::new(Span::styled(text, t.muted())), inner);
        return;
    }
    let shown = app.overview.shown(app).map(|(r, _)| r.info.id.clone());
    let ids: Vec<&str> = active.iter().map(|r| r.info.id.as_str()).collect();
    let id_w = active.iter().map(|r| r.info.id.len()).max().unwrap_or(10).min(24);
    let labels = short_ids(&ids, id_w);
    let bar_w = (inner.width as usize).saturating_sub(id_w + 53).clamp(6, 40);
    let scroll = crate::tui::state::panes::scroll(app, View::Overview, "Active runs") as usize;
    let lines: Vec<Line> = active
        .iter()
        .zip(labels)
        .skip(scroll.min(active.len().saturating_sub(1)))
        .take(inner.height as usize)
        .map(|(r, label)| {
            let eta = r.eta().map_or("-".into(), fmt_duration);
            let loss = r.last_loss().map_or("-".into(), |l| format!("{l:.4}"));
            // The run the chart below shows is marked and highlighted (reversed without colour).
            let sel = shown.as_deref() == Some(r.info.id.as_str());
            let id_style = if sel { t.selected() } else { t.base() };
            Line::from(vec![
                Span::styled(if sel { "▶" } else { " " }, t.accent()),
                Span::styled(format!("{label:<id_w$} "), id_style),
                Span::styled(format!("{:<8} ", r.status()), status_style(app, r.status())),
                Span::styled(bar(r.progress(), bar_w), t.info()),
                Span::raw(format!(" {:>3.0}% ", 100.0 * r.progress())),
                Span::styled(format!("ep {}/{} ", r.info.epoch, r.info.epochs), t.muted()),
                Span::raw(format!("loss {loss} ")),
                Span::styled(format!("ETA {eta}"), t.muted()),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_curve(f: &mut Frame, app: &App, area: Rect) {
    // The pinned run, else the one training (followed), else the one selected in Runs.
    let Some((r, why)) = app.overview.shown(app) else {
        let block = panel(app, "Loss");
        f.render_widget(Paragraph::new("no run yet").block(block), area);
        return;
    };
    let pin = app.keymap.hint(Action::PinRun);
    let why = match why {
        Shown::Pinned => format!("pinned ({pin} unpins)"),
        Shown::Following => format!("following ({pin} pins)"),
        Shown::Selected => "selected".to_string(),
    };
    let title = fit(&format!("{} · {why} · {}", r.info.id, chart_caption(app)), area.width);
    super::draw_run_chart(f, app, r, pane(app, View::Overview, "Loss", title), area);
}

fn draw_strip(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let block = pane(app, View::Overview, "System", "System");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut spans = Vec::new();
    match &app.system {
        Some(s) => {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            // Bars only where there is room for them next to the service's state.
            let bar_w = if inner.width >= 110 { 10 } else { 0 };
            spans.push(Span::styled("CPU ", t.accent()));
            spans.push(Span::raw(format!("{:>3.0}% ", s.cpu_total)));
            spans.push(Span::styled(bar(s.cpu_total as f64 / 100.0, bar_w), t.info()));
            spans.push(Span::styled(" MEM ", t.accent()));
            spans.push(Span::raw(format!("{:.1}/{:.1}G ", gib(s.memory_used), gib(s.memory_total))));
            spans.push(Span::styled(
                bar(s.memory_used as f64 / s.memory_total.max(1) as f64, bar_w),
                t.info(),
            ));
            spans.push(Span::styled(" LOAD ", t.accent()));
            spans.push(Span::raw(format!("{:.2}", s.load[0])));
            spans.push(Span::styled(" GPU ", t.accent()));
            if s.gpus.is_empty() {
                spans.push(Span::styled("no GPU found", t.muted()));
            }
            for g in &s.gpus {
                spans.push(Span::raw(format!(
                    "{}:{}% {:.0}/{:.0}G ",
                    g.index,
                    g.utilization,
                    gib(g.memory_used),
                    gib(g.memory_total)
                )));
            }
        }
        None => spans.push(Span::styled("sampling…", t.muted())),
    }
    spans.push(Span::styled(" │ service ", t.accent()));
    let svc = &app.service;
    let busy = svc.snapshot.as_ref().filter(|s| s.requests > 0);
    match (&svc.server, busy) {
        (ServerState::Running { url, .. }, _) => {
            spans.push(Span::styled(url.trim_start_matches("http://").to_string(), t.ok()));
        }
        (ServerState::Starting(_), _) => spans.push(Span::styled("starting", t.warn())),
        (ServerState::Failed(_), _) => spans.push(Span::styled("failed", t.error())),
        // Started elsewhere (`vigil serve`): its log shows traffic.
        (ServerState::Stopped, Some(_)) => spans.push(Span::styled("log active", t.muted())),
        (ServerState::Stopped, None) => spans.push(Span::styled("not running", t.muted())),
    }
    if let Some(s) = busy {
        spans.push(Span::raw(format!(
            " {:.1}/s p99 {} err {:.1}%",
            s.requests_per_s,
            s.p99_ms.map_or("-".into(), |v| format!("{v:.1}ms")),
            100.0 * s.error_rate
        )));
    }
    // Wrapped, so that zoomed (`z`) at 80 columns the whole line shows.
    f.render_widget(Paragraph::new(Line::from(spans)).wrap(ratatui::widgets::Wrap { trim: true }), inner);
}
