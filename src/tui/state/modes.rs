//! Keys while something other than a view has them: the help overlay, the filter and command
//! lines (Tab completes the common prefix, then cycles), the new-run form, confirmations (quit
//! offers to leave the runs training) and the list of archived runs; and the `:` command line,
//! whose commands come from the key tables (see [`super::commands`]).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{App, Effect, Level, View};
use crate::engine::runner::RunnerCommand;
use crate::engine::service::ServiceCommand;
use crate::store::CheckpointKind;
use crate::tui::app::{Confirm, Mode, SortKey};
use crate::tui::form::RunForm;
use crate::tui::keymap::Action;
use crate::tui::theme::Theme;

/// A key in the current mode.
pub fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    match std::mem::replace(&mut app.mode, Mode::Normal) {
        Mode::Normal => {
            // A search being typed and the keys panel's form read keys before the keymap.
            if let Some(effects) = super::panes::capture(app, &k) {
                return effects;
            }
            let Some(action) = app.keymap.action(&k) else { return vec![] };
            app.act(action)
        }
        Mode::Help { scroll } => {
            if let Some(scroll) = super::panes::help_key(app, &k, scroll) {
                app.mode = Mode::Help { scroll };
                return vec![];
            }
            let scroll = match app.keymap.action(&k) {
                Some(Action::Down) => scroll.saturating_add(1),
                Some(Action::Up) => scroll.saturating_sub(1),
                Some(Action::PageDown) => scroll.saturating_add(10),
                Some(Action::PageUp) => scroll.saturating_sub(10),
                Some(Action::Quit) if ctrl => return app.act(Action::Quit),
                _ => return vec![],
            };
            app.mode = Mode::Help { scroll };
            vec![]
        }
        Mode::Messages { scroll } => super::messages::key(app, &k, scroll),
        Mode::Filter(mut text) => {
            match k.code {
                KeyCode::Esc => {
                    text.clear();
                    app.set_filter(text);
                }
                KeyCode::Enter => {
                    // A filter that cannot mean what it says is not kept: say why, keep editing.
                    if let Some(problem) = crate::tui::filter::Filter::parse(&text).problem() {
                        app.say(Level::Error, format!("filter refused: {problem}"));
                        app.mode = Mode::Filter(text);
                    }
                }
                KeyCode::Backspace => {
                    text.pop();
                    app.set_filter(text.clone());
                    app.mode = Mode::Filter(text);
                }
                KeyCode::Char(c) if !ctrl => {
                    text.push(c);
                    app.set_filter(text.clone());
                    app.mode = Mode::Filter(text);
                }
                _ => app.mode = Mode::Filter(text),
            }
            vec![]
        }
        Mode::Command { mut input, mut completion } => {
            match k.code {
                KeyCode::Esc => {}
                KeyCode::Enter => return command(app, input.trim()),
                KeyCode::Tab | KeyCode::BackTab => {
                    complete(app, &mut input, &mut completion, k.code == KeyCode::Tab);
                    app.mode = Mode::Command { input, completion };
                }
                KeyCode::Backspace => {
                    if input.pop().is_some() {
                        app.mode = Mode::Command { input, completion: Completion::default() };
                    }
                }
                KeyCode::Char(c) if !ctrl => {
                    input.push(c);
                    app.mode = Mode::Command { input, completion: Completion::default() };
                }
                _ => app.mode = Mode::Command { input, completion },
            }
            vec![]
        }
        Mode::Archive(mut list) => {
            match app.keymap.action(&k) {
                Some(Action::Down) => list.cursor = (list.cursor + 1).min(list.runs.len().saturating_sub(1)),
                Some(Action::Up) => list.cursor = list.cursor.saturating_sub(1),
                Some(Action::Open) | Some(Action::ShowArchived) if !list.runs.is_empty() => {
                    let id = list.runs[list.cursor.min(list.runs.len() - 1)].id.clone();
                    app.say(Level::Info, format!("restoring {id}"));
                    return vec![Effect::Runner(RunnerCommand::Restore(id))];
                }
                Some(Action::Quit) if ctrl => return app.act(Action::Quit),
                Some(Action::Back | Action::Quit) => return vec![],
                _ => {}
            }
            app.mode = Mode::Archive(list);
            vec![]
        }
        Mode::Form(mut form) => {
            match k.code {
                KeyCode::Esc => return vec![],
                KeyCode::Enter if form.focus >= form.fields.len() || ctrl => return submit_form(app, form),
                KeyCode::Char('s') if ctrl => return submit_form(app, form),
                KeyCode::Enter | KeyCode::Down | KeyCode::Tab => form.next(),
                KeyCode::Up | KeyCode::BackTab => form.prev(),
                // From any row, as the form's hint says: the form opens on its first field, and
                // its fields take typing only, so the arrows have no other use there.
                KeyCode::Left => form.cycle_spec(false),
                KeyCode::Right => form.cycle_spec(true),
                KeyCode::Char(' ') if form.focus == 0 => form.cycle_spec(true),
                KeyCode::Backspace => form.backspace(),
                KeyCode::Char(c) => form.type_char(c),
                _ => {}
            }
            app.mode = Mode::Form(form);
            vec![]
        }
        Mode::Confirm(c) => {
            let yes = matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter);
            match (c, k.code) {
                (Confirm::Quit { .. }, KeyCode::Char('s')) | (Confirm::Quit { .. }, KeyCode::Char('y')) => {
                    app.quit = true;
                    vec![Effect::Quit { stop_runs: true }]
                }
                // As an SSH drop does: the console closes, the runs train on in this process,
                // which ends when they have.
                (Confirm::Quit { .. }, KeyCode::Char('l')) => {
                    app.quit = true;
                    vec![Effect::Quit { stop_runs: false }]
                }
                // A run a Slurm job trains (or waits to) is stopped with scancel, as a trial is.
                (Confirm::Stop(id), _)
                    if yes && app.runs.get(&id).is_some_and(|r| r.live_job().is_some()) =>
                {
                    vec![Effect::StopTrial(id)]
                }
                (Confirm::Stop(id), _) if yes => vec![Effect::Runner(RunnerCommand::Stop(id))],
                (Confirm::StopService { .. }, _) if yes => vec![Effect::Service(ServiceCommand::Stop)],
                (Confirm::Delete(id), KeyCode::Char('d')) => vec![Effect::Runner(RunnerCommand::Delete(id))],
                (Confirm::Delete(id), KeyCode::Char('a')) => vec![Effect::Runner(RunnerCommand::Archive(id))],
                _ => vec![],
            }
        }
    }
}

fn submit_form(app: &mut App, mut form: Box<RunForm>) -> Vec<Effect> {
    match form.submit() {
        Some(spec) => {
            let what = match &form.clone_of {
                Some(id) => format!("cloning {id}"),
                None => format!("starting {}", spec.name),
            };
            app.say(Level::Info, what);
            vec![Effect::Runner(RunnerCommand::Start(Box::new(spec)))]
        }
        None => {
            app.mode = Mode::Form(form);
            vec![]
        }
    }
}

/// Runs a `:` command: its name finds the action in the key tables; the commands that take an
/// argument read it here.
pub fn command(app: &mut App, line: &str) -> Vec<Effect> {
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else { return vec![] };
    let arg = words.collect::<Vec<_>>().join(" ");
    let Some(action) = super::commands(app).into_iter().find(|(c, _)| *c == cmd).map(|(_, a)| a) else {
        app.say(Level::Error, format!("unknown command :{cmd} (Tab completes; ? lists keys)"));
        return vec![];
    };
    match with_argument(app, action, arg) {
        Some(effects) => effects,
        None => app.act(action),
    }
}

/// The commands that read an argument; `None` runs the action as its key does.
fn with_argument(app: &mut App, action: Action, arg: String) -> Option<Vec<Effect>> {
    if super::global::refuse_on_external(app, action) {
        return Some(vec![]);
    }
    let effects = match action {
        Action::NewRun => {
            let name = if arg.is_empty() { crate::ml::spec::DEFAULT_SPEC.to_string() } else { arg };
            match RunForm::new_run(app.specs.clone(), &name) {
                Some(f) if f.spec().name == name => app.mode = Mode::Form(Box::new(f)),
                _ => app.say(Level::Error, format!("no spec named {name:?} (:new <Tab> lists them)")),
            }
            vec![]
        }
        Action::Evaluate => match (app.selected_id(), arg.as_str()) {
            (Some(id), "last") => vec![Effect::Runner(RunnerCommand::Evaluate(id, CheckpointKind::Last))],
            (Some(id), "" | "best") => {
                vec![Effect::Runner(RunnerCommand::Evaluate(id, CheckpointKind::Best))]
            }
            (Some(_), other) => {
                app.say(Level::Error, format!("eval takes best or last, not {other:?}"));
                vec![]
            }
            (None, _) => vec![],
        },
        Action::CycleTheme if !arg.is_empty() => vec![Effect::LoadTheme(arg)],
        Action::TagRun | Action::NoteRun => super::table::annotate(app, action, &arg),
        Action::Filter => {
            match crate::tui::filter::Filter::parse(&arg).problem() {
                Some(problem) => app.say(Level::Error, format!("filter refused: {problem}")),
                None => {
                    app.set_filter(arg);
                    app.view = View::Runs;
                }
            }
            vec![]
        }
        Action::SortNext => {
            match SortKey::ALL.iter().find(|k| k.label().replace(' ', "") == arg.replace(' ', "")) {
                Some(k) => app.sort = *k,
                None => {
                    let all = SortKey::ALL.iter().map(|k| k.label()).collect::<Vec<_>>().join(", ");
                    app.say(Level::Error, format!("sort by one of: {all}"))
                }
            }
            vec![]
        }
        Action::LoadLanguageModel => super::playground::load(app, &arg),
        Action::ExportCsv => match arg.as_str() {
            "csv" | "" => vec![Effect::ExportCsv],
            "png" => vec![Effect::ExportPng],
            other => {
                app.say(Level::Error, format!("export csv or png, not {other:?}"));
                vec![]
            }
        },
        _ => return None,
    };
    Some(effects)
}

/// Where Tab completion is: nothing yet, or cycling through the candidates of what was typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    /// What the user typed before the first Tab that cycles, with the candidate shown next.
    pub cycle: Option<(String, usize)>,
}

/// One Tab (or Shift-Tab, `forward` false): a single candidate is taken whole; several first
/// complete their longest common prefix, as a shell does; when there is nothing more in common,
/// each further Tab shows the next candidate (Shift-Tab the one before).
fn complete(app: &App, input: &mut String, state: &mut Completion, forward: bool) {
    if let Some((typed, next)) = &mut state.cycle {
        let options = completions(typed, app);
        if options.is_empty() {
            return;
        }
        let n = options.len();
        let i = if forward { *next % n } else { (*next + 2 * n - 2) % n };
        *input = options[i].clone();
        *next = i + 1;
        return;
    }
    let options = completions(input, app);
    match options.as_slice() {
        [] => {}
        [only] => *input = only.clone(),
        [first, rest @ ..] => {
            let common = rest.iter().fold(first.as_str(), |acc, o| {
                let len =
                    acc.chars().zip(o.chars()).take_while(|(a, b)| a == b).map(|(a, _)| a.len_utf8()).sum();
                &acc[..len]
            });
            if common.len() > input.len() {
                *input = common.to_string();
            } else {
                let i = if forward { 0 } else { options.len() - 1 };
                state.cycle = Some((input.clone(), i + 1));
                *input = options[i].clone();
            }
        }
    }
}

/// The archived runs, as the `u` overlay lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveList {
    pub runs: Vec<crate::store::RunInfo>,
    pub cursor: usize,
}

/// The runner's list of archived runs arrived: show it (or say there is none).
pub fn show_archive(app: &mut App, runs: Vec<crate::store::RunInfo>) {
    if runs.is_empty() {
        let d = app.keymap.hint(Action::DeleteRun);
        app.say(Level::Info, format!("no archived runs (.archive/ is empty; {d} then a archives one)"));
        return;
    }
    app.mode = Mode::Archive(ArchiveList { runs, cursor: 0 });
}

/// Completions of a partial command line.
pub fn completions(input: &str, app: &App) -> Vec<String> {
    let names: Vec<&str> = super::commands(app).into_iter().map(|(c, _)| c).collect();
    let parts: Vec<&str> = input.split_whitespace().collect();
    let trailing_space = input.ends_with(' ');
    match (parts.as_slice(), trailing_space) {
        ([], _) => names.iter().map(|c| c.to_string()).collect(),
        ([p], false) => names.iter().filter(|c| c.starts_with(p)).map(|c| c.to_string()).collect(),
        ([cmd], true) | ([cmd, _], false) => {
            let prefix = if trailing_space { "" } else { parts[1] };
            let options: Vec<String> = match *cmd {
                "new" => app.specs.iter().map(|s| s.name.clone()).collect(),
                "theme" => Theme::names(),
                "eval" => vec!["best".into(), "last".into()],
                "export" => vec!["csv".into(), "png".into()],
                "sort" => SortKey::ALL.iter().map(|k| k.label().replace(' ', "")).collect(),
                _ => vec![],
            };
            options.into_iter().filter(|o| o.starts_with(prefix)).map(|o| format!("{cmd} {o}")).collect()
        }
        _ => vec![],
    }
}
