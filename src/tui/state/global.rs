//! The keys that work in every view (after the active view and the chart keys passed): quit,
//! help, switching views, moving the run selection, and the run operations, which act on the
//! selected run wherever it is shown.

use super::screens::DetailTab;
use super::{App, Binding, Effect, Level, View, explain, service};
use crate::engine::runner::RunnerCommand;
use crate::store::{CheckpointKind, RunStatus};
use crate::tui::app::{Confirm, Mode, SortKey};
use crate::tui::form::RunForm;
use crate::tui::keymap::Action;

/// The global keys, in the order the help lists them and completion offers their commands.
pub const BINDINGS: &[Binding] = &[
    Binding::new(&[Action::Quit]).commands(&["quit", "q"]),
    Binding::new(&[Action::Help]).commands(&["help"]),
    Binding::new(&[Action::Back]),
    Binding::new(&[Action::ShowOverview]).commands(&["overview"]),
    Binding::new(&[Action::ShowRuns]).commands(&["runs"]),
    Binding::new(&[Action::ShowDetail]).commands(&["detail"]),
    Binding::new(&[Action::ShowCompare]).commands(&["compare"]),
    Binding::new(&[Action::ShowLogs]).commands(&["logs"]),
    Binding::new(&[Action::ShowSystem]).commands(&["system"]),
    Binding::new(&[Action::ShowExplain]).commands(&["explain"]),
    Binding::new(&[Action::ShowService]).commands(&["service"]),
    Binding::new(&[Action::ShowSecurity]).commands(&["security"]),
    Binding::new(&[Action::ShowSweeps]).commands(&["sweeps"]),
    Binding::new(&[Action::ShowPlayground]).commands(&["playground"]),
    Binding::new(&[Action::ShowMessages]).commands(&["messages"]),
    Binding::new(&[Action::Open]),
    Binding::new(&[Action::ToggleMark]),
    Binding::new(&[Action::Filter]).commands(&["filter"]),
    Binding::new(&[Action::Command]),
    Binding::new(&[Action::NewRun]).commands(&["new"]),
    Binding::new(&[Action::CloneRun]).commands(&["clone"]),
    Binding::new(&[Action::PauseResume]).commands(&["pause", "resume"]),
    Binding::new(&[Action::StopRun]).commands(&["stop"]),
    Binding::new(&[Action::Evaluate]).commands(&["eval"]),
    Binding::new(&[Action::DeleteRun]).commands(&["delete", "archive"]),
    Binding::new(&[Action::ShowArchived]).commands(&["archived", "restore"]),
    Binding::new(&[Action::CycleTheme]).commands(&["theme"]),
    Binding::new(&[Action::SortNext]).commands(&["sort"]),
    Binding::new(&[Action::SortReverse]),
    Binding::new(&[Action::TagRun]).commands(&["tag"]),
    Binding::new(&[Action::NoteRun]).commands(&["note"]),
    Binding::new(&[Action::ToggleColumns]),
    Binding::new(&[Action::ManageKeys]),
    Binding::new(&[Action::Up]),
    Binding::new(&[Action::Down]),
    Binding::new(&[Action::Left]),
    Binding::new(&[Action::Right]),
    Binding::new(&[Action::PageUp]),
    Binding::new(&[Action::PageDown]),
    Binding::new(&[Action::Top]),
    Binding::new(&[Action::Bottom]),
];

/// Refuses, in the status line, an action that would change an external run (one another
/// program trains, `--watch`: Vigil only reads its files); says whether it refused.
pub fn refuse_on_external(app: &mut App, action: Action) -> bool {
    // The Playground gives these keys meanings of its own (stop a generation, explain a token).
    if app.view == View::Playground {
        return false;
    }
    let what = match action {
        Action::PauseResume => "paused or resumed",
        Action::StopRun => "stopped",
        Action::Evaluate => "evaluated (it has no Vigil checkpoint)",
        Action::DeleteRun => "deleted or archived",
        Action::CloneRun => "cloned (it has no Vigil spec)",
        _ => return false,
    };
    let Some(r) = app.selected().filter(|r| r.is_external()) else { return false };
    let dir = r.external.as_ref().map(|x| x.dir.display().to_string()).unwrap_or_default();
    let msg = format!(
        "{} is an external run, read-only: it cannot be {what} from Vigil (it only reads {dir})",
        r.info.id
    );
    app.say(Level::Warn, msg);
    true
}

/// Carries out a global key.
pub fn handle(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Quit => {
            // Only runs this console trains stop with it; others train on in their process.
            let active = app.runner_load.0 + app.runner_load.1;
            if active > 0 {
                app.mode = Mode::Confirm(Confirm::Quit { active });
                return vec![];
            }
            app.quit = true;
            return vec![Effect::Quit { stop_runs: false }];
        }
        Action::Help => {
            app.panes.help = Default::default();
            app.mode = Mode::Help { scroll: 0 };
        }
        Action::Back => {
            if !app.filter_text.is_empty() {
                app.set_filter(String::new());
            } else if matches!(app.view, View::Detail | View::Logs) {
                app.view = app.previous;
            } else if !app.marked.is_empty() {
                app.marked.clear();
            }
        }
        Action::ShowOverview => app.show(View::Overview),
        Action::ShowRuns => app.show(View::Runs),
        Action::ShowDetail | Action::Open => app.show(View::Detail),
        Action::ShowCompare => app.show(View::Compare),
        Action::ShowLogs => app.show(View::Logs),
        Action::ShowSystem => app.show(View::System),
        Action::ShowService => app.show(View::Service),
        Action::ShowSecurity => app.show(View::Security),
        Action::ShowSweeps => app.show(View::Sweeps),
        Action::ShowPlayground => app.show(View::Playground),
        // The key opens the command line on `:llm `, for the path to be typed (Tab completes).
        Action::LoadLanguageModel => {
            app.mode = Mode::Command { input: "llm ".into(), completion: Default::default() }
        }
        Action::ShowMessages => app.mode = Mode::Messages { scroll: 0 },
        Action::ShowExplain => return explain::show(app),
        Action::ExplainRequests => return explain::toggle_requests(app),
        Action::ToggleService => return service::toggle_service(app),
        Action::Up => app.move_cursor(-1),
        Action::Down => app.move_cursor(1),
        Action::PageUp => app.move_cursor(-10),
        Action::PageDown => app.move_cursor(10),
        Action::Top => app.cursor = 0,
        Action::Bottom => app.move_cursor(i64::MAX / 2),
        Action::ToggleMark => {
            if let Some(id) = app.selected_id() {
                if !app.marked.remove(&id) {
                    app.marked.insert(id);
                }
                app.move_cursor(1);
            }
        }
        Action::Filter => {
            app.mode = Mode::Filter(app.filter_text.clone());
            if !matches!(app.view, View::Runs | View::Compare) {
                app.view = View::Runs;
            }
        }
        Action::Command => app.mode = Mode::Command { input: String::new(), completion: Default::default() },
        Action::ShowArchived => return vec![super::Effect::Runner(RunnerCommand::ListArchived)],
        Action::NewRun => {
            let preferred = app
                .selected()
                .map(|r| r.info.spec.clone())
                .unwrap_or_else(|| crate::ml::spec::DEFAULT_SPEC.into());
            match RunForm::new_run(app.specs.clone(), &preferred) {
                Some(f) => app.mode = Mode::Form(Box::new(f)),
                None => app.say(Level::Error, "no specs found in models/ or built in"),
            }
        }
        Action::CloneRun => match app.selected() {
            Some(r) => match r.spec.clone() {
                Some(spec) => app.mode = Mode::Form(Box::new(RunForm::clone_run(&r.info.id, spec))),
                None => {
                    let msg = format!("the spec of {} is not readable", r.info.id);
                    app.say(Level::Error, msg)
                }
            },
            None => app.say(Level::Warn, "no run selected"),
        },
        Action::PauseResume => return pause_resume(app),
        Action::StopRun => match app.selected() {
            Some(r) if r.is_active() => app.mode = Mode::Confirm(Confirm::Stop(r.info.id.clone())),
            Some(r) => {
                let msg = format!("{} is not training", r.info.id);
                app.say(Level::Warn, msg)
            }
            None => {}
        },
        Action::Evaluate => {
            let Some((id, ready)) = app.selected().map(|r| (r.info.id.clone(), r.has_best())) else {
                return vec![];
            };
            if ready {
                app.say(Level::Info, format!("evaluating {id} on the test split"));
                return vec![Effect::Runner(RunnerCommand::Evaluate(id, CheckpointKind::Best))];
            }
            app.say(Level::Warn, format!("{id} has no checkpoint yet"));
        }
        Action::DeleteRun => match app.selected() {
            Some(r) if r.is_active() => {
                let msg = format!("{} is training: stop it first (x)", r.info.id);
                app.say(Level::Warn, msg)
            }
            Some(r) => app.mode = Mode::Confirm(Confirm::Delete(r.info.id.clone())),
            None => {}
        },
        Action::CycleTheme => {
            let names = crate::tui::theme::Theme::names();
            let i = names.iter().position(|n| *n == app.theme.name).map_or(0, |i| (i + 1) % names.len());
            return vec![Effect::LoadTheme(names[i].clone())];
        }
        Action::SortNext => {
            let i = SortKey::ALL.iter().position(|k| *k == app.sort).unwrap_or(0);
            app.sort = SortKey::ALL[(i + 1) % SortKey::ALL.len()];
            app.say(Level::Info, format!("sorted by {}", app.sort.label()));
        }
        Action::SortReverse => app.sort_desc = !app.sort_desc,
        Action::ToggleColumns => super::table::toggle(app),
        Action::TagRun | Action::NoteRun => return super::table::prompt(app, action),
        Action::ManageKeys => return super::keys::open(app),
        Action::NextTab => {
            // Each tab has its own panels: the focus starts on the new tab's first.
            app.panes.detail = super::panes::Focus::default();
            app.detail.tab = match app.detail.tab {
                DetailTab::Curves => DetailTab::Evaluation,
                DetailTab::Evaluation => DetailTab::Params,
                DetailTab::Params => DetailTab::Curves,
            };
            if app.view != View::Detail {
                app.show(View::Detail);
            }
        }
        // The chart keys and the views' own keys were offered first.
        _ => {}
    }
    vec![]
}

fn pause_resume(app: &mut App) -> Vec<Effect> {
    let Some(r) = app.selected() else { return vec![] };
    let id = r.info.id.clone();
    match (r.info.status, r.interrupted) {
        (RunStatus::Running, false) | (RunStatus::Queued, false) => {
            app.say(Level::Info, format!("pausing {id}"));
            vec![Effect::Runner(RunnerCommand::Pause(id))]
        }
        (RunStatus::Paused, false) => {
            app.say(Level::Info, format!("resuming {id}"));
            vec![Effect::Runner(RunnerCommand::Unpause(id))]
        }
        (RunStatus::Completed, _) => {
            app.say(Level::Warn, format!("{id} has completed"));
            vec![]
        }
        _ => {
            app.say(Level::Info, format!("continuing {id} from its last checkpoint"));
            vec![Effect::Runner(RunnerCommand::Resume(id))]
        }
    }
}
