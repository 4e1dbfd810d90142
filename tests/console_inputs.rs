//! What a first-time user types into the console: the new-run form, Tab completion, marks,
//! quitting while runs train, the archive; and what the screen tells them back: why a run
//! failed, the keys of the tab they are on, the Explain view's method and its one row of keys.

mod common;

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use vigil::engine::runner::{RunnerCommand, RunnerDeps, RunnerEvent};
use vigil::store::RunStatus;
use vigil::tui::app::{App, Confirm, DetailTab, Effect, Mode, Msg, View};
use vigil::tui::theme::ColorDepth;

use common::{render, text};

fn key(app: &mut App, code: KeyCode) -> Vec<Effect> {
    app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn ch(app: &mut App, c: char) -> Vec<Effect> {
    key(app, KeyCode::Char(c))
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        ch(app, c);
    }
}

fn command_input(app: &App) -> String {
    match &app.mode {
        Mode::Command { input, .. } => input.clone(),
        other => panic!("not on the command line: {other:?}"),
    }
}

fn with_specs() -> App {
    let specs: Vec<_> = vigil::ml::spec::list(std::path::Path::new("models"))
        .into_iter()
        .filter_map(|e| e.spec.ok())
        .collect();
    App::new(common::theme(ColorDepth::TrueColor), vigil::tui::keymap::Keymap::defaults(), specs)
}

#[test]
fn digits_typed_into_a_new_form_set_the_epochs() {
    let mut app = with_specs();
    ch(&mut app, 'n');
    typed(&mut app, "5");
    let effects = app.update(Msg::Key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL)));
    let [Effect::Runner(RunnerCommand::Start(spec))] = effects.as_slice() else { panic!("{effects:?}") };
    assert_eq!(spec.epochs, 5, "the digit went into the epochs field, replacing its default");
}

#[test]
fn tab_completes_the_common_prefix_then_cycles() {
    let mut app = common::app();
    ch(&mut app, ':');
    typed(&mut app, "arc");
    key(&mut app, KeyCode::Tab);
    assert_eq!(command_input(&app), "archive", "archive and archived share \"archive\"");
    key(&mut app, KeyCode::Tab);
    assert_eq!(command_input(&app), "archive");
    key(&mut app, KeyCode::Tab);
    assert_eq!(command_input(&app), "archived", "repeated Tab cycles");
    key(&mut app, KeyCode::Tab);
    assert_eq!(command_input(&app), "archive", "and comes round again");
    key(&mut app, KeyCode::BackTab);
    assert_eq!(command_input(&app), "archived", "Shift-Tab goes back");

    // Typing starts a new completion from what is typed.
    key(&mut app, KeyCode::Esc);
    ch(&mut app, ':');
    typed(&mut app, "se");
    let all = vigil::tui::app::completions("se", &app);
    assert!(all.len() >= 2, "{all:?}");
    let mut seen = Vec::new();
    for _ in 0..all.len() {
        key(&mut app, KeyCode::Tab);
        seen.push(command_input(&app));
    }
    assert_eq!(seen, all, "each Tab shows the next of the candidates of \"se\"");
    key(&mut app, KeyCode::Tab);
    assert_eq!(command_input(&app), all[0]);

    // A single candidate is taken whole.
    key(&mut app, KeyCode::Esc);
    ch(&mut app, ':');
    typed(&mut app, "comp");
    key(&mut app, KeyCode::Tab);
    assert_eq!(command_input(&app), "compare");
}

#[test]
fn space_marks_and_moves_on_as_the_help_says() {
    let mut app = common::app();
    ch(&mut app, '2');
    let first = app.selected_id().unwrap();
    ch(&mut app, ' ');
    assert!(app.marked.contains(&first));
    assert_ne!(app.selected_id().unwrap(), first, "space moves to the next run, to mark several in a row");
    let help = app.keymap.help();
    let (_, what) = help.iter().find(|(k, _)| k == "space").unwrap();
    assert!(what.contains("then move to the next"), "{what}");
}

#[test]
fn quitting_while_runs_train_can_leave_them_training() {
    let mut app = common::app();
    app.update(Msg::Runner(RunnerEvent::Load { active: 2, queued: 0 }));
    ch(&mut app, 'q');
    assert_eq!(app.mode, Mode::Confirm(Confirm::Quit { active: 2 }));
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("l: leave them training") && t.contains("s / y: stop them"), "{t}");
    assert_eq!(ch(&mut app, 'l'), vec![Effect::Quit { stop_runs: false }]);
    assert!(app.quit);

    let mut app = common::app();
    app.update(Msg::Runner(RunnerEvent::Load { active: 1, queued: 0 }));
    ch(&mut app, 'q');
    assert!(text(&render(&mut app, 80, 24)).contains("1 run is training"), "one run, in the singular");
    key(&mut app, KeyCode::Esc);
    assert!(!app.quit && app.mode == Mode::Normal);
}

#[test]
fn archived_runs_are_listed_and_restored() {
    let mut app = common::app();
    assert_eq!(ch(&mut app, 'u'), vec![Effect::Runner(RunnerCommand::ListArchived)]);
    let old = common::info("digits-mlp-old111", RunStatus::Completed, 3, 3, 30);
    app.update(Msg::Runner(RunnerEvent::ArchiveList(vec![old])));
    assert!(matches!(app.mode, Mode::Archive(_)));
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("Archived runs (1)") && t.contains("digits-mlp-old111"), "{t}");
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        vec![Effect::Runner(RunnerCommand::Restore("digits-mlp-old111".into()))]
    );
    // An empty archive says so instead of opening an empty list.
    app.update(Msg::Runner(RunnerEvent::ArchiveList(vec![])));
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.status.as_ref().unwrap().text.contains("no archived runs"));
}

/// The runner's answers, collected from its sink.
fn runner(
    store: &vigil::store::RunStore,
) -> (vigil::engine::Handle<RunnerCommand>, std::sync::mpsc::Receiver<RunnerEvent>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle =
        vigil::engine::runner::spawn(RunnerDeps { store: store.clone(), concurrency: 1 }, move |e| {
            tx.send(e).is_ok()
        })
        .unwrap();
    (handle, rx)
}

fn next_event(
    rx: &std::sync::mpsc::Receiver<RunnerEvent>,
    want: impl Fn(&RunnerEvent) -> bool,
) -> RunnerEvent {
    loop {
        let e = rx.recv_timeout(Duration::from_secs(60)).expect("the runner answers");
        if want(&e) {
            return e;
        }
    }
}

#[test]
fn the_runner_archives_lists_and_restores_and_checks_data_before_creating_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = vigil::store::RunStore::new(dir.path());
    let run = common::trained_logreg(&store, 1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let (h, rx) = runner(&store);
        h.send(RunnerCommand::Archive(run.id.clone()));
        next_event(&rx, |e| matches!(e, RunnerEvent::Archived(_)));
        assert!(store.list().is_empty());
        h.send(RunnerCommand::ListArchived);
        let RunnerEvent::ArchiveList(list) = next_event(&rx, |e| matches!(e, RunnerEvent::ArchiveList(_)))
        else {
            unreachable!()
        };
        assert_eq!(list.iter().map(|i| i.id.to_string()).collect::<Vec<_>>(), vec![run.id.to_string()]);
        h.send(RunnerCommand::Restore(run.id.clone()));
        next_event(&rx, |e| matches!(e, RunnerEvent::Restored(_)));
        assert_eq!(store.list().len(), 1, "the run is back in the store");
        h.send(RunnerCommand::Restore(run.id.clone()));
        let RunnerEvent::Refused(why) = next_event(&rx, |e| matches!(e, RunnerEvent::Refused(_))) else {
            unreachable!()
        };
        assert!(why.contains("cannot restore"), "{why}");

        // A spec whose data file is bad is refused, and leaves no failed run behind.
        let csv = dir.path().join("bad.csv");
        std::fs::write(&csv, "a,b,label\n1,2,x\n3,oops,y\n").unwrap();
        let mut spec = vigil::ml::spec::resolve("digits-logreg", std::path::Path::new("models")).unwrap().0;
        spec.data.source = vigil::ml::spec::DataSource::Csv {
            path: csv.to_str().unwrap().into(),
            label: "label".into(),
            header: None,
        };
        spec.preprocess = vec![];
        h.send(RunnerCommand::Start(Box::new(spec)));
        let RunnerEvent::Refused(why) =
            next_event(&rx, |e| matches!(e, RunnerEvent::Refused(_) | RunnerEvent::Queued(_)))
        else {
            panic!("a bad data file was queued")
        };
        assert!(why.contains("oops") && why.contains("cannot start"), "{why}");
        assert_eq!(store.list().len(), 1, "no failed run was created");
        h.finish().await;
    });
}

#[test]
fn a_failed_run_says_why_in_its_detail() {
    let mut app = common::app();
    let mut info = common::info("digits-cnn-bad999", RunStatus::Failed, 0, 10, 0);
    info.failure = Some("/data/x.csv: line 3, column \"b\": \"oops\" is not a number".into());
    app.update(Msg::Store(vigil::engine::follow::StoreUpdate::Run(Box::new(common::bare_feed(info)))));
    let i = app.visible().iter().position(|r| r.info.id.as_str() == "digits-cnn-bad999").unwrap();
    app.cursor = i;
    app.pinned = true;
    app.view = View::Detail;
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("failed: /data/x.csv: line 3"), "{t}");
}

#[test]
fn the_evaluation_tab_shows_its_own_keys_not_the_charts() {
    let mut app = common::app();
    app.view = View::Detail;
    let curves = text(&render(&mut app, 120, 30));
    let footer = |t: &str| t.lines().last().unwrap_or("").to_string();
    assert!(footer(&curves).contains("smooth"), "{curves}");
    app.detail.tab = DetailTab::Evaluation;
    let t = text(&render(&mut app, 120, 30));
    assert!(!footer(&t).contains("smooth") && footer(&t).contains("evaluate"), "{}", footer(&t));
}

#[test]
fn explain_starts_with_a_method_that_ranks_tokens_and_shows_its_keys_once() {
    let state = vigil::tui::state::explain::ExplainState::default();
    assert_eq!(state.method_name(), "ig");
    let mut app = common::app();
    ch(&mut app, '7');
    for m in common::explain_events() {
        app.update(m);
    }
    let t = text(&render(&mut app, 160, 48));
    assert_eq!(t.matches("requests").count(), 1, "one row of keys:\n{t}");
}

#[test]
fn bench_ui_times_every_view() {
    let results = vigil::bench::render_frames(80, 24, 2, 200, 1);
    let views: Vec<&str> = results.iter().map(|r| r.view.as_str()).collect();
    let all: Vec<&str> = View::ALL.iter().map(|v| v.title()).collect();
    assert_eq!(views, all);
}
