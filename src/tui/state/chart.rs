//! The charts' state (metric, smoothing, scale, x axis, zoom window, readout cursor), the
//! series a run has for a metric, and the chart keys, which work in every view that draws a run's
//! curves. Drawing is `views/`' business; nothing here imports it.

use std::borrow::Cow;

use super::{App, Binding, Effect, View};
use crate::engine::system::SystemSample;
use crate::external::{ExternalRun, TagKind, TagSeries};
use crate::tui::keymap::Action;
use crate::tui::state::run::RunState;

/// Which metric the charts show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Loss,
    Accuracy,
    LearningRate,
}

impl Metric {
    pub fn label(&self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Accuracy => "accuracy",
            Metric::LearningRate => "learning rate",
        }
    }
}

/// The x axis of the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    Step,
    Epoch,
    Time,
}

impl XAxis {
    pub fn label(&self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::Epoch => "epoch",
            XAxis::Time => "seconds",
        }
    }

    /// The unit written at the end of the x axis.
    pub fn unit(&self) -> &'static str {
        match self {
            XAxis::Step => "steps",
            XAxis::Epoch => "epochs",
            XAxis::Time => "s",
        }
    }
}

/// How the charts are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartOptions {
    pub metric: Metric,
    pub smoothing: bool,
    /// EMA weight in [0, 0.99].
    pub weight: f64,
    pub log_y: bool,
    pub x_axis: XAxis,
    /// The x window (zoom and pan); the whole range when `None`.
    pub window: Option<(f64, f64)>,
    /// The readout cursor, as a fraction of the window (0..1).
    pub cursor: Option<f64>,
    /// One tag of external runs (`--watch`) shown instead of `metric`, as the metric key
    /// cycles on past the learning rate through the tags of the runs on the chart.
    pub tag: Option<String>,
}

impl ChartOptions {
    /// What the chart shows: the metric's name, or the tag's.
    pub fn label(&self) -> String {
        self.tag.clone().unwrap_or_else(|| self.metric.label().to_string())
    }
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            metric: Metric::Loss,
            smoothing: true,
            weight: 0.6,
            log_y: false,
            x_axis: XAxis::Step,
            window: None,
            cursor: None,
            tag: None,
        }
    }
}

/// A named series of one run for a metric, and whether it is per step (smoothable).
pub struct SeriesData {
    /// A tag's name for external runs.
    pub name: Cow<'static, str>,
    pub points: Vec<(f64, f64)>,
    pub per_step: bool,
}

/// The series of a run the chart shows with these options: Vigil's own series of the metric,
/// or an external run's tags of that kind (by name: `train/loss` joins the loss chart); with a
/// tag chosen, that tag's series (Vigil's runs show their series of the same kind).
pub fn series_for(r: &RunState, c: &ChartOptions) -> Vec<SeriesData> {
    match (&r.external, &c.tag) {
        (Some(x), Some(tag)) => {
            x.tags.get(tag).map(|s| tag_series(x, tag, s, c.x_axis)).into_iter().collect()
        }
        (Some(x), None) => {
            x.tags_of(kind_of(c.metric)).into_iter().map(|t| tag_series(x, t, &x.tags[t], c.x_axis)).collect()
        }
        (None, Some(tag)) => {
            let Some((metric, name)) = vigil_series_for_tag(tag) else { return vec![] };
            series_of(r, metric, c.x_axis).into_iter().filter(|s| s.name == name).collect()
        }
        (None, None) => series_of(r, c.metric, c.x_axis),
    }
}

/// The one series per run that Compare overlays (and exports): the training loss, the
/// validation accuracy or the rate of Vigil's runs; an external run's main tag of that kind
/// (see [`crate::external::primary`]); or the chosen tag.
pub fn compare_series(r: &RunState, c: &ChartOptions) -> Option<SeriesData> {
    if r.external.is_some() || c.tag.is_some() {
        return series_for(r, c).into_iter().next();
    }
    let pick = match c.metric {
        Metric::Loss => "train loss",
        Metric::Accuracy => "val acc",
        Metric::LearningRate => "lr",
    };
    series_of(r, c.metric, c.x_axis).into_iter().find(|s| s.name == pick)
}

fn kind_of(m: Metric) -> TagKind {
    match m {
        Metric::Loss => TagKind::Loss,
        Metric::Accuracy => TagKind::Accuracy,
        Metric::LearningRate => TagKind::LearningRate,
    }
}

/// Which of Vigil's own series stands beside an external tag (`val_loss` beside `val loss`).
fn vigil_series_for_tag(tag: &str) -> Option<(Metric, &'static str)> {
    let held_out = crate::external::is_held_out(tag);
    Some(match crate::external::classify(tag) {
        TagKind::Loss => (Metric::Loss, if held_out { "val loss" } else { "train loss" }),
        TagKind::Accuracy => (Metric::Accuracy, if held_out { "val acc" } else { "train acc" }),
        TagKind::LearningRate => (Metric::LearningRate, "lr"),
        TagKind::Other => return None,
    })
}

/// A tag's points with x in the chosen unit: the step (external runs have no epochs of known
/// length, so the epoch axis shows steps too) or seconds since the run's first point.
fn tag_series(x: &ExternalRun, tag: &str, s: &TagSeries, axis: XAxis) -> SeriesData {
    let t0 = x
        .tags
        .values()
        .filter_map(|s| s.points.first())
        .map(|p| p.wall)
        .filter(|w| w.is_finite())
        .fold(f64::INFINITY, f64::min);
    let points = match axis {
        XAxis::Time => {
            s.points.iter().filter(|p| p.wall.is_finite()).map(|p| (p.wall - t0, p.value)).collect()
        }
        _ => s.points.iter().map(|p| (p.step as f64, p.value)).collect(),
    };
    SeriesData { name: Cow::Owned(tag.to_string()), points, per_step: true }
}

/// The tags of the external runs on the chart now, in order: what the metric key cycles
/// through after Vigil's metrics.
pub fn shown_tags(app: &App) -> Vec<String> {
    let runs: Vec<&RunState> = match app.view {
        View::Compare => app.compared(),
        _ => app.selected().into_iter().collect(),
    };
    let tags: std::collections::BTreeSet<&String> =
        runs.iter().filter_map(|r| r.external.as_ref()).flat_map(|x| x.tags.keys()).collect();
    tags.into_iter().cloned().collect()
}

/// The series a run has for a metric, with whether each is per step.
pub fn series_of(r: &RunState, metric: Metric, axis: XAxis) -> Vec<SeriesData> {
    let spe = r.info.steps_per_epoch.max(1) as f64;
    let sx = |step: u64, time: f64| match axis {
        XAxis::Step => step as f64,
        XAxis::Epoch => step as f64 / spe,
        XAxis::Time => time,
    };
    let per_epoch = |name: &'static str, f: fn(&crate::engine::follow::EpochPoint) -> f64| SeriesData {
        name: Cow::Borrowed(name),
        points: r.epochs.iter().map(|e| (sx(e.step, e.time), f(e))).collect(),
        per_step: false,
    };
    let per_step =
        |name: &'static str, smooth: bool, f: fn(&crate::engine::follow::StepPoint) -> f64| SeriesData {
            name: Cow::Borrowed(name),
            points: r.steps().map(|s| (sx(s.step, s.time), f(s))).collect(),
            per_step: smooth,
        };
    match metric {
        Metric::Loss => vec![per_step("train loss", true, |s| s.loss), per_epoch("val loss", |e| e.val_loss)],
        Metric::Accuracy => vec![
            per_epoch("train acc", |e| e.train_accuracy),
            per_epoch("val acc", |e| e.val_accuracy),
            per_epoch("val F1", |e| e.val_macro_f1),
        ],
        Metric::LearningRate => vec![per_step("lr", false, |s| s.lr)],
    }
}

/// The chart keys: offered after the active view's own keys, in every view (the options they
/// change are shared by every chart).
pub const BINDINGS: &[Binding] = &[
    Binding::new(&[Action::NextTab]).hint("next tab"),
    Binding::new(&[Action::NextMetric]).hint("metric"),
    Binding::new(&[Action::ToggleSmoothing]).hint("smooth"),
    Binding::new(&[Action::SmoothMore]),
    Binding::new(&[Action::SmoothLess]),
    Binding::new(&[Action::ToggleLogScale]).hint("log"),
    Binding::new(&[Action::CycleXAxis]).hint("x axis"),
    Binding::new(&[Action::ZoomIn, Action::ZoomOut]).hint("zoom"),
    Binding::new(&[Action::PanLeft]),
    Binding::new(&[Action::PanRight]),
    Binding::new(&[Action::ResetZoom]),
    Binding::new(&[Action::ExportCsv]).hint("csv").commands(&["export"]),
    Binding::new(&[Action::ExportPng]),
];

/// The chart keys' effect on the shared chart options.
pub fn handle(action: Action, app: &mut App) -> Option<Vec<Effect>> {
    let chart = &mut app.chart;
    match action {
        Action::NextMetric => next_metric(app),
        Action::ToggleSmoothing => chart.smoothing = !chart.smoothing,
        Action::SmoothMore | Action::SmoothLess => {
            let d = if action == Action::SmoothMore { 0.1 } else { -0.1 };
            chart.weight = ((chart.weight + d) * 10.0).round().clamp(0.0, 9.9) / 10.0;
            chart.weight = chart.weight.min(0.99);
            chart.smoothing = chart.weight > 0.0;
            let text = format!("smoothing {:.1}", chart.weight);
            app.say(crate::tui::app::Level::Info, text);
        }
        Action::ToggleLogScale => chart.log_y = !chart.log_y,
        Action::CycleXAxis => {
            chart.x_axis = match chart.x_axis {
                XAxis::Step => XAxis::Epoch,
                XAxis::Epoch => XAxis::Time,
                XAxis::Time => XAxis::Step,
            };
            chart.window = None;
        }
        Action::ZoomIn | Action::ZoomOut | Action::PanLeft | Action::PanRight => zoom(app, action),
        Action::ResetZoom => {
            chart.window = None;
            chart.cursor = None;
        }
        Action::ExportCsv => return Some(vec![Effect::ExportCsv]),
        Action::ExportPng => return Some(vec![Effect::ExportPng]),
        _ => return None,
    }
    Some(vec![])
}

/// The metric key: loss, accuracy, learning rate, then each tag of the external runs on the
/// chart, then loss again.
fn next_metric(app: &mut App) {
    let tags = shown_tags(app);
    let chart = &mut app.chart;
    let (metric, tag) = match (chart.tag.take(), chart.metric) {
        (None, Metric::Loss) => (Metric::Accuracy, None),
        (None, Metric::Accuracy) => (Metric::LearningRate, None),
        (None, Metric::LearningRate) => match tags.first() {
            Some(t) => (Metric::LearningRate, Some(t.clone())),
            None => (Metric::Loss, None),
        },
        (Some(t), m) => match tags.iter().skip_while(|x| **x != t).nth(1) {
            Some(n) => (m, Some(n.clone())),
            None => (Metric::Loss, None),
        },
    };
    chart.metric = metric;
    chart.tag = tag;
}

/// Moves the readout cursor (left or right) in the views that draw it.
pub fn move_cursor(app: &mut App, action: Action) -> Option<Vec<Effect>> {
    let step = match action {
        Action::Left => -0.02,
        Action::Right => 0.02,
        _ => return None,
    };
    let c = app.chart.cursor.unwrap_or(if step < 0.0 { 1.0 } else { 0.0 });
    app.chart.cursor = Some((c + step).clamp(0.0, 1.0));
    Some(vec![])
}

/// Zooms or pans the x window of the charts, around the cursor when there is one.
fn zoom(app: &mut App, action: Action) {
    let Some((lo, hi)) = full_x_range(app) else { return };
    let chart = &mut app.chart;
    let (wlo, whi) = chart.window.unwrap_or((lo, hi));
    let width = whi - wlo;
    let (nlo, nhi) = match action {
        Action::ZoomIn => {
            let center = wlo + width * chart.cursor.unwrap_or(0.5);
            (center - width / 4.0, center + width / 4.0)
        }
        Action::ZoomOut => {
            let center = (wlo + whi) / 2.0;
            (center - width, center + width)
        }
        Action::PanLeft => (wlo - width / 4.0, whi - width / 4.0),
        _ => (wlo + width / 4.0, whi + width / 4.0),
    };
    // Keep the window inside the data and at least a few points wide.
    let w = (nhi - nlo).clamp((hi - lo) / 1000.0, hi - lo);
    let nlo = nlo.clamp(lo, (hi - w).max(lo));
    chart.window = if w >= hi - lo { None } else { Some((nlo, nlo + w)) };
}

/// The x range of the chart currently shown (for zoom).
pub fn full_x_range(app: &App) -> Option<(f64, f64)> {
    let runs: Vec<&RunState> = match app.view {
        View::Compare => app.compared(),
        _ => app.selected().into_iter().collect(),
    };
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for r in runs {
        for (x, _) in series_for(r, &app.chart).into_iter().flat_map(|s| s.points) {
            lo = lo.min(x);
            hi = hi.max(x);
        }
    }
    (lo < hi).then_some((lo, hi))
}

/// A named curve of a chart that is not a run's (system history, robustness).
pub type NamedSeries = (String, Vec<(f64, f64)>);

/// The System view's history charts: the host's (CPU and memory %) and the GPUs' (utilisation
/// and memory % of each GPU in `now`), x in the history's time unit before now (this session's
/// samples after the stored ones). The view draws them and `w`/`W` export them, from this one
/// place.
pub fn system_series(app: &App, now: &SystemSample) -> (Vec<NamedSeries>, Vec<NamedSeries>) {
    use crate::store::system_log::SystemPoint;
    let hist = &app.system_points;
    let series = |name: &str, g: &dyn Fn(&SystemPoint) -> Option<f64>| -> NamedSeries {
        (name.to_string(), hist.series(g))
    };
    let pct = |used: u64, total: u64| 100.0 * used as f64 / total.max(1) as f64;
    let host = vec![
        series("cpu %", &|p| Some(p.cpu as f64)),
        series("memory %", &|p| Some(pct(p.mem_used, p.mem_total))),
    ];
    // GPU history beside the host's when there are GPUs: utilisation and memory of each.
    let mut gpu = Vec::new();
    for g in &now.gpus {
        let i = g.index;
        gpu.push(series(&format!("gpu{i} util %"), &move |p: &SystemPoint| {
            p.gpus.iter().find(|x| x.index == i).map(|x| x.util as f64)
        }));
        gpu.push(series(&format!("gpu{i} mem %"), &move |p: &SystemPoint| {
            p.gpus.iter().find(|x| x.index == i).map(|x| pct(x.mem_used, x.mem_total))
        }));
    }
    (host, gpu)
}

/// The runs the Security view's robustness chart overlays: the marked ones with saved attacks,
/// or every one with saved attacks.
pub fn attacked(app: &App) -> Vec<&RunState> {
    let all: Vec<&RunState> =
        app.runs.values().filter(|r| !r.attacks.is_empty() || !r.flips.is_empty()).collect();
    let marked: Vec<&RunState> = all.iter().copied().filter(|r| app.marked.contains(&r.info.id)).collect();
    if marked.is_empty() { all } else { marked }
}

/// The robustness curves the Security view draws: per attacked run and saved attack, test
/// accuracy (a fraction) against ε, named `RUN ATTACK` (and `(defended)` for a run trained
/// adversarially).
pub fn robustness_series(app: &App) -> Vec<NamedSeries> {
    let mut out = Vec::new();
    for r in attacked(app) {
        let defended = r.spec.as_ref().is_some_and(|s| s.adversarial.is_some());
        for c in &r.attacks {
            let points: Vec<(f64, f64)> = c.points.iter().map(|p| (p.eps as f64, p.accuracy)).collect();
            // An embedding-space curve is not about texts: its name says so.
            let space = if c.space == "embedding" { " embeddings" } else { "" };
            let name = format!("{} {}{space}{}", r.info.id, c.key, if defended { " (defended)" } else { "" });
            out.push((name, points));
        }
    }
    out
}
