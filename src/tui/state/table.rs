//! The Runs view's columns mode (`C`): every run's hyperparameters against its final metrics,
//! sortable by any column (`←→` picks the column, `o` sorts by it, `O` reverses), and the tags
//! and notes on runs (`T` / `:tag NAME`, `I` / `:note TEXT`), which live in the run folder's
//! `notes.json` ([`crate::store::notes`]) and are written by an effect, never here.
//!
//! The hyperparameter columns are the usual suspects (model family, learning rate, batch, epochs,
//! optimizer, model size, dropout) where runs have them, then every other one that differs
//! between runs (what a sweep varied).

use super::{App, Effect, Level, View};
use crate::store::notes::RunNotes;
use crate::tui::app::{Mode, RunState, SortKey};
use crate::tui::keymap::Action;

/// The columns mode's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTable {
    /// Columns mode on.
    pub on: bool,
    /// The column under the column cursor (an index into [`columns`]).
    pub column: usize,
    /// The column the runs are sorted by, by name (stable while columns come and go), when
    /// [`SortKey::Column`] is the sort.
    pub sort_by: Option<String>,
}

/// A metric column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricColumn {
    BestVal,
    TestAcc,
    TestF1,
    TrainLoss,
    ValLoss,
    Epsilon,
}

impl MetricColumn {
    pub const ALL: [MetricColumn; 6] = [
        MetricColumn::BestVal,
        MetricColumn::TestAcc,
        MetricColumn::TestF1,
        MetricColumn::TrainLoss,
        MetricColumn::ValLoss,
        MetricColumn::Epsilon,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            MetricColumn::BestVal => "best val",
            MetricColumn::TestAcc => "test acc",
            MetricColumn::TestF1 => "test F1",
            MetricColumn::TrainLoss => "train loss",
            MetricColumn::ValLoss => "val loss",
            MetricColumn::Epsilon => "DP ε",
        }
    }

    pub fn value(&self, r: &RunState) -> Option<f64> {
        let i = &r.info;
        match self {
            MetricColumn::BestVal => i.best_val_accuracy,
            MetricColumn::TestAcc => i.test_accuracy,
            MetricColumn::TestF1 => i.test_macro_f1,
            MetricColumn::TrainLoss => r.last_loss(),
            MetricColumn::ValLoss => i.val_loss,
            MetricColumn::Epsilon => i.dp.as_ref().map(|d| d.epsilon),
        }
    }

    pub fn text(&self, r: &RunState) -> String {
        match (self, self.value(r)) {
            (_, None) => "-".into(),
            (MetricColumn::BestVal | MetricColumn::TestAcc, Some(v)) => format!("{:.2}%", 100.0 * v),
            (MetricColumn::Epsilon, Some(v)) => format!("{v:.2}"),
            (_, Some(v)) => format!("{v:.4}"),
        }
    }
}

/// One column of the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// A hyperparameter by its dotted name (`optimizer.lr`).
    Param(String),
    Metric(MetricColumn),
}

impl Column {
    /// The header: a parameter's last part (`lr`), a metric's name.
    pub fn name(&self) -> String {
        match self {
            Column::Param(k) => k.rsplit('.').next().unwrap_or(k).to_string(),
            Column::Metric(m) => m.name().to_string(),
        }
    }

    /// The full name (what `sort_by` keeps).
    pub fn key(&self) -> String {
        match self {
            Column::Param(k) => k.clone(),
            Column::Metric(m) => m.name().to_string(),
        }
    }

    pub fn text(&self, r: &RunState) -> String {
        match self {
            Column::Param(k) => r.params.get(k).cloned().unwrap_or_else(|| "-".into()),
            Column::Metric(m) => m.text(r),
        }
    }

    /// The value to sort by: numbers by value (`Mini(32)` reads 32), other text as text;
    /// missing values sort first.
    pub fn sort_key(&self, r: &RunState) -> (i64, String) {
        let num = |x: f64| (x * 1e6).clamp(i64::MIN as f64, i64::MAX as f64) as i64;
        match self {
            Column::Metric(m) => (m.value(r).map_or(i64::MIN, num), String::new()),
            Column::Param(k) => match r.params.get(k) {
                None => (i64::MIN, String::new()),
                Some(v) => match number_in(v) {
                    Some(x) => (num(x), String::new()),
                    None => (0, v.to_lowercase()),
                },
            },
        }
    }
}

/// The number a parameter value holds: `0.002`, `Mini(32)` → 32, `[256, 128]` → 256.
fn number_in(v: &str) -> Option<f64> {
    let start = v.find(|c: char| c.is_ascii_digit() || c == '-' || c == '.')?;
    let rest = &v[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The parameters shown first, by their last part, even when no run varies them.
const USUAL: [&str; 7] = ["model", "lr", "batch", "epochs", "optimizer", "hidden", "dropout"];

/// The table's columns for the runs in the store: the usual hyperparameters, the others that
/// differ between runs, then the metrics.
pub fn columns(app: &App) -> Vec<Column> {
    let mut keys: Vec<String> = Vec::new();
    let mut varied: Vec<String> = Vec::new();
    for r in app.runs.values() {
        for k in r.params.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys.sort();
    for k in &keys {
        // Seeds differ by design and say nothing about the model; the usual ones come below.
        if k == "seed" || k.ends_with(".seed") {
            continue;
        }
        let mut values = app.runs.values().map(|r| r.params.get(k));
        let first = values.next().flatten();
        if values.any(|v| v != first) {
            varied.push(k.clone());
        }
    }
    let is_usual = |k: &str| USUAL.iter().position(|u| k.rsplit('.').next() == Some(*u));
    let mut usual: Vec<String> = keys.iter().filter(|k| is_usual(k).is_some()).cloned().collect();
    usual.sort_by_key(|k| is_usual(k));
    varied.retain(|k| is_usual(k).is_none());
    let mut out: Vec<Column> = usual.into_iter().chain(varied).map(Column::Param).collect();
    out.extend(MetricColumn::ALL.into_iter().map(Column::Metric));
    out
}

/// The column [`SortKey::Column`] sorts by (found by name, without listing the columns: the
/// sort asks for it once per frame).
pub fn sort_column(app: &App) -> Option<Column> {
    let by = app.table.sort_by.as_deref()?;
    Some(match MetricColumn::ALL.into_iter().find(|m| m.name() == by) {
        Some(m) => Column::Metric(m),
        None => Column::Param(by.to_string()),
    })
}

/// Keys in the Runs view while the columns mode is on; `None` leaves them to the usual table.
pub fn handle(action: Action, app: &mut App) -> Option<Vec<Effect>> {
    if action == Action::ToggleColumns {
        toggle(app);
        return Some(vec![]);
    }
    if !app.table.on {
        return None;
    }
    let n = columns(app).len();
    match action {
        Action::Left => app.table.column = app.table.column.saturating_sub(1),
        Action::Right => app.table.column = (app.table.column + 1).min(n.saturating_sub(1)),
        Action::SortNext => {
            let Some(c) = columns(app).into_iter().nth(app.table.column) else { return Some(vec![]) };
            // A second `o` on the sorted column reverses it, as a spreadsheet header does.
            if app.sort == SortKey::Column && app.table.sort_by.as_deref() == Some(c.key().as_str()) {
                app.sort_desc = !app.sort_desc;
            } else {
                app.sort = SortKey::Column;
                app.sort_desc = matches!(c, Column::Metric(_));
                app.table.sort_by = Some(c.key());
            }
            let dir = if app.sort_desc { "high to low" } else { "low to high" };
            app.say(Level::Info, format!("sorted by {} ({dir})", c.key()));
        }
        _ => return None,
    }
    Some(vec![])
}

/// `C`: the columns mode on or off (and the Runs view shown).
pub fn toggle(app: &mut App) {
    app.table.on = !app.table.on;
    if app.view != View::Runs {
        app.show(View::Runs);
        app.table.on = true;
    }
    if !app.table.on && app.sort == SortKey::Column {
        app.sort = SortKey::Started;
        app.sort_desc = true;
    }
}

/// `T` and `I`: the command line, ready for the tag or the note (with the current note to edit).
pub fn prompt(app: &mut App, action: Action) -> Vec<Effect> {
    let Some(r) = app.selected() else {
        app.say(Level::Warn, "no run selected");
        return vec![];
    };
    let input = match action {
        Action::NoteRun => format!("note {}", r.notes.note.clone().unwrap_or_default()),
        _ => "tag ".to_string(),
    };
    app.mode = Mode::Command { input, completion: Default::default() };
    vec![]
}

/// `:tag NAME`, `:tag -NAME`, `:note TEXT`: the selected run's notes changed, shown at once and
/// written to its folder by the effect.
pub fn annotate(app: &mut App, action: Action, arg: &str) -> Vec<Effect> {
    let Some(id) = app.selected_id() else {
        app.say(Level::Warn, "no run selected");
        return vec![];
    };
    let mut notes: RunNotes = app.runs.get(&id).map(|r| r.notes.clone()).unwrap_or_default();
    let said = if action == Action::NoteRun {
        notes.set_note(arg);
        if notes.note.is_some() { format!("noted on {id}") } else { format!("cleared the note on {id}") }
    } else {
        let mut done = Vec::new();
        if arg.trim().is_empty() {
            app.say(Level::Warn, ":tag NAME adds a tag, :tag -NAME removes it");
            return vec![];
        }
        for word in arg.split_whitespace() {
            match word.strip_prefix('-') {
                Some(t) => {
                    if notes.remove_tag(t) {
                        done.push(format!("-{t}"));
                    }
                }
                None => match notes.add_tag(word) {
                    Ok(true) => done.push(format!("#{word}")),
                    Ok(false) => {}
                    Err(e) => {
                        app.say(Level::Error, e.to_string());
                        return vec![];
                    }
                },
            }
        }
        if done.is_empty() {
            format!("{id} tags unchanged ({})", notes.tag_line())
        } else {
            format!("{id}: {}", done.join(" "))
        }
    };
    if let Some(r) = app.runs.get_mut(&id) {
        r.notes = notes.clone();
    }
    app.say(Level::Info, said);
    vec![Effect::SaveNotes(id, notes)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_out_of_parameter_values() {
        assert_eq!(number_in("0.002"), Some(0.002));
        assert_eq!(number_in("Mini(32)"), Some(32.0));
        assert_eq!(number_in("[256, 128]"), Some(256.0));
        assert_eq!(number_in("1e-3"), Some(1e-3));
        assert_eq!(number_in("Adam"), None);
    }
}
