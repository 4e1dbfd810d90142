//! Service: the model service seen through its access log. The top shows the server this
//! console started (or that none is; a service started by `vigil serve` elsewhere still shows
//! in the numbers), then the last minute's requests per second, p50/p99 latency, error rates and
//! status classes, the keys with their counts and budgets left, the alerts, and a tail of the
//! log with its filters. With a language model served, the numbers add completion tokens per
//! second and time to first token (p50/p99), the keys their tokens, and the tail each
//! completion's prompt and completion sizes. The tail follows new lines until you scroll back, and then stays on
//! the lines you are reading. Tab moves the focus between the panels (the focused one has an
//! accent border and scrolls), `z` zooms it; the keys panel (`ctrl-k`) and the try-it pane (`y`)
//! are drawn by [`super::keys`].

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::serve::monitor::AlertLevel;
use crate::tui::app::{App, ServerState, View};
use crate::tui::keymap::Action;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    draw_panels(f, app, area);
    if app.keys.open {
        super::keys::draw_panel(f, app, area);
    }
}

/// A panel's block, its border thick and in the accent colour when it has the focus.
fn block<'a>(app: &App, name: &str, title: impl Into<String>) -> ratatui::widgets::Block<'a> {
    super::pane(app, View::Service, name, title)
}

fn focused(app: &App) -> Option<&'static str> {
    crate::tui::state::panes::focused(app, View::Service)
}

/// The focused panel's own scroll (panels other than the access log).
fn scroll(app: &App, name: &str) -> (u16, u16) {
    if focused(app) == Some(name) { (app.panes.service.scroll, 0) } else { (0, 0) }
}

fn draw_panels(f: &mut Frame, app: &App, area: Rect) {
    // `z`: the focused panel alone, on the whole body.
    if app.panes.service.zoomed {
        match focused(app) {
            Some("Service") => return draw_numbers(f, app, area),
            Some("Keys & alerts") => {
                let [keys, alerts] =
                    Layout::horizontal([Constraint::Percentage(55), Constraint::Min(20)]).areas(area);
                draw_keys(f, app, keys);
                return draw_alerts(f, app, alerts);
            }
            Some("Try it") => return draw_try_it(f, app, area),
            _ => return draw_tail(f, app, area),
        }
    }
    let wide = area.width >= 120;
    let side = if wide { 8 } else { 6 };
    let [top, tail] = Layout::vertical([Constraint::Length(side), Constraint::Min(3)]).areas(area);
    if wide {
        let [numbers, keys, alerts] =
            Layout::horizontal([Constraint::Length(44), Constraint::Percentage(45), Constraint::Min(20)])
                .areas(top);
        draw_numbers(f, app, numbers);
        draw_keys(f, app, keys);
        draw_alerts(f, app, alerts);
    } else {
        let [numbers, keys] = Layout::horizontal([Constraint::Length(40), Constraint::Min(20)]).areas(top);
        draw_numbers(f, app, numbers);
        draw_keys_and_alerts(f, app, keys);
    }
    let (tail, try_it) = super::keys::split_for_try_it(app, tail);
    draw_tail(f, app, tail);
    if let Some(pane) = try_it {
        draw_try_it(f, app, pane);
    }
}

fn draw_try_it(f: &mut Frame, app: &App, area: Rect) {
    let lines = super::keys::try_it_lines(app);
    let p = Paragraph::new(lines)
        .wrap(ratatui::widgets::Wrap { trim: false })
        .scroll(scroll(app, "Try it"))
        .block(block(app, "Try it", "Try it · a request the service accepts"));
    f.render_widget(p, area);
}

/// The server line and the last minute's numbers.
fn draw_numbers(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let mut lines = vec![server_line(app)];
    lines.extend(health_line(app));
    match &app.service.snapshot {
        Some(s) if s.requests > 0 => {
            // Completions take seconds: those read as seconds, so the columns keep their width.
            let ms = |v: Option<f64>| match v {
                None => "-".into(),
                Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
                Some(v) => format!("{v:.2} ms"),
            };
            match &s.generation {
                // Generative traffic first: at 80x24 the panel shows four lines.
                Some(g) => {
                    lines.push(Line::from(vec![
                        Span::styled("req/s ", t.muted()),
                        Span::raw(format!("{:<7.1}", s.requests_per_s)),
                        Span::styled("tok/s ", t.muted()),
                        Span::raw(format!("{:<7.1}", g.tokens_per_s)),
                        Span::styled("gen ", t.muted()),
                        Span::raw(g.requests.to_string()),
                    ]));
                    lines.push(Line::from(vec![
                        Span::styled("TTFT p50 ", t.muted()),
                        Span::raw(format!("{:<10}", ms(g.ttft_p50_ms))),
                        Span::styled("p99 ", t.muted()),
                        Span::raw(ms(g.ttft_p99_ms)),
                    ]));
                }
                None => lines.push(Line::from(vec![
                    Span::styled("req/s ", t.muted()),
                    Span::raw(format!("{:<8.1}", s.requests_per_s)),
                    Span::styled("requests ", t.muted()),
                    Span::raw(s.requests.to_string()),
                ])),
            }
            lines.push(Line::from(vec![
                Span::styled("p50 ", t.muted()),
                Span::raw(format!("{:<10}", ms(s.p50_ms))),
                Span::styled("p99 ", t.muted()),
                Span::raw(ms(s.p99_ms)),
            ]));
            let err_style = if s.server_error_rate > 0.0 { t.error() } else { t.base() };
            lines.push(Line::from(vec![
                Span::styled("errors ", t.muted()),
                Span::styled(format!("{:.1}%", 100.0 * s.error_rate), err_style),
                Span::styled("  5xx ", t.muted()),
                Span::styled(format!("{:.1}%", 100.0 * s.server_error_rate), err_style),
            ]));
            let [_, c2, _, c4, c5] = s.status_classes;
            lines.push(Line::from(vec![
                Span::styled("2xx ", t.muted()),
                Span::styled(c2.to_string(), t.ok()),
                Span::styled("  4xx ", t.muted()),
                Span::styled(c4.to_string(), t.warn()),
                Span::styled("  5xx ", t.muted()),
                Span::styled(c5.to_string(), t.error()),
            ]));
        }
        Some(_) => lines.push(Line::from(Span::styled("no requests in the last minute", t.muted()))),
        None => lines.push(Line::from(Span::styled("reading the access log…", t.muted()))),
    }
    let window = app.service.snapshot.as_ref().map_or(60, |s| s.window_s);
    f.render_widget(
        Paragraph::new(lines).scroll(scroll(app, "Service")).block(block(
            app,
            "Service",
            format!("Service · last {window} s"),
        )),
        area,
    );
}

fn server_line(app: &App) -> Line<'static> {
    let t = &app.theme;
    let key = app.keymap.hint(Action::ToggleService);
    match &app.service.server {
        ServerState::Running { url, models, .. } => Line::from(vec![
            Span::styled("● ", t.ok()),
            Span::raw(url.clone()),
            Span::styled(format!(" {}", models.join(", ")), t.muted()),
        ]),
        ServerState::Starting(run) => Line::from(Span::styled(format!("starting for {run}…"), t.warn())),
        ServerState::Failed(reason) => Line::from(Span::styled(format!("failed: {reason}"), t.error())),
        ServerState::Stopped => {
            Line::from(Span::styled(format!("not started here ({key} on a run serves it)"), t.muted()))
        }
    }
}

/// The console's server's troubles, when it has any: an access log that cannot be written, and
/// what was turned away before routing.
fn health_line(app: &App) -> Option<Line<'static>> {
    let t = &app.theme;
    let h = app.service.health.as_ref()?;
    if h.log_error.is_some() {
        let doing = if h.log_fail_open {
            "serving unlogged".to_string()
        } else {
            format!("503 ({} refused)", h.log_refused)
        };
        return Some(Line::from(Span::styled(format!("log unwritable: {doing}"), t.error())));
    }
    (h.rejected + h.refused_connections > 0).then(|| {
        Line::from(vec![
            Span::styled("turned away ", t.muted()),
            Span::styled(format!("{} requests  {} conns", h.rejected, h.refused_connections), t.warn()),
        ])
    })
}

fn key_lines(app: &App, limit: usize) -> Vec<Line<'static>> {
    let t = &app.theme;
    let Some(s) = &app.service.snapshot else { return vec![] };
    if s.keys.is_empty() {
        return vec![Line::from(Span::styled("no keys have called yet", t.muted()))];
    }
    // With language-model traffic each key's tokens go beside its budget (tokens left, for a
    // key with a token budget), in columns narrow enough for the 80-column panel.
    let tokens = s.generation.is_some();
    let header = if tokens {
        format!("{:<9} {:>6} {:>4} {:>7} {:>8}", "key", "req", "err", "tokens", "left")
    } else {
        format!("{:<10} {:>8} {:>6} {:>8}", "key", "requests", "errors", "budget")
    };
    let mut lines = vec![Line::from(Span::styled(header, t.muted()))];
    // Keys an alert names first, then the ones with errors: at 80x24 what needs a look must
    // be among the rows shown.
    let mut keys: Vec<_> = s.keys.iter().collect();
    let alarmed = |name: &str| {
        s.alerts.iter().any(|a| {
            a.message.contains(&format!("key {name} ")) || a.message.contains(&format!("by {name} "))
        })
    };
    keys.sort_by_key(|k| (!alarmed(&k.name), std::cmp::Reverse(k.errors)));
    for k in keys.into_iter().take(limit) {
        let errors = if k.errors > 0 { t.warn() } else { t.base() };
        let left = k.budget_left.map_or("-".into(), |b| b.to_string());
        if tokens {
            lines.push(Line::from(vec![
                Span::raw(format!("{:<9} {:>6} ", truncate(&k.name, 9), k.requests)),
                Span::styled(format!("{:>4} ", k.errors), errors),
                Span::raw(format!("{:>7} {:>8}", k.tokens, left)),
            ]));
            continue;
        }
        lines.push(Line::from(vec![
            Span::raw(format!("{:<10} {:>8} ", truncate(&k.name, 10), k.requests)),
            Span::styled(format!("{:>6} ", k.errors), errors),
            Span::raw(format!("{:>8}", k.budget_left.map_or("-".into(), |b| b.to_string()))),
        ]));
    }
    lines
}

fn alert_lines(app: &App, limit: usize) -> Vec<Line<'static>> {
    let t = &app.theme;
    let Some(s) = &app.service.snapshot else { return vec![] };
    if s.alerts.is_empty() {
        return vec![Line::from(Span::styled("no alerts", t.muted()))];
    }
    s.alerts
        .iter()
        .take(limit)
        .map(|a| {
            let (mark, style) = match a.level {
                AlertLevel::Critical => ("!! ", t.error()),
                AlertLevel::Warning => ("!  ", t.warn()),
            };
            Line::from(vec![
                Span::styled(mark, style),
                Span::styled(format!("{} ", a.time.get(11..19).unwrap_or(&a.time)), t.muted()),
                Span::styled(a.message.clone(), style),
            ])
        })
        .collect()
}

fn draw_keys(f: &mut Frame, app: &App, area: Rect) {
    let lines = key_lines(app, usize::MAX);
    f.render_widget(
        Paragraph::new(lines).scroll(scroll(app, "Keys & alerts")).block(block(app, "Keys & alerts", "Keys")),
        area,
    );
}

fn draw_alerts(f: &mut Frame, app: &App, area: Rect) {
    let lines = alert_lines(app, area.height.saturating_sub(2) as usize);
    f.render_widget(Paragraph::new(lines).block(block(app, "Keys & alerts", "Alerts")), area);
}

/// At 80 columns keys and alerts share a panel: the newest alert first, since it needs action,
/// then every key when they fit (a second alert only when there is room left over).
fn draw_keys_and_alerts(f: &mut Frame, app: &App, area: Rect) {
    let room = area.height.saturating_sub(2) as usize;
    let (n_keys, n_alerts) = app.service.snapshot.as_ref().map_or((0, 0), |s| (s.keys.len(), s.alerts.len()));
    // Focused, the panel scrolls through every key; otherwise it shows what fits.
    let focused = focused(app) == Some("Keys & alerts");
    let alerts = if n_alerts == 0 { 0 } else { room.saturating_sub(n_keys.max(1) + 1).clamp(1, 2) };
    let mut lines = alert_lines(app, alerts);
    if n_alerts == 0 {
        lines.clear();
    }
    let key_room = if focused { usize::MAX } else { room.saturating_sub(lines.len() + 1) };
    lines.extend(key_lines(app, key_room));
    let hidden = if focused {
        0
    } else {
        lines.truncate(room);
        n_keys.saturating_sub(key_room)
    };
    let title =
        if hidden > 0 { format!("Keys & alerts · {hidden} more keys") } else { "Keys & alerts".into() };
    f.render_widget(
        Paragraph::new(lines).scroll(scroll(app, "Keys & alerts")).block(block(app, "Keys & alerts", title)),
        area,
    );
}

fn draw_tail(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let svc = &app.service;
    let visible = svc.visible();
    let height = area.height.saturating_sub(2) as usize;
    let total = visible.len();
    let end = total.saturating_sub(svc.scroll);
    let start = end.saturating_sub(height);
    let wide = area.width >= 120;
    let lines: Vec<Line> = visible[start..end]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let status = match r.status {
                200..=299 => t.ok(),
                400..=499 => t.warn(),
                _ => t.error(),
            };
            let route =
                r.model.as_deref().map_or_else(|| r.path.clone(), |m| format!("{} {m}", short_route(r)));
            let mut spans = vec![
                Span::styled(format!("{} ", r.time.get(11..19).unwrap_or(&r.time)), t.muted()),
                Span::styled(format!("{} ", r.status), status),
                Span::raw(format!("{:<10} ", truncate(r.key.as_deref().unwrap_or("-"), 10))),
                Span::raw(format!("{:<20} ", truncate(&route, 20))),
                Span::raw(format!("{:>8.2}ms ", r.latency_us as f64 / 1000.0)),
            ];
            if wide {
                spans.push(Span::styled(
                    format!("{:<16} ", truncate(r.client.as_deref().unwrap_or("-"), 16)),
                    t.muted(),
                ));
            }
            let answer = match (&r.error, &r.generation) {
                // A completion: prompt → completion tokens, and why it ended (a cancelled one's
                // error follows: the sizes say how far it got).
                (error, Some(g)) => {
                    let sizes = format!(
                        "{}→{} tok {}",
                        g.prompt_tokens,
                        g.completion_tokens,
                        g.finish_reason.as_deref().unwrap_or("")
                    );
                    match error {
                        Some(e) => Span::styled(format!("{sizes} · {e}"), t.warn()),
                        None => Span::raw(sizes),
                    }
                }
                (Some(e), None) => Span::styled(e.clone(), t.warn()),
                (None, None) => Span::raw(r.labels.join(",")),
            };
            spans.push(answer);
            if !r.flags.is_empty() {
                spans.push(Span::styled(format!(" [{}]", r.flags.join(",")), t.error()));
            }
            // Scrolled back, the newest line shown is the cursor that `enter` explains.
            if svc.scroll > 0 && start + i + 1 == end {
                Line::from(spans).style(t.selected())
            } else {
                Line::from(spans)
            }
        })
        .collect();
    let f_ = &svc.filter;
    let mut filters = Vec::new();
    if let Some(c) = f_.status_class {
        filters.push(format!("{c}xx"));
    }
    if let Some(k) = &f_.key {
        filters.push(format!("key={k}"));
    }
    if let Some(r) = &f_.route {
        filters.push(format!("route={r}"));
    }
    if f_.flagged_only {
        filters.push("flagged".into());
    }
    let filter = if filters.is_empty() { String::new() } else { format!(" · {}", filters.join(" ")) };
    let follow = if svc.scroll == 0 {
        "following".to_string()
    } else {
        format!(
            "{} back, {} follows, {} explains",
            svc.scroll,
            app.keymap.hint(Action::Bottom),
            app.keymap.hint(Action::Open)
        )
    };
    let body = if lines.is_empty() {
        let hint = format!(
            "no lines{} ({} status, {} key, {} route, {} flagged)",
            if filters.is_empty() { " yet" } else { " match" },
            app.keymap.hint(Action::ServiceStatusFilter),
            app.keymap.hint(Action::ServiceKeyFilter),
            app.keymap.hint(Action::ServiceRouteFilter),
            app.keymap.hint(Action::ServiceFlaggedOnly),
        );
        vec![Line::from(Span::styled(hint, t.muted()))]
    } else {
        lines
    };
    f.render_widget(
        Paragraph::new(body).block(block(
            app,
            "Access log",
            format!("Access log ({total}){filter} · {follow}"),
        )),
        area,
    );
}

/// `/v1/models/{name}/predict` → `predict`, `/v1/chat/completions` → `chat`: the model is
/// shown beside it.
fn short_route(r: &crate::serve::access_log::AccessRecord) -> String {
    match r.route.as_deref() {
        Some(crate::serve::routes::CHAT) => "chat".into(),
        Some(crate::serve::routes::COMPLETIONS) => "complete".into(),
        route => route.and_then(|p| p.rsplit('/').next()).unwrap_or(&r.path).to_string(),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
