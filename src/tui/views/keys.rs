//! The Service view's additions: the API keys panel (`ctrl-k`: the list with each key's prefix,
//! scopes, status and limits; the create form; the new key shown once; the revoke question),
//! drawn over the view, and the try-it pane (`y`: a ready `curl` line and the sample body).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::panel;
use crate::serve::keys::rate_text;
use crate::tui::app::{App, ServerState};
use crate::tui::keymap::Action;
use crate::tui::state::keys::status_word;

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// The keys panel, over the view.
pub fn draw_panel(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let s = &app.keys;
    let r = centered(area, area.width.saturating_sub(4).min(110), area.height.saturating_sub(2));
    f.render_widget(Clear, r);
    let mut lines: Vec<Line> = Vec::new();
    if let Some((name, key)) = &s.secret {
        lines.push(Line::from(Span::styled(format!("New key {name:?}: copy it now."), t.ok())));
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(key.clone(), t.accent())));
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            "Vigil keeps only its hash: this is the only time it is shown. Callers send it as \
             `Authorization: Bearer <key>`; `export VIGIL_KEY=<key>` makes the try-it pane's curl line work.",
            t.muted(),
        )));
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("any key: done (the key is forgotten)", t.muted())));
        let p = Paragraph::new(lines).wrap(Wrap { trim: false }).block(panel(app, "API key created"));
        f.render_widget(p.style(t.base()), r);
        return;
    }
    if let Some(form) = &s.form {
        for (i, fld) in form.fields.iter().enumerate() {
            let style = if form.focus == i { t.selected() } else { t.base() };
            let cursor = if form.focus == i { "█" } else { "" };
            lines.push(Line::from(vec![
                Span::styled(format!("{:>10}: ", fld.label), t.muted()),
                Span::styled(format!("{}{cursor}", fld.value), style),
                Span::styled(format!("  {}", fld.hint), t.muted()),
            ]));
        }
        lines.push(Line::from(""));
        if let Some(e) = &form.error {
            lines.push(Line::from(Span::styled(e.clone(), t.error())));
        }
        lines.push(Line::from(Span::styled(
            "↑↓/Tab field · Enter on the last field or ctrl-s creates · Esc cancels",
            t.muted(),
        )));
        let p = Paragraph::new(lines).wrap(Wrap { trim: false }).block(panel(app, "New API key"));
        f.render_widget(p.style(t.base()), r);
        return;
    }
    let wide = r.width >= 100;
    lines.push(Line::from(Span::styled(
        if wide {
            format!(
                "{:<16} {:<14} {:<17} {:<8} {:<20} {:<14} {}",
                "name", "prefix", "scopes", "status", "rate", "budget", "expires"
            )
        } else {
            format!("{:<14} {:<13} {:<15} {:<8} {}", "name", "prefix", "scopes", "status", "rate")
        },
        t.muted(),
    )));
    for (i, k) in s.keys.iter().enumerate() {
        let status = status_word(k);
        let prefix = k.prefix.as_deref().map_or("-".to_string(), |p| format!("{p}…"));
        let text = if wide {
            format!(
                "{:<16} {:<14} {:<17} {:<8} {:<20} {:<14} {}",
                cut(&k.name, 16),
                prefix,
                k.scope_list(),
                status,
                rate_text(k.rate),
                k.budget.map_or("none".into(), |b| b.to_string()),
                k.expires.as_deref().map_or("never", |e| e.get(..10).unwrap_or(e))
            )
        } else {
            format!(
                "{:<14} {:<13} {:<15} {:<8} {}",
                cut(&k.name, 14),
                prefix,
                k.scope_list(),
                status,
                rate_text(k.rate)
            )
        };
        let style = match (i == s.cursor, status) {
            (true, _) => t.selected(),
            (false, "active") => t.base(),
            _ => t.muted(),
        };
        lines.push(Line::from(Span::styled(text, style)));
    }
    if s.keys.is_empty() && s.error.is_none() {
        lines.push(Line::from(Span::styled("no keys yet: n creates one", t.muted())));
    }
    if let Some(e) = &s.error {
        lines.push(Line::from(Span::styled(e.clone(), t.error())));
    }
    lines.push(Line::from(""));
    if let Some(name) = &s.confirm_revoke {
        lines.push(Line::from(Span::styled(
            format!("Revoke {name:?}? Callers with it are refused within a second. y: revoke · any other key: keep"),
            t.warn(),
        )));
    } else {
        lines.push(Line::from(Span::styled(
            "↑↓ pick · n new · d revoke · r reload · Esc closes   (the same key file as `vigil keys`)",
            t.muted(),
        )));
    }
    // The cursor's row stays in view.
    let room = r.height.saturating_sub(5) as usize;
    let scroll = s.cursor.saturating_sub(room.saturating_sub(1)) as u16;
    let title = format!("API keys ({})", s.keys.len());
    f.render_widget(Paragraph::new(lines).scroll((scroll, 0)).block(panel(app, title)).style(t.base()), r);
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The try-it pane's lines.
pub fn try_it_lines(app: &App) -> Vec<Line<'static>> {
    let t = &app.theme;
    let ti = &app.keys.try_it;
    let serve = app.keymap.hint(Action::ToggleService);
    let keys = app.keymap.hint(Action::ManageKeys);
    match (&app.service.server, &ti.sample, &ti.error) {
        (ServerState::Running { .. }, Some(s), _) => {
            let mut lines = vec![
                Line::from(Span::styled(format!("POST {}", s.route()), t.accent())),
                Line::from(Span::raw(s.curl())),
                Line::from(Span::styled(
                    format!("body: {} · key: {keys} makes one, then export VIGIL_KEY=…", s.about),
                    t.muted(),
                )),
            ];
            lines.push(Line::from(Span::styled(s.body.clone(), t.muted())));
            lines
        }
        (ServerState::Running { .. }, None, Some(e)) => {
            vec![Line::from(Span::styled(format!("no sample: {e}"), t.error()))]
        }
        (ServerState::Running { .. }, None, None) => {
            vec![Line::from(Span::styled("making a sample request…", t.muted()))]
        }
        _ => vec![Line::from(Span::styled(
            format!(
                "nothing served from this console: {serve} on a run serves it, then y shows a ready request"
            ),
            t.muted(),
        ))],
    }
}

/// Splits the access log's area for the try-it pane when it is on.
pub fn split_for_try_it(app: &App, area: Rect) -> (Rect, Option<Rect>) {
    if !app.keys.try_it.on {
        return (area, None);
    }
    let h = if area.height >= 16 { 8 } else { 6 };
    let [tail, pane] = Layout::vertical([Constraint::Min(3), Constraint::Length(h)]).areas(area);
    (tail, Some(pane))
}
