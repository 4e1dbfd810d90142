//! Run detail: the curves (with smoothing, log scale, x axis, zoom and a cursor readout), the
//! evaluation (confusion matrix with the mistakes shaded, per-class precision/recall/F1) and the
//! hyperparameters and checkpoints. Wide terminals show the parameters beside the curves.

use bytesize::ByteSize;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{chart_caption, fit, fmt_duration, pane, panel, status_style};
use crate::ml::metrics::Evaluation;
use crate::tui::app::{App, DetailTab, RunState, View};
use crate::tui::state::panes;
use crate::tui::widgets::ids::short_id;

/// The characters of the heatmap without colour, from empty to full.
pub const ASCII_RAMP: &[char] = &[' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let Some(r) = app.selected() else {
        f.render_widget(
            Paragraph::new("no run selected: pick one in the runs view (2)").block(panel(app, "Detail")),
            area,
        );
        return;
    };
    // `z`: the tab's focused panel alone, on the whole body (the header and tabs too).
    if let Some(name) = super::zoomed(app, View::Detail) {
        return match app.detail.tab {
            DetailTab::Curves => draw_curves(f, app, r, area),
            DetailTab::Evaluation => draw_evaluation(f, app, r, area, Some(name)),
            DetailTab::Params => draw_params(f, app, r, area, Some(name)),
        };
    }
    let [head, tabs, body] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Min(0)]).areas(area);
    draw_head(f, app, r, head);
    draw_tabs(f, app, tabs);
    match app.detail.tab {
        DetailTab::Curves => {
            if body.width >= 130 {
                let [left, right] =
                    Layout::horizontal([Constraint::Min(60), Constraint::Length(44)]).areas(body);
                draw_curves(f, app, r, left);
                draw_params(f, app, r, right, None);
            } else {
                draw_curves(f, app, r, body);
            }
        }
        DetailTab::Evaluation => draw_evaluation(f, app, r, body, None),
        DetailTab::Params => draw_params(f, app, r, body, None),
    }
}

fn draw_head(f: &mut Frame, app: &App, r: &RunState, area: Rect) {
    f.render_widget(Paragraph::new(head_line(app, r, area.width)), area);
}

/// The header: the run, its status and the figures that matter, most important first. What
/// does not fit is left out from the least important (throughput, duration, step, best
/// validation), so at 80 columns the test accuracy, a private run's ε and the
/// membership-inference figure stay; the id is cut to its unique part last.
pub fn head_line(app: &App, r: &RunState, width: u16) -> Line<'static> {
    let t = &app.theme;
    let i = &r.info;
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
    // (priority: lower stays longer, label, value)
    let mut items: Vec<(u8, &str, String)> = Vec::new();
    items.push((1, "test ", pct(i.test_accuracy)));
    // A private run's guarantee belongs beside its accuracy: the two are the trade-off.
    if let Some(d) = &i.dp {
        items.push((1, "DP ε ", format!("{:.2} (δ {:.0e})", d.epsilon, d.delta)));
    }
    if let Some(a) = i.membership_advantage {
        items.push((1, "MI adv ", format!("{a:.3}")));
    }
    items.insert(0, (2, "epoch ", format!("{}/{}", i.epoch, i.epochs)));
    items.insert(1, (4, "step ", i.step.to_string()));
    items.insert(2, (3, "best val ", pct(i.best_val_accuracy)));
    items.push((5, "", fmt_duration(i.duration_s)));
    // Beside the status: what Slurm says of the job training it, while it has a say.
    if let Some(j) = r.job.as_ref().filter(|j| !j.is_terminal()) {
        items.insert(0, (1, "slurm ", j.describe()));
    }
    if let Some(s) = i.samples_per_sec {
        items.push((6, "", format!("{s:.0} samples/s")));
    }
    let status = r.status().to_string();
    let len = |items: &[(u8, &str, String)], id: usize| {
        id + 2
            + status.chars().count()
            + items.iter().map(|(_, l, v)| 2 + l.chars().count() + v.chars().count()).sum::<usize>()
    };
    let width = width as usize;
    let id_len = i.id.chars().count();
    while len(&items, id_len) > width {
        let Some(worst) = items.iter().map(|(p, _, _)| *p).max().filter(|p| *p > 1) else { break };
        let at = items.iter().rposition(|(p, _, _)| *p == worst).expect("an item of that priority");
        items.remove(at);
    }
    let id_room = width.saturating_sub(len(&items, 0)).max(8);
    let id = if id_len > id_room { short_id(&i.id, &[], id_room) } else { i.id.to_string() };
    let mut spans = vec![
        Span::styled(format!(" {id} "), t.accent()),
        Span::styled(status, status_style(app, r.status())),
    ];
    for (_, label, value) in items {
        spans.push(Span::styled(format!("  {label}"), t.muted()));
        spans.push(Span::raw(value));
    }
    Line::from(spans)
}

fn draw_tabs(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let mut spans = vec![Span::raw(" ")];
    for (tab, name) in [
        (DetailTab::Curves, "Curves"),
        (DetailTab::Evaluation, "Evaluation"),
        (DetailTab::Params, "Parameters & checkpoints"),
    ] {
        let style = if app.detail.tab == tab { t.selected() } else { t.muted() };
        spans.push(Span::styled(format!(" {name} "), style));
        spans.push(Span::raw(" "));
    }
    spans.push(Span::styled(
        format!("({} next)", app.keymap.hint(crate::tui::keymap::Action::NextTab)),
        t.muted(),
    ));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_curves(f: &mut Frame, app: &App, r: &RunState, area: Rect) {
    // A run that ended badly says why above its curves (which may be empty: "no data yet" is
    // not the answer to "why did it fail").
    let Some(reason) = super::runs::ended_badly(r) else {
        super::draw_run_chart(f, app, r, panel(app, chart_caption(app)), area);
        return;
    };
    let lines = (reason.chars().count() as u16).div_ceil(area.width.saturating_sub(2).max(1)).clamp(1, 3);
    let [why, chart] = Layout::vertical([Constraint::Length(lines + 2), Constraint::Min(0)]).areas(area);
    f.render_widget(
        Paragraph::new(Span::styled(reason, app.theme.error()))
            .wrap(ratatui::widgets::Wrap { trim: true })
            .block(panel(app, r.status().label())),
        why,
    );
    super::draw_run_chart(f, app, r, panel(app, chart_caption(app)), chart);
}

/// The evaluation shown: the newest asked for with `e`, else the final test evaluation.
fn evaluation(r: &RunState) -> Option<(&Evaluation, String)> {
    if let Some((which, e)) = r.evaluations.last() {
        let w = if *which == crate::store::CheckpointKind::Best { "best" } else { "last" };
        return Some((e, format!("{w} checkpoint on {} (evaluated now)", e.split)));
    }
    r.evaluation.as_ref().map(|e| (e, format!("best checkpoint on {}", e.split)))
}

/// The evaluation tab: the confusion matrix and the per-class table; `only` one of them, zoomed.
fn draw_evaluation(f: &mut Frame, app: &App, r: &RunState, area: Rect, only: Option<&str>) {
    let t = &app.theme;
    let Some((e, what)) = evaluation(r) else {
        let msg = if r.is_active() {
            "the test evaluation appears when training ends; e evaluates a checkpoint now"
        } else {
            "no evaluation yet: e evaluates the best checkpoint on the test split"
        };
        f.render_widget(Paragraph::new(Span::styled(msg, t.muted())).block(panel(app, "Evaluation")), area);
        return;
    };
    let k = e.classes.len();
    let label_w = e.classes.iter().map(|c| c.chars().count()).max().unwrap_or(1).min(10) as u16;
    // A cell holds the largest count and, without colour, the ramp character before it.
    let digits = e.confusion_matrix.iter().flatten().max().map_or(1, |n| n.to_string().len()) as u16;
    let cell_w = digits + 2;
    let matrix_w = label_w + 1 + cell_w * k as u16 + 2;
    let [left, right] = Layout::horizontal([
        Constraint::Length(matrix_w.max(20).min(area.width.saturating_sub(30))),
        Constraint::Min(30),
    ])
    .areas(area);
    let (left, right) = match only {
        Some("Confusion") => (area, Rect::default()),
        Some(_) => (Rect::default(), area),
        None => (left, right),
    };
    let v = View::Detail;
    // Confusion matrix: rows are true classes, columns predictions. The mistakes (off the
    // diagonal) are shaded against the most frequent mistake, so they stand out; the diagonal
    // (the right answers, nearly every count) is bold and unshaded.
    let max_off = e
        .confusion_matrix
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row.iter().enumerate().filter(move |(j, _)| *j != i).map(|(_, n)| *n))
        .max()
        .unwrap_or(0)
        .max(1);
    let block = pane(app, v, "Confusion", fit("Confusion (true ↓ / predicted →)", left.width));
    let inner = block.inner(left);
    f.render_widget(block, left);
    let mut lines = Vec::new();
    let mut head = vec![Span::raw(" ".repeat(label_w as usize + 1))];
    for c in &e.classes {
        let s: String = c.chars().take(cell_w as usize - 1).collect();
        head.push(Span::styled(format!("{s:>w$}", w = cell_w as usize), t.muted()));
    }
    lines.push(Line::from(head));
    let d = digits as usize;
    for (i, row) in e.confusion_matrix.iter().enumerate() {
        let mut spans = vec![Span::styled(
            format!(
                "{:>w$} ",
                e.classes[i].chars().take(label_w as usize).collect::<String>(),
                w = label_w as usize
            ),
            t.muted(),
        )];
        for (j, &n) in row.iter().enumerate() {
            // A mistake's share of the most frequent mistake; any mistake at least a little.
            let share = if n == 0 { 0.0 } else { 0.2 + 0.8 * n as f64 / max_off as f64 };
            let (text, style) = if i == j {
                let style = if app.theme.colored() { t.ok() } else { Style::default() };
                (format!("  {n:>d$}"), style.add_modifier(Modifier::BOLD))
            } else if app.theme.colored() {
                let bg = app.theme.heat(share);
                let fg = if share > 0.5 { Color::Black } else { app.theme.fg };
                (format!("  {n:>d$}"), Style::default().bg(bg).fg(fg))
            } else {
                let ramp = ASCII_RAMP
                    [((share * (ASCII_RAMP.len() - 1) as f64).round() as usize).min(ASCII_RAMP.len() - 1)];
                (format!(" {ramp}{n:>d$}"), Style::default())
            };
            spans.push(Span::styled(text, style));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(Span::styled(
        if app.theme.colored() {
            "shade: mistakes, against the most frequent one"
        } else {
            "ramp ' .:-=+*#%@': mistakes against the most frequent one; the diagonal is bold"
        },
        t.muted(),
    )));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .scroll((panes::scroll(app, v, "Confusion"), 0)),
        inner,
    );

    let wide = right.width >= 50;
    let names: [&str; 5] = if wide {
        ["class", "precision", "recall", "f1", "support"]
    } else {
        ["class", "prec", "recall", "f1", "n"]
    };
    let header = Row::new(names.map(|h| Cell::from(Span::styled(h, t.muted()))));
    // Narrow columns show three decimals rather than cutting off the fourth.
    let num = |v: f64| if wide { format!("{v:.4}") } else { format!("{v:.3}") };
    let mut rows: Vec<Row> = e
        .per_class
        .iter()
        .map(|c| {
            let style = if c.f1 < 0.9 { t.warn() } else { t.base() };
            Row::new(vec![
                Cell::from(c.class.clone()),
                Cell::from(num(c.precision)),
                Cell::from(num(c.recall)),
                Cell::from(Span::styled(num(c.f1), style)),
                Cell::from(c.support.to_string()),
            ])
        })
        .collect();
    rows.push(Row::new(vec![
        Cell::from(Span::styled("macro", t.accent())),
        Cell::from(num(e.macro_precision)),
        Cell::from(num(e.macro_recall)),
        Cell::from(num(e.macro_f1)),
        Cell::from(e.samples.to_string()),
    ]));
    let rows: Vec<Row> = rows.into_iter().skip(panes::scroll(app, v, "Per class") as usize).collect();
    let title = format!("acc {:.2}% · weighted F1 {:.4} · {what}", 100.0 * e.accuracy, e.weighted_f1);
    let widths = if wide {
        [
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
        ]
    } else {
        [
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(4),
        ]
    };
    let table =
        Table::new(rows, widths).header(header).block(pane(app, v, "Per class", fit(&title, right.width)));
    f.render_widget(table, right);
}

/// The parameters tab: hyperparameters, checkpoints and variants; `only` one of them, zoomed.
fn draw_params(f: &mut Frame, app: &App, r: &RunState, area: Rect, only: Option<&str>) {
    let t = &app.theme;
    let n_ckpt = r.checkpoints.len() as u16;
    let n_var = if r.variants.is_empty() { 0 } else { r.variants.len() as u16 + 4 };
    let ckpt_h = (n_ckpt + 3).min(area.height / 3);
    // Variants are what an operator compares here: they get the room the hyperparameters
    // (which scroll) can spare.
    let [params_area, ckpt_area, var_area] = Layout::vertical([
        Constraint::Min(4),
        Constraint::Length(ckpt_h),
        Constraint::Length(n_var.min(area.height.saturating_sub(ckpt_h + 4))),
    ])
    .areas(area);
    let none = Rect::default();
    let (params_area, ckpt_area, var_area) = match only {
        Some("Parameters") => (area, none, none),
        Some("Checkpoints") => (none, area, none),
        Some(_) => (none, none, area),
        None => (params_area, ckpt_area, var_area),
    };
    let v = View::Detail;
    draw_variants(f, app, r, var_area);
    // Two columns when there is room, and PgUp/PgDn scroll what does not fit.
    // The user's tags and note (`T`, `I`) head the list: they say what the run was for.
    let notes =
        [("tags", (!r.notes.tags.is_empty()).then(|| r.notes.tag_line())), ("note", r.notes.note.clone())];
    let items: Vec<Line> = notes
        .into_iter()
        .filter_map(|(k, v)| Some(Line::from(vec![Span::styled(format!("{k} "), t.info()), Span::raw(v?)])))
        .chain(
            r.params.iter().map(|(k, v)| {
                Line::from(vec![Span::styled(format!("{k} "), t.muted()), Span::raw(v.clone())])
            }),
        )
        .collect();
    let rows = params_area.height.saturating_sub(2) as usize;
    let columns = if params_area.width >= 110 { 2 } else { 1 };
    let per_page = (rows * columns).max(1);
    let scroll = app.detail.params_scroll.min(items.len().saturating_sub(per_page));
    let shown = &items[scroll..(scroll + per_page).min(items.len())];
    let title = if items.len() > per_page {
        format!("Hyperparameters {}-{} of {} (pgup/pgdn)", scroll + 1, scroll + shown.len(), items.len())
    } else {
        "Hyperparameters".to_string()
    };
    let block = pane(app, v, "Parameters", title);
    let inner = block.inner(params_area);
    f.render_widget(block, params_area);
    let cols = Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns]).split(inner);
    for (c, chunk) in shown.chunks(rows.max(1)).enumerate().take(columns) {
        f.render_widget(Paragraph::new(chunk.to_vec()), cols[c]);
    }
    let header = Row::new(
        ["kind", "epoch", "val loss", "val acc", "sha256"].map(|h| Cell::from(Span::styled(h, t.muted()))),
    );
    let rows = r.checkpoints.iter().skip(panes::scroll(app, v, "Checkpoints") as usize).map(|c| {
        Row::new(vec![
            Cell::from(c.kind.as_str()),
            Cell::from(c.epoch.to_string()),
            Cell::from(format!("{:.4}", c.val_loss)),
            Cell::from(format!("{:.2}%", 100.0 * c.val_accuracy)),
            Cell::from(c.sha256.get(..12).unwrap_or("").to_string()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Min(6),
        ],
    )
    .header(header)
    .block(pane(app, v, "Checkpoints", "Checkpoints"));
    f.render_widget(table, ckpt_area);
}

/// The run's variants (`vigil optimize`) side by side with the original: size, accuracy and
/// speed, each as the variant's report measured them.
fn draw_variants(f: &mut Frame, app: &App, r: &RunState, area: Rect) {
    if r.variants.is_empty() || area.height < 3 {
        return;
    }
    let t = &app.theme;
    let header = Row::new(
        ["variant", "file", "smaller", "test acc", "change", "agree", "1 input"]
            .map(|h| Cell::from(Span::styled(h, t.muted()))),
    );
    let base = &r.variants[0].original;
    let mut rows = vec![Row::new(vec![
        Cell::from(Span::styled("f32 (best)", t.muted())),
        Cell::from(ByteSize(base.disk_bytes).display().iec_short().to_string()),
        Cell::from(""),
        Cell::from(format!("{:.2}%", 100.0 * base.test_accuracy)),
        Cell::from(""),
        Cell::from(""),
        Cell::from(format!("{:.3}ms", base.latency_ms)),
    ])];
    rows.extend(r.variants.iter().map(|v| {
        let m = &v.measured;
        let delta = v.accuracy_delta_points();
        let slower = m.latency_ms > v.original.latency_ms * 1.05;
        Row::new(vec![
            Cell::from(v.variant.clone()),
            Cell::from(ByteSize(m.disk_bytes).display().iec_short().to_string()),
            // A frozen encoder's original file holds only its head (the encoder is read from its
            // folder), so the files do not compare: the dense weights do.
            Cell::from(match v.frozen_encoder {
                Some(_) => format!("{:.1}x wt", v.weight_ratio()),
                None => format!("{:.1}x", v.original.disk_bytes as f64 / m.disk_bytes.max(1) as f64),
            }),
            Cell::from(format!("{:.2}%", 100.0 * m.test_accuracy)),
            Cell::from(Span::styled(format!("{delta:+.2}"), if delta < -1.0 { t.warn() } else { t.base() })),
            Cell::from(format!("{:.1}%", 100.0 * v.agreement)),
            Cell::from(Span::styled(
                format!("{:.3}ms", m.latency_ms),
                if slower { t.warn() } else { t.base() },
            )),
        ])
    }));
    let table = Table::new(
        rows,
        [
            Constraint::Min(10),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .block(pane(app, View::Detail, "Variants", "Variants (vigil optimize)"));
    f.render_widget(table, area);
}
