//! The console features users asked for (issue 19): API keys managed from the Service view with
//! a try-it pane whose request the running service accepts; panels with focus, scroll and zoom;
//! `/` search in the help and the Logs view; the runs' columns of hyperparameters against
//! metrics with tags and notes; the machine's history kept across restarts. State through
//! `App::update` and the headless console, the screen through snapshots.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use vigil::serve::keys::KeyStore;
use vigil::store::RunStore;
use vigil::tui::app::{App, Effect, Mode, Msg, SortKey, View};
use vigil::tui::theme::ColorDepth;

use common::{render, text};

fn key(app: &mut App, code: KeyCode) -> Vec<Effect> {
    app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn ch(app: &mut App, c: char) -> Vec<Effect> {
    key(app, KeyCode::Char(c))
}

fn press(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn options(store: RunStore) -> vigil::tui::ConsoleOptions {
    common::console_options(store, Duration::from_millis(250))
}

fn new_app() -> App {
    App::new(common::theme(ColorDepth::TrueColor), vigil::tui::keymap::Keymap::defaults(), vec![])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn http(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

// ---- keys and try it ------------------------------------------------------------------------

#[test]
fn keys_are_created_shown_once_and_revoked_in_the_key_file_vigil_keys_uses() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let opts = options(store.clone());
    runtime().block_on(async {
        let mut h = vigil::tui::Headless::start(&opts, new_app()).unwrap();
        h.update(ctrl('k'));
        assert_eq!(h.app.view, View::Service, "ctrl-k opens the Service view's keys panel");
        assert!(h.app.keys.open && h.app.keys.keys.is_empty());
        h.update(press(KeyCode::Char('n')));
        assert!(h.app.keys.form.is_some(), "n opens the create form");
        for c in "ci-bot".chars() {
            h.update(press(KeyCode::Char(c)));
        }
        // A wrong scope is named in the form and creates nothing.
        h.update(press(KeyCode::Tab));
        for _ in 0.."predict".len() {
            h.update(press(KeyCode::Backspace));
        }
        for c in "predict,root".chars() {
            h.update(press(KeyCode::Char(c)));
        }
        h.update(ctrl('s'));
        let err = h.app.keys.form.as_ref().and_then(|f| f.error.clone()).unwrap_or_default();
        assert!(err.contains("scopes") && err.contains("root"), "{err}");
        assert!(KeyStore::of(&store).list().unwrap().is_empty());
        for _ in 0..",root".len() {
            h.update(press(KeyCode::Backspace));
        }
        h.update(press(KeyCode::Tab));
        for _ in 0.."100".len() {
            h.update(press(KeyCode::Backspace));
        }
        h.update(press(KeyCode::Char('5')));
        h.update(ctrl('s'));
        // Shown once: the key itself, which the file does not hold.
        let (name, secret) = h.app.keys.secret.clone().expect("the new key is shown");
        assert_eq!(name, "ci-bot");
        let buf = render(&mut h.app, 80, 24);
        assert!(text(&buf).contains(&secret[..30]), "{}", text(&buf));
        let stored = KeyStore::of(&store).list().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].rate.map(|r| r.per_second), Some(5));
        assert_eq!(stored[0].hash_bytes().unwrap(), vigil::serve::keys::hash_key(&secret));
        assert!(!std::fs::read_to_string(KeyStore::of(&store).path()).unwrap().contains(&secret));
        // Any key dismisses it, and it is gone: the list shows the prefix only.
        h.update(press(KeyCode::Char('x')));
        assert!(h.app.keys.secret.is_none());
        let t = text(&render(&mut h.app, 80, 24));
        assert!(!t.contains(&secret[..20]) && t.contains(&format!("{}…", &secret[..12])), "{t}");
        // Revoking asks first; anything but y keeps the key.
        h.update(press(KeyCode::Char('d')));
        assert!(h.app.keys.confirm_revoke.is_some());
        h.update(press(KeyCode::Char('n')));
        assert!(KeyStore::of(&store).list().unwrap()[0].revoked.is_none());
        h.update(press(KeyCode::Char('d')));
        h.update(press(KeyCode::Char('y')));
        assert!(KeyStore::of(&store).list().unwrap()[0].revoked.is_some(), "revoked in the file");
        assert_eq!(vigil::tui::state::keys::status_word(&h.app.keys.keys[0]), "revoked");
        // Esc closes the panel and keys are the view's again.
        h.update(press(KeyCode::Esc));
        assert!(!h.app.keys.open);
        h.finish().await;
    });
}

#[test]
fn the_try_it_request_is_accepted_by_the_running_service() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = common::trained_logreg(&store, 1);
    let (_, secret) = KeyStore::of(&store)
        .create(vigil::serve::keys::NewKey {
            name: "tester".into(),
            scopes: vec![vigil::serve::keys::Scope::Predict],
            expires_in: None,
            rate: None,
            budget: None,
            output: Default::default(),
            guard: Default::default(),
            generate: Default::default(),
        })
        .unwrap();
    let opts = options(store.clone());
    runtime().block_on(async {
        let mut h = vigil::tui::Headless::start(&opts, new_app()).unwrap();
        assert!(h.run_until(Duration::from_secs(20), |a| !a.runs.is_empty()).await);
        h.update(press(KeyCode::Char('8')));
        h.update(press(KeyCode::Char('y')));
        let t = text(&render(&mut h.app, 80, 24));
        assert!(t.contains("nothing served from this console"), "{t}");
        // The service as `vigil serve` runs it (on a free port; the console's own is 7878, which
        // another console on this machine may hold), known to the console as its own.
        let served = common::cli::serve(dir.path(), &run.id);
        let (url, id) = (format!("http://{}", served.addr), run.id.clone());
        h.update(Msg::Service(vigil::engine::service::ServiceEvent::Started {
            url,
            run: id,
            models: vec!["digits-logreg 0123456789ab".into()],
            warnings: vec![],
        }));
        // The pane was open: it follows the service without another key.
        let sample = h.app.keys.try_it.sample.clone().expect("a sample for the served model");
        assert_eq!(sample.model, "digits-logreg");
        let curl = sample.curl();
        assert!(curl.starts_with("curl -s http://127.0.0.1:") && curl.contains("$VIGIL_KEY"), "{curl}");
        assert!(curl.contains("/v1/models/digits-logreg/predict"), "{curl}");
        let file = sample.file.clone().unwrap();
        let body = std::fs::read_to_string(&file).unwrap();
        assert!(body.starts_with("{\"inputs\":[["), "{body}");
        let t = text(&render(&mut h.app, 160, 48));
        assert!(t.contains("Try it") && t.contains("try-it/digits-logreg.json"), "{t}");
        // What the pane says to send, sent: the service answers with a prediction.
        let addr = sample.url.trim_start_matches("http://").to_string();
        let path = sample.route().split_once(&addr).unwrap().1.to_string();
        let reply = tokio::task::spawn_blocking(move || {
            http(
                &addr,
                &format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\nContent-Type: \
                     application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            )
        })
        .await
        .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("\"label\""), "{reply}");
        drop(served);
        h.finish().await;
    });
}

// ---- panels and search ----------------------------------------------------------------------

#[test]
fn tab_moves_the_focus_between_panels_and_z_zooms_the_focused_one() {
    let mut app = common::app_with(ColorDepth::TrueColor);
    app.update(Msg::System(common::gpu_sample()));
    ch(&mut app, '6');
    assert_eq!(vigil::tui::state::panes::focused(&app, View::System), Some("CPU"));
    key(&mut app, KeyCode::Tab);
    assert_eq!(vigil::tui::state::panes::focused(&app, View::System), Some("History"));
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(vigil::tui::state::panes::focused(&app, View::System), Some("Run processes"), "wraps");
    assert_eq!(app.view, View::System, "Tab stays in the view (it is the Detail's tab key elsewhere)");
    ch(&mut app, 'z');
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("Run processes (2)") && !t.contains("CPU 54%"), "only the zoomed panel: {t}");
    insta::assert_snapshot!("system_zoomed_processes_80x24", t);
    // The focused panel scrolls: the first process goes off the top.
    ch(&mut app, 'j');
    let t = text(&render(&mut app, 80, 24));
    assert!(!t.contains("4242") && t.contains("5151"), "{t}");
    ch(&mut app, 'z');
    assert!(text(&render(&mut app, 80, 24)).contains("CPU 54%"), "z again comes back");

    // The Service view's panels: the access log has the focus first (and its own scroll).
    ch(&mut app, '8');
    assert_eq!(vigil::tui::state::panes::focused(&app, View::Service), Some("Access log"));
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    assert_eq!(vigil::tui::state::panes::focused(&app, View::Service), Some("Keys & alerts"));
    ch(&mut app, 'z');
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("Keys") && t.contains("Alerts") && !t.contains("Access log"), "{t}");
    ch(&mut app, 'z');
    assert!(text(&render(&mut app, 80, 24)).contains("Access log"));
    // Tab in the Detail view still changes its tab.
    ch(&mut app, '3');
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.detail.tab, vigil::tui::app::DetailTab::Evaluation);
}

#[test]
fn slash_searches_the_help_and_n_steps_through_matches() {
    let mut app = common::app();
    ch(&mut app, '8');
    ch(&mut app, '?');
    let lines = vigil::tui::state::panes::help_lines(&app);
    assert_eq!(lines[0], "Service", "the current view's keys come first");
    ch(&mut app, '/');
    for c in "zoom".chars() {
        ch(&mut app, c);
    }
    key(&mut app, KeyCode::Enter);
    let found = app.panes.help.matches(&lines);
    assert!(found.len() >= 2, "zoom matches the pane key and the chart zoom: {found:?}");
    let Mode::Help { scroll: first } = app.mode else { panic!("help stays open") };
    ch(&mut app, 'n');
    let Mode::Help { scroll: second } = app.mode else { panic!() };
    assert!(second > first, "n moves down to the next match ({first} -> {second})");
    ch(&mut app, 'N');
    let Mode::Help { scroll: back } = app.mode else { panic!() };
    assert_eq!(back, first);
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("/zoom") && t.contains("found"), "{t}");
    insta::assert_snapshot!("help_search_80x24", t);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn slash_searches_the_log_and_n_moves_to_the_next_match() {
    let mut app = common::app();
    ch(&mut app, '5');
    let lines = vigil::tui::state::panes::log_lines(&app);
    assert!(lines.len() > 3, "{lines:?}");
    let word = "checkpoint";
    let want: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.contains(word)).map(|(i, _)| i).collect();
    assert!(!want.is_empty(), "{lines:?}");
    ch(&mut app, '/');
    assert_eq!(app.view, View::Logs, "/ searches the log here instead of filtering runs");
    for c in word.chars() {
        ch(&mut app, c);
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.logs.scroll, lines.len() - 1 - want[0], "the first match is shown");
    if want.len() > 1 {
        ch(&mut app, 'n');
        assert_eq!(app.logs.scroll, lines.len() - 1 - want[1]);
        ch(&mut app, 'N');
        assert_eq!(app.logs.scroll, lines.len() - 1 - want[0]);
    }
    assert!(!matches!(app.mode, Mode::Form(_)), "n is next match while a search is set, not new run");
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains(&format!("/{word} {} match", want.len())), "{t}");
    key(&mut app, KeyCode::Esc);
    assert!(app.panes.logs.query.is_empty(), "Esc clears the search first");
    assert_eq!(app.view, View::Logs);
}

// ---- columns, tags and notes ----------------------------------------------------------------

#[test]
fn columns_mode_sorts_runs_by_any_hyperparameter_or_metric() {
    let mut app = common::app();
    ch(&mut app, '2');
    ch(&mut app, 'C');
    assert!(app.table.on);
    let cols = vigil::tui::state::table::columns(&app);
    let names: Vec<String> = cols.iter().map(|c| c.name()).collect();
    // The usual hyperparameters first (the model family, the learning rate...), the metrics after.
    assert_eq!(names[..3], ["model".to_string(), "lr".to_string(), "batch".to_string()], "{names:?}");
    assert!(names.contains(&"hidden".to_string()) && !names.contains(&"seed".to_string()), "{names:?}");
    assert!(names.contains(&"batch".to_string()) && names.contains(&"test acc".to_string()), "{names:?}");
    // Pick `lr` and sort by it: low to high, then reversed with a second o.
    key(&mut app, KeyCode::Right);
    ch(&mut app, 'o');
    assert_eq!(app.sort, SortKey::Column);
    let order =
        |app: &App| app.visible().iter().map(|r| r.params["optimizer.lr"].clone()).collect::<Vec<_>>();
    assert_eq!(order(&app), ["0.002", "0.003", "50"]);
    ch(&mut app, 'o');
    assert_eq!(order(&app), ["50", "0.003", "0.002"]);
    // A metric sorts high to low first.
    let test_acc = names.iter().position(|n| n == "test acc").unwrap();
    for _ in app.table.column..test_acc {
        key(&mut app, KeyCode::Right);
    }
    ch(&mut app, 'o');
    assert_eq!(app.visible()[0].info.id, "digits-mlp-d4e5f6", "the only run with a test accuracy");
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let t = text(&render(&mut app, w, h));
        assert!(t.contains("columns") && t.contains("test acc↓"), "{t}");
        insta::assert_snapshot!(format!("runs_columns_{w}x{h}"), t);
    }
    ch(&mut app, 'C');
    assert!(!app.table.on && app.sort != SortKey::Column, "back to the usual table and sort");
}

#[test]
fn tags_and_notes_from_the_console_are_saved_shown_and_filtered() {
    let mut app = common::app();
    ch(&mut app, '2');
    let id = app.selected_id().unwrap();
    ch(&mut app, 'T');
    assert!(matches!(&app.mode, Mode::Command { input, .. } if input == "tag "), "T opens :tag");
    for c in "baseline keep".chars() {
        ch(&mut app, c);
    }
    let effects = key(&mut app, KeyCode::Enter);
    let Some(Effect::SaveNotes(saved, notes)) = effects.first() else { panic!("{effects:?}") };
    assert_eq!((saved, notes.tags.clone()), (&id, vec!["baseline".to_string(), "keep".to_string()]));
    ch(&mut app, ':');
    for c in "note lr too high".chars() {
        ch(&mut app, c);
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.runs[&id].notes.note.as_deref(), Some("lr too high"));
    ch(&mut app, ':');
    for c in "tag bad tag!".chars() {
        ch(&mut app, c);
    }
    assert!(key(&mut app, KeyCode::Enter).is_empty(), "a bad tag changes nothing");
    assert!(app.status.as_ref().unwrap().text.contains("must be"), "{:?}", app.status);
    // Shown in the columns and the detail; filtered with tag:NAME.
    ch(&mut app, 'C');
    let t = text(&render(&mut app, 160, 48));
    assert!(t.contains("#baseline #keep") && t.contains("note: lr too high"), "{t}");
    ch(&mut app, '3');
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    let t = text(&render(&mut app, 160, 48));
    assert!(t.contains("tags #baseline #keep") && t.contains("note lr too high"), "{t}");
    ch(&mut app, ':');
    for c in "filter tag:baseline".chars() {
        ch(&mut app, c);
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.visible().len(), 1);
    assert_eq!(app.visible()[0].info.id, id);
}

#[test]
fn tags_written_by_the_console_reach_the_disk_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = common::trained_logreg(&store, 1);
    let opts = options(store.clone());
    runtime().block_on(async {
        let mut h = vigil::tui::Headless::start(&opts, new_app()).unwrap();
        assert!(h.run_until(Duration::from_secs(20), |a| !a.runs.is_empty()).await);
        h.update(press(KeyCode::Char(':')));
        for c in "tag from-console".chars() {
            h.update(press(KeyCode::Char(c)));
        }
        h.update(press(KeyCode::Enter));
        h.finish().await;
    });
    let notes = vigil::store::notes::RunNotes::load(&run).unwrap();
    assert_eq!(notes.tags, vec!["from-console"]);
    // The CLI reads and adds to the same file; the follower would bring it back to a console.
    let out = common::cli::vigil(dir.path())
        .args(["tag", &run.id, "cli", "--note", "checked by hand"])
        .assert()
        .success();
    let said = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(said.contains("#cli #from-console; note: checked by hand"), "{said}");
    let v = common::cli::json(common::cli::vigil(dir.path()).args(["runs", "--tag", "cli", "--json"]));
    assert_eq!(v[0]["tags"], serde_json::json!(["cli", "from-console"]));
    assert_eq!(v[0]["note"], "checked by hand");
    common::cli::vigil(dir.path())
        .args(["runs", "--tag", "nope"])
        .assert()
        .success()
        .stdout(predicates::str::contains("no run is tagged"));
    common::cli::vigil(dir.path())
        .args(["tag", &run.id, "two words"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("must be 1 to 32"));
    common::cli::vigil(dir.path()).args(["tag", "no-such-run", "x"]).assert().code(2);
}

// ---- the machine's history ------------------------------------------------------------------

#[test]
fn the_system_history_of_an_earlier_session_is_loaded_at_start() {
    use vigil::store::system_log::{SystemLog, SystemPoint};
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let now = vigil::engine::system::unix_now();
    let log = SystemLog::new(dir.path());
    for i in 0..60 {
        let t = now - 3600.0 + i as f64 * 10.0;
        log.append(&SystemPoint { t, cpu: 80.0, mem_used: 1 << 30, mem_total: 4 << 30, gpus: vec![] })
            .unwrap();
    }
    // A point from yesterday is past the window the console loads.
    log.append(&SystemPoint { t: now - 86_400.0, cpu: 1.0, mem_used: 0, mem_total: 1, gpus: vec![] })
        .unwrap();
    let opts = options(store);
    runtime().block_on(async {
        let mut h = vigil::tui::Headless::start(&opts, new_app()).unwrap();
        assert_eq!(h.app.system_points.past.len(), 60);
        assert!(h.run_until(Duration::from_secs(10), |a| !a.system_points.live.is_empty()).await);
        assert!(h.app.system_points.span_s() > 3000.0, "an hour of history after a restart");
        h.update(press(KeyCode::Char('6')));
        let t = text(&render(&mut h.app, 80, 24));
        assert!(t.contains("stored"), "{t}");
        h.finish().await;
    });
    // This session recorded its first point too.
    assert_eq!(log.load(now - 60.0).len(), 1);
}
