//! The console without a terminal: state transitions fed as messages, and every view rendered
//! from fixture state into ratatui's TestBackend at 80x24 and 160x48, compared with insta
//! snapshots, with colours checked on cells (snapshots hold only text).

mod common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::buffer::Buffer;
use vigil::engine::follow::StoreUpdate;
use vigil::engine::runner::{RunnerCommand, RunnerEvent};
use vigil::store::CheckpointKind;
use vigil::tui::app::{App, Confirm, DetailTab, Effect, Metric, Mode, Msg, View, XAxis};
use vigil::tui::theme::ColorDepth;

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

use common::{render, text};

/// Finds the first cell where `needle` starts.
fn find(buf: &Buffer, needle: &str) -> Option<(u16, u16)> {
    let w = buf.area.width;
    for y in 0..buf.area.height {
        let row: String = (0..w).map(|x| buf[(x, y)].symbol().chars().next().unwrap_or(' ')).collect();
        if let Some(i) = row.find(needle) {
            return Some((row[..i].chars().count() as u16, y));
        }
    }
    None
}

// ---- state transitions ----------------------------------------------------------------------

#[test]
fn number_keys_and_commands_switch_views() {
    let mut app = common::app();
    for (k, v) in [
        ('2', View::Runs),
        ('3', View::Detail),
        ('4', View::Compare),
        ('5', View::Logs),
        ('6', View::System),
        ('1', View::Overview),
    ] {
        ch(&mut app, k);
        assert_eq!(app.view, v);
    }
    ch(&mut app, ':');
    typed(&mut app, "logs");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Logs);
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn every_view_has_its_command_and_serve_is_one() {
    let mut app = common::app();
    for (cmd, v) in [("service", View::Service), ("security", View::Security), ("explain", View::Explain)] {
        ch(&mut app, ':');
        typed(&mut app, cmd);
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.view, v, ":{cmd}");
    }
    ch(&mut app, ':');
    typed(&mut app, "serve");
    let effects = key(&mut app, KeyCode::Enter);
    assert!(matches!(effects.as_slice(), [Effect::Service(_)]), "{effects:?}");
}

/// A view made of nothing but its state struct and one table row gets a key, a footer hint, a
/// `:` command and a help line: the footer, the commands and the help are read from the tables.
#[test]
fn a_view_is_its_state_and_its_table() {
    use vigil::tui::keymap::Action;
    use vigil::tui::state::{Binding, ViewState};
    struct Pings;
    const ROWS: &[Binding] = &[Binding::new(&[Action::NextAttack]).hint("ping").commands(&["ping"])];
    impl ViewState for Pings {
        fn title(&self) -> &'static str {
            "Pings"
        }
        fn bindings(&self) -> &'static [Binding] {
            ROWS
        }
        fn handle(&mut self, action: Action, _app: &mut App) -> Option<Vec<Effect>> {
            (action == Action::NextAttack).then(|| vec![Effect::ExportPng])
        }
    }
    let mut app = common::app();
    let v = app.register_view(Box::new(Pings));
    app.show(v);
    // The key: `A` (NextAttack's default key) reaches the view.
    assert_eq!(ch(&mut app, 'A'), vec![Effect::ExportPng]);
    // The footer hint.
    let screen = text(&render(&mut app, 80, 24));
    assert!(screen.lines().last().unwrap().contains("A ping"), "{screen}");
    // The command, offered by completion too.
    assert_eq!(vigil::tui::app::completions("pin", &app), vec!["ping".to_string()]);
    ch(&mut app, ':');
    typed(&mut app, "ping");
    assert_eq!(key(&mut app, KeyCode::Enter), vec![Effect::ExportPng]);
    // The help line, in a group of its own (first: it is the active view).
    let help = vigil::tui::state::help(&app);
    assert_eq!(help[0], ("Pings", vec![("A".to_string(), Action::NextAttack.describe())]));
    ch(&mut app, '?');
    assert!(text(&render(&mut app, 80, 24)).contains("Pings"));
}

#[test]
fn every_action_has_a_line_in_the_help_and_themes_load_by_effect() {
    use strum::IntoEnumIterator;
    use vigil::tui::keymap::Action;
    let mut app = common::app();
    let help = vigil::tui::state::help(&app);
    for a in Action::iter().filter(|a| *a != Action::Nothing) {
        assert!(help.iter().any(|(_, lines)| lines.iter().any(|(_, d)| *d == a.describe())), "{a:?}");
    }
    // `t` asks the event loop to load the next theme; the app only takes what comes back.
    let effects = ch(&mut app, 't');
    let [Effect::LoadTheme(name)] = effects.as_slice() else { panic!("{effects:?}") };
    let theme = vigil::tui::theme::Theme::find(name, app.theme.depth).unwrap();
    app.update(Msg::Theme(Ok(Box::new(theme))));
    assert_eq!(&app.theme.name, name);
    app.update(Msg::Theme(Err("no theme named \"nope\"".into())));
    assert!(app.status.as_ref().unwrap().text.contains("nope"));
}

#[test]
fn command_line_completes_with_tab() {
    let mut app = common::app();
    ch(&mut app, ':');
    typed(&mut app, "com");
    key(&mut app, KeyCode::Tab);
    assert!(matches!(&app.mode, Mode::Command { input, .. } if input == "compare"), "{:?}", app.mode);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Compare);
    ch(&mut app, ':');
    typed(&mut app, "frobnicate");
    key(&mut app, KeyCode::Enter);
    assert!(app.status.as_ref().unwrap().text.contains("unknown command :frobnicate"));
}

#[test]
fn sorting_newest_first_then_by_best_validation() {
    let mut app = common::app();
    let ids = |app: &App| app.visible().iter().map(|r| r.info.id.clone()).collect::<Vec<_>>();
    // Fixture creation times follow id length: all equal, so ids break the tie (descending).
    assert_eq!(ids(&app)[0], "digits-mlp-d4e5f6");
    ch(&mut app, ':');
    typed(&mut app, "sort epoch");
    key(&mut app, KeyCode::Enter);
    assert_eq!(ids(&app), vec!["digits-mlp-d4e5f6", "digits-cnn-a1b2c3", "digits-mlp-0f0f0f"]);
    ch(&mut app, 'O');
    assert_eq!(ids(&app), vec!["digits-mlp-0f0f0f", "digits-cnn-a1b2c3", "digits-mlp-d4e5f6"]);
}

#[test]
fn filter_by_text_status_spec_and_parameters() {
    let mut app = common::app();
    let count = |app: &mut App, f: &str| {
        ch(app, '/');
        key(app, KeyCode::Esc);
        ch(app, '/');
        typed(app, f);
        key(app, KeyCode::Enter);
        app.visible().len()
    };
    assert_eq!(count(&mut app, "cnn"), 1);
    assert_eq!(count(&mut app, "status:failed"), 1);
    assert_eq!(count(&mut app, "spec:digits-mlp"), 2);
    assert_eq!(count(&mut app, "lr<1"), 2);
    assert_eq!(count(&mut app, "hidden=[256, 128]"), 0, "a space splits words");
    assert_eq!(count(&mut app, "lr=50 status:failed"), 1);
    assert_eq!(app.view, View::Runs);
    // Esc in normal mode clears the filter.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.visible().len(), 3);
}

#[test]
fn marks_choose_what_compare_overlays() {
    let mut app = common::app();
    ch(&mut app, '2');
    assert_eq!(app.compared().len(), 3, "without marks, compare shows the visible runs");
    ch(&mut app, ' ');
    ch(&mut app, ' ');
    assert_eq!(app.marked.len(), 2);
    assert_eq!(app.compared().len(), 2);
    key(&mut app, KeyCode::Esc);
    assert!(app.marked.is_empty());
}

#[test]
fn pause_stop_evaluate_and_delete_ask_the_runner() {
    let mut app = common::app();
    ch(&mut app, '2');
    // Cursor on the completed run (first): pausing says it completed; evaluating asks.
    assert!(ch(&mut app, 'p').is_empty());
    assert_eq!(
        ch(&mut app, 'e'),
        vec![Effect::Runner(RunnerCommand::Evaluate("digits-mlp-d4e5f6".into(), CheckpointKind::Best))]
    );
    // Down to the failed run: it resumes from its checkpoint, and can be archived.
    ch(&mut app, 'j');
    assert_eq!(ch(&mut app, 'p'), vec![Effect::Runner(RunnerCommand::Resume("digits-mlp-0f0f0f".into()))]);
    ch(&mut app, 'd');
    assert_eq!(app.mode, Mode::Confirm(Confirm::Delete("digits-mlp-0f0f0f".into())));
    assert_eq!(ch(&mut app, 'a'), vec![Effect::Runner(RunnerCommand::Archive("digits-mlp-0f0f0f".into()))]);
    // Down to the running CNN: pause, and stop after confirming.
    ch(&mut app, 'j');
    assert_eq!(ch(&mut app, 'p'), vec![Effect::Runner(RunnerCommand::Pause("digits-cnn-a1b2c3".into()))]);
    assert!(ch(&mut app, 'x').is_empty());
    assert_eq!(app.mode, Mode::Confirm(Confirm::Stop("digits-cnn-a1b2c3".into())));
    assert_eq!(ch(&mut app, 'y'), vec![Effect::Runner(RunnerCommand::Stop("digits-cnn-a1b2c3".into()))]);
    // Deleting a training run is refused.
    ch(&mut app, 'd');
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.status.as_ref().unwrap().text.contains("stop it first"));
}

#[test]
fn quitting_with_runs_active_asks_first() {
    let mut app = common::app();
    app.update(Msg::Runner(RunnerEvent::Load { active: 1, queued: 0 }));
    assert!(ch(&mut app, 'q').is_empty());
    assert_eq!(app.mode, Mode::Confirm(Confirm::Quit { active: 1 }));
    key(&mut app, KeyCode::Esc);
    assert!(!app.quit);
    ch(&mut app, 'q');
    assert_eq!(ch(&mut app, 'y'), vec![Effect::Quit { stop_runs: true }]);
    assert!(app.quit);

    let mut idle = common::app();
    assert_eq!(ch(&mut idle, 'q'), vec![Effect::Quit { stop_runs: false }]);
}

#[test]
fn chart_toggles_zoom_and_cursor() {
    let mut app = common::app();
    ch(&mut app, '3');
    ch(&mut app, 'm');
    assert_eq!(app.chart.metric, Metric::Accuracy);
    ch(&mut app, 'm');
    ch(&mut app, 'm');
    assert_eq!(app.chart.metric, Metric::Loss);
    ch(&mut app, 'S');
    assert!(!app.chart.smoothing);
    ch(&mut app, 'L');
    assert!(app.chart.log_y);
    ch(&mut app, 'X');
    assert_eq!(app.chart.x_axis, XAxis::Epoch);
    ch(&mut app, 'X');
    ch(&mut app, 'X');
    assert_eq!(app.chart.x_axis, XAxis::Step);
    // The selected run is the completed one: steps 1..=1480.
    ch(&mut app, '+');
    let (lo, hi) = app.chart.window.unwrap();
    assert!((hi - lo - 739.5).abs() < 1.0, "zoomed to half: {lo}..{hi}");
    ch(&mut app, ']');
    let (lo2, _) = app.chart.window.unwrap();
    assert!(lo2 > lo);
    key(&mut app, KeyCode::Right);
    assert!(app.chart.cursor.is_some());
    ch(&mut app, 'Z');
    assert_eq!((app.chart.window, app.chart.cursor), (None, None));
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.detail.tab, DetailTab::Evaluation);
}

#[test]
fn new_run_form_validates_then_starts() {
    let specs: Vec<_> = vigil::ml::spec::list(std::path::Path::new("models"))
        .into_iter()
        .filter_map(|e| e.spec.ok())
        .collect();
    let mut app =
        App::new(common::theme(ColorDepth::TrueColor), vigil::tui::keymap::Keymap::defaults(), specs);
    ch(&mut app, 'n');
    let Mode::Form(f) = &app.mode else { panic!("no form") };
    assert_eq!(f.spec().name, "digits-mlp");
    let next = app.specs.iter().position(|s| s.name == "digits-mlp").unwrap() + 1;
    // The form opens on its first field; → picks another spec from there too.
    key(&mut app, KeyCode::Right);
    let Mode::Form(f) = &app.mode else { panic!() };
    assert_eq!(f.spec().name, app.specs[next % app.specs.len()].name, "→ from the first field");
    key(&mut app, KeyCode::Left);
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Right);
    let Mode::Form(f) = &app.mode else { panic!() };
    assert_eq!(f.spec().name, app.specs[next % app.specs.len()].name, "→ picks the next spec");
    key(&mut app, KeyCode::Left);
    key(&mut app, KeyCode::Down);
    // Typing into the field just reached replaces its value.
    typed(&mut app, "0");
    // ctrl-s submits: epochs 0 is refused and the form stays, saying why.
    let effects = app.update(Msg::Key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL)));
    assert!(effects.is_empty());
    let Mode::Form(f) = &app.mode else { panic!() };
    assert!(f.fields[0].error.as_deref().unwrap().contains("at least 1"));
    key(&mut app, KeyCode::Backspace);
    typed(&mut app, "3");
    let effects = app.update(Msg::Key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL)));
    let [Effect::Runner(RunnerCommand::Start(spec))] = effects.as_slice() else { panic!("{effects:?}") };
    assert_eq!((spec.name.as_str(), spec.epochs), ("digits-mlp", 3));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn store_updates_append_and_removals_drop_runs() {
    let mut app = common::app();
    let before = app.runs["digits-cnn-a1b2c3"].steps.len();
    let mut feed = match common::app().runs.get("digits-cnn-a1b2c3") {
        Some(r) => {
            vigil::engine::follow::RunFeed { steps: common::steps(3), ..common::bare_feed(r.info.clone()) }
        }
        None => unreachable!(),
    };
    app.update(Msg::Store(StoreUpdate::Run(Box::new(feed.clone()))));
    assert_eq!(app.runs["digits-cnn-a1b2c3"].steps.len(), before + 3);
    feed.reset = true;
    app.update(Msg::Store(StoreUpdate::Run(Box::new(feed.clone()))));
    assert_eq!(app.runs["digits-cnn-a1b2c3"].steps.len(), 3, "a rewritten metrics file replaces the series");
    feed.interrupted = true;
    app.update(Msg::Store(StoreUpdate::Run(Box::new(feed))));
    assert_eq!(app.runs["digits-cnn-a1b2c3"].status(), vigil::tui::app::ShownStatus::Interrupted);
    assert!(app.marked.is_empty());
    app.update(Msg::Store(StoreUpdate::Removed("digits-cnn-a1b2c3".into())));
    assert!(!app.runs.contains_key("digits-cnn-a1b2c3"));
}

#[test]
fn runner_events_reach_the_status_line() {
    let mut app = common::app();
    app.update(Msg::Runner(RunnerEvent::Failed("digits-mlp-x".into(), "boom".into())));
    assert_eq!(app.status.as_ref().unwrap().text, "digits-mlp-x failed: boom");
    app.update(Msg::Runner(RunnerEvent::Evaluated(
        "digits-mlp-d4e5f6".into(),
        CheckpointKind::Last,
        Box::new(common::evaluation()),
    )));
    assert_eq!(app.runs["digits-mlp-d4e5f6"].evaluations.len(), 1);
}

// ---- snapshots ------------------------------------------------------------------------------

fn snapshot_views(depth: ColorDepth, suffix: &str) {
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        for (key_char, name) in [
            ('1', "overview"),
            ('2', "runs"),
            ('3', "detail"),
            ('4', "compare"),
            ('5', "logs"),
            ('6', "system"),
        ] {
            let mut app = common::app_with(depth);
            ch(&mut app, key_char);
            let buf = render(&mut app, w, h);
            insta::assert_snapshot!(format!("{name}_{w}x{h}{suffix}"), text(&buf));
        }
    }
}

#[test]
fn views_snapshot() {
    snapshot_views(ColorDepth::TrueColor, "");
}

#[test]
fn detail_tabs_and_overlays_snapshot() {
    for (keys, name) in [
        ("3\t", "detail_evaluation"),
        ("3\t\t", "detail_params"),
        ("?", "help"),
        ("n", "new_run_form"),
        ("2jjx", "confirm_stop"),
    ] {
        for (w, h) in [(80u16, 24u16), (160, 48)] {
            let mut app = common::app();
            for c in keys.chars() {
                if c == '\t' {
                    key(&mut app, KeyCode::Tab);
                } else {
                    ch(&mut app, c);
                }
            }
            let buf = render(&mut app, w, h);
            insta::assert_snapshot!(format!("{name}_{w}x{h}"), text(&buf));
        }
    }
}

#[test]
fn no_color_views_use_glyphs_and_an_ascii_ramp() {
    let mut app = common::app_with(ColorDepth::None);
    ch(&mut app, '3');
    key(&mut app, KeyCode::Tab);
    let buf = render(&mut app, 80, 24);
    insta::assert_snapshot!("detail_evaluation_80x24_no_color", text(&buf));
    // No cell carries a colour.
    for c in buf.content() {
        assert_eq!((c.fg, c.bg), (ratatui::style::Color::Reset, ratatui::style::Color::Reset), "{c:?}");
    }
    // Every class has its column, the mistakes carry the ramp (the most frequent one, 9 read
    // as 5, its top) and the diagonal none, so errors stand out.
    let t = text(&buf);
    assert!(t.contains("  8   9│"), "{t}");
    assert!(t.contains("@ 2") && t.contains("+ 1"), "{t}");
    assert!(t.contains("│0   36   0"), "{t}");
    let mut app = common::app_with(ColorDepth::None);
    ch(&mut app, '4');
    let buf = render(&mut app, 80, 24);
    let t = text(&buf);
    // Three overlaid runs, three glyphs.
    assert!(t.contains('*') && t.contains('+') && t.contains('o'), "{t}");
}

#[test]
fn too_small_terminals_get_a_message() {
    let mut app = common::app();
    let buf = render(&mut app, 60, 20);
    let t = text(&buf);
    assert!(t.contains("terminal too small") && t.contains("80x24") && t.contains("60x20"), "{t}");
}

#[test]
fn every_view_renders_at_every_size_without_panic() {
    for w in [80u16, 81, 99, 100, 119, 120, 130, 200] {
        for h in [24u16, 25, 30, 48, 60] {
            for k in ['1', '2', '3', '4', '5', '6', '7', '8', '9', 'i', '?', 'n'] {
                let mut app = common::app();
                ch(&mut app, k);
                render(&mut app, w, h);
                key(&mut app, KeyCode::Esc);
                key(&mut app, KeyCode::Tab);
                render(&mut app, w, h);
            }
        }
    }
}

// ---- colours on cells -----------------------------------------------------------------------

#[test]
fn statuses_and_heatmap_carry_the_theme_colours() {
    let mut app = common::app();
    let theme = app.theme.clone();
    ch(&mut app, '2');
    let buf = render(&mut app, 80, 24);
    let (x, y) = find(&buf, "failed").unwrap();
    assert_eq!(buf[(x, y)].fg, theme.error);
    let (x, y) = find(&buf, "running").unwrap();
    assert_eq!(buf[(x, y)].fg, theme.ok);
    // The selected row is highlighted.
    let (x, y) = find(&buf, "digits-mlp-d4e5f6").unwrap();
    assert_eq!(buf[(x, y)].bg, theme.selection);

    ch(&mut app, '3');
    key(&mut app, KeyCode::Tab);
    let buf = render(&mut app, 80, 24);
    // The mistakes are shaded, not the diagonal: row 9's most frequent mistake (2 read as 5)
    // has the hottest colour, a count of 0 the coolest, and the right answers (36 of 36) are
    // bold in the theme's ok colour without a shade.
    let (x, y) = find(&buf, "9    0   0   0   0   0   2").unwrap();
    assert_eq!(buf[(x + 25, y)].bg, theme.heat(1.0));
    assert_eq!(buf[(x + 5, y)].bg, theme.heat(0.0));
    let (x, y) = find(&buf, "0   36").unwrap();
    assert_eq!(buf[(x + 5, y)].fg, theme.ok);
    assert_ne!(buf[(x + 5, y)].bg, theme.heat(1.0));
}

#[test]
fn a_16_colour_terminal_gets_only_ansi_colours() {
    let mut app = common::app_with(ColorDepth::Ansi16);
    ch(&mut app, '4');
    let buf = render(&mut app, 160, 48);
    for c in buf.content() {
        for col in [c.fg, c.bg] {
            assert!(
                !matches!(col, ratatui::style::Color::Rgb(..) | ratatui::style::Color::Indexed(_)),
                "{col:?}"
            );
        }
    }
}

#[test]
fn a_picked_run_stays_selected_while_new_runs_arrive() {
    let mut app = common::app();
    ch(&mut app, '2');
    ch(&mut app, 'j');
    let picked = app.selected_id().unwrap();
    // A newer run appears at the top of the table.
    let mut info = common::info("digits-mlp-ffffff", vigil::store::RunStatus::Running, 1, 40, 10);
    info.created = "2026-11-28T23:59:00Z".into();
    app.update(Msg::Store(StoreUpdate::Run(Box::new(common::bare_feed(info)))));
    assert_eq!(app.visible()[0].info.id, "digits-mlp-ffffff");
    assert_eq!(app.selected_id().unwrap(), picked);
}

#[test]
fn exports_write_the_visible_series_as_csv_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = common::app();
    ch(&mut app, '3');
    let csv = vigil::tui::export::csv(&app, dir.path()).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("series,step,loss"));
    // Full resolution: every step of the raw series, plus the smoothed one and the epochs.
    let raw = text.lines().filter(|l| l.starts_with("train loss,")).count();
    let smooth = text.lines().filter(|l| l.starts_with("train loss (smoothed 0.6),")).count();
    assert_eq!((raw, smooth), (1480, 1480));
    assert_eq!(text.lines().filter(|l| l.starts_with("val loss,")).count(), 40);
    let png = vigil::tui::export::png(&app, dir.path()).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, at bytes 16..24.
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1200);
    assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 700);
    // A zoomed chart exports only what is in the window.
    ch(&mut app, '+');
    let zoomed = std::fs::read_to_string(vigil::tui::export::csv(&app, dir.path()).unwrap()).unwrap();
    assert!(zoomed.lines().filter(|l| l.starts_with("train loss,")).count() < 800);
}

// ---- system and GPUs (fake telemetry) -------------------------------------------------------

#[test]
fn gpu_panel_snapshots_with_two_fake_gpus_and_without_a_gpu() {
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let mut app = common::app();
        let start = vigil::engine::system::unix_now();
        for i in 0..30 {
            // One a second, as the sampler takes them (after the fixture's one, taken now).
            let s = vigil::engine::system::SystemSample { time: start + i as f64, ..common::gpu_sample() };
            app.update(Msg::System(s));
        }
        ch(&mut app, '6');
        let buf = render(&mut app, w, h);
        let t = text(&buf);
        assert!(t.contains("NVIDIA H2") && t.contains("87%") && t.contains("4242"), "{t}");
        insta::assert_snapshot!(format!("system_gpus_{w}x{h}"), t);
        ch(&mut app, '1');
        let buf = render(&mut app, w, h);
        assert!(text(&buf).contains("0:87% 40/141G"), "the overview strip shows GPU 0");

        let mut app = common::app();
        let mut s = common::gpu_sample();
        s.gpus.clear();
        s.gpu_note = Some("no GPU found (NVML: libnvidia-ml.so.1: cannot open shared object file)".into());
        app.update(Msg::System(s));
        ch(&mut app, '6');
        let buf = render(&mut app, w, h);
        let t = text(&buf);
        assert!(t.contains("no GPU found"), "{t}");
        insta::assert_snapshot!(format!("system_no_gpu_{w}x{h}"), t);
    }
}

#[test]
fn the_sampler_maps_gpu_memory_to_the_runs_of_a_process() {
    // A real sampler over a store whose running run is this test process, with the fake NVML.
    let dir = tempfile::tempdir().unwrap();
    let store = vigil::store::RunStore::new(dir.path());
    let spec = vigil::ml::spec::resolve("digits-logreg", std::path::Path::new("models")).unwrap().0;
    let run = store.create(&spec).unwrap();
    run.update_info(|i| {
        i.status = vigil::store::RunStatus::Running;
        i.pid = Some(4242);
    })
    .unwrap();
    let mut sampler =
        vigil::engine::system::Sampler::with_gpus(Some(store), Some(Box::new(common::FakeGpus)), None);
    let s = sampler.sample();
    assert_eq!(s.gpus.len(), 2);
    assert_eq!(s.gpus[0].processes.len(), 2);
    // pid 4242 does not exist here, so it has no CPU row; the GPU side still maps it.
    assert!(s.processes.iter().all(|p| p.pid != 4242));
}

// ---- explain view -----------------------------------------------------------------------------

#[test]
fn explain_view_opens_the_selected_run_and_navigates() {
    use vigil::engine::explain::ExplainCommand;
    let mut app = common::app();
    ch(&mut app, '2');
    let effects = ch(&mut app, '7');
    assert_eq!(app.view, View::Explain);
    assert_eq!(
        effects,
        vec![
            Effect::Explain(ExplainCommand::Open("digits-mlp-d4e5f6".into())),
            Effect::Explain(ExplainCommand::Explain {
                run: "digits-mlp-d4e5f6".into(),
                index: 0,
                method: "ig".into()
            }),
        ]
    );
    for m in common::explain_events() {
        app.update(m);
    }
    assert!(!app.explain.pending);
    // Next method, next example, next misclassified, class filter.
    assert_eq!(
        ch(&mut app, 'm'),
        vec![Effect::Explain(ExplainCommand::Explain {
            run: "digits-mlp-d4e5f6".into(),
            index: 0,
            method: "smoothgrad".into()
        })]
    );
    assert_eq!(
        key(&mut app, KeyCode::Right),
        vec![Effect::Explain(ExplainCommand::Explain {
            run: "digits-mlp-d4e5f6".into(),
            index: 1,
            method: "smoothgrad".into()
        })]
    );
    key(&mut app, KeyCode::Left);
    assert_eq!(app.explain.index, 0);
    ch(&mut app, 'f');
    assert_eq!(app.explain.index, 1, "example 1 is the misclassified one");
    // Class filter: 0, 1, 2 have no examples; 3 keeps examples 0 and 2.
    for _ in 0..4 {
        ch(&mut app, 'F');
    }
    assert_eq!(app.explain.class, Some(3));
    assert_eq!(app.explain.candidates(), vec![0, 2]);
    assert_eq!(app.explain.index, 0);
    // Opening the same run again asks for nothing.
    ch(&mut app, '1');
    assert!(ch(&mut app, '7').is_empty());
}

#[test]
fn explain_view_snapshots_in_colour_and_without() {
    for (depth, suffix) in
        [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_no_color"), (ColorDepth::Ansi16, "_ansi16")]
    {
        for (w, h) in [(80u16, 24u16), (160, 48)] {
            let mut app = common::app_with(depth);
            ch(&mut app, '7');
            for m in common::explain_events() {
                app.update(m);
            }
            let buf = render(&mut app, w, h);
            let t = text(&buf);
            assert!(t.contains("completeness gap") && t.contains("95.00%"), "{t}");
            if depth == ColorDepth::None {
                assert!(t.contains('#') && t.contains('='), "sign glyphs without colour:\n{t}");
            }
            if depth == ColorDepth::Ansi16 {
                for c in buf.content() {
                    assert!(!matches!(
                        c.bg,
                        ratatui::style::Color::Rgb(..) | ratatui::style::Color::Indexed(_)
                    ));
                }
            }
            insta::assert_snapshot!(format!("explain_{w}x{h}{suffix}"), t);
        }
    }
}

#[test]
fn a_private_run_shows_its_privacy_spent_beside_its_accuracy() {
    let mut app = common::app();
    for r in app.runs.values_mut() {
        r.info.dp = Some(vigil::store::DpSpent {
            epsilon: 2.9917,
            delta: 1e-5,
            sigma: 5.8,
            clip_norm: 1.0,
            sample_rate: 0.22,
            steps: 300,
        });
    }
    ch(&mut app, '3');
    let s = text(&render(&mut app, 160, 48));
    assert!(s.contains("DP ε 2.99 (δ 1e-5)"), "{s}");
    // A run without DP shows nothing of it.
    let mut app = common::app();
    ch(&mut app, '3');
    assert!(!text(&render(&mut app, 160, 48)).contains("DP ε"));
}

// ---- the Service view ----------------------------------------------------------------------

fn service_app(depth: ColorDepth) -> App {
    let mut app = common::app_with(depth);
    app.update(Msg::ServiceFeed(Box::new(common::service_feed())));
    app.update(Msg::Service(vigil::engine::service::ServiceEvent::Started {
        url: "http://127.0.0.1:7878".into(),
        run: "digits-mlp-d4e5f6".into(),
        models: vec!["digits-mlp 42c45ce85347".into()],
        warnings: vec![],
    }));
    ch(&mut app, '8');
    app
}

#[test]
fn service_view_snapshot() {
    for (depth, suffix) in [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_no_color")] {
        for (w, h) in [(80u16, 24u16), (160, 48)] {
            let mut app = service_app(depth);
            let buf = render(&mut app, w, h);
            let s = text(&buf);
            assert!(s.contains("Access log (44)") && s.contains("following"), "{s}");
            insta::assert_snapshot!(format!("service_{w}x{h}{suffix}"), s);
        }
    }
}

#[test]
fn service_tail_stays_where_the_reader_scrolled() {
    let mut app = service_app(ColorDepth::TrueColor);
    let top_line = |app: &mut App| {
        let s = text(&render(app, 80, 24));
        s.lines().find(|l| l.contains("Access log")).map(String::from).unwrap()
            + s.lines().skip_while(|l| !l.contains("Access log")).nth(1).unwrap()
    };
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Up);
    assert_eq!(app.service.scroll, 2);
    let before = text(&render(&mut app, 80, 24));
    let first = before.lines().skip_while(|l| !l.contains("Access log")).nth(1).unwrap().to_string();
    // Five new lines arrive: the view keeps showing the same lines, further from the end.
    let mut more = common::service_feed();
    more.records = (50..55).map(|i| common::access(i, 45, 200, Some("alice"), None, &[])).collect();
    app.update(Msg::ServiceFeed(Box::new(more)));
    assert_eq!(app.service.scroll, 7);
    let after = top_line(&mut app);
    assert!(after.contains("7 back") && after.ends_with(&first[..]), "{after}\nvs\n{first}");
    // End follows again.
    ch(&mut app, 'G');
    assert_eq!(app.service.scroll, 0);
    assert!(top_line(&mut app).contains("following"));
    // Lines the filter hides do not move a scrolled view.
    key(&mut app, KeyCode::Up);
    ch(&mut app, '!');
    assert_eq!(app.service.scroll, 0, "changing the filter goes back to the end");
}

#[test]
fn service_filters_cycle_status_key_route_and_flags() {
    let mut app = service_app(ColorDepth::TrueColor);
    let count = |app: &App| app.service.visible().len();
    assert_eq!(count(&app), 44);
    ch(&mut app, 'v');
    assert_eq!((app.service.filter.status_class, count(&app)), (Some(2), 41));
    ch(&mut app, 'v');
    assert_eq!((app.service.filter.status_class, count(&app)), (Some(4), 3));
    ch(&mut app, 'v');
    ch(&mut app, 'v');
    assert_eq!((app.service.filter.status_class, count(&app)), (None, 44));
    ch(&mut app, 'K');
    assert_eq!(app.service.filter.key.as_deref(), Some("alice"));
    assert!(app.service.visible().iter().all(|r| r.key.as_deref() == Some("alice")));
    ch(&mut app, 'K');
    assert_eq!(app.service.filter.key.as_deref(), Some("bob"));
    ch(&mut app, 'K');
    assert_eq!(app.service.filter.key, None);
    ch(&mut app, 'R');
    assert!(app.service.filter.route.is_some());
    ch(&mut app, 'R');
    ch(&mut app, 'R');
    assert_eq!(app.service.filter.route, None);
    ch(&mut app, '!');
    assert_eq!(count(&app), 1);
    let s = text(&render(&mut app, 80, 24));
    assert!(s.contains("flagged") && s.contains("[ood]"), "{s}");
}

#[test]
fn s_serves_the_selected_run_and_asks_before_stopping() {
    let mut app = common::app();
    ch(&mut app, '2');
    // Pick the completed run.
    while app.selected().map(|r| r.info.id.as_str()) != Some("digits-mlp-d4e5f6") {
        key(&mut app, KeyCode::Down);
    }
    let effects = ch(&mut app, 's');
    assert!(
        matches!(&effects[..], [Effect::Service(vigil::engine::service::ServiceCommand::Start(id))] if id == "digits-mlp-d4e5f6"),
        "{effects:?}"
    );
    assert!(matches!(app.service.server, vigil::tui::app::ServerState::Starting(_)));
    app.update(Msg::Service(vigil::engine::service::ServiceEvent::Started {
        url: "http://127.0.0.1:7878".into(),
        run: "digits-mlp-d4e5f6".into(),
        models: vec!["digits-mlp 42c45ce85347".into()],
        warnings: vec![],
    }));
    ch(&mut app, '1');
    assert!(text(&render(&mut app, 160, 48)).contains("service 127.0.0.1:7878"));
    assert!(ch(&mut app, 's').is_empty());
    assert!(matches!(app.mode, Mode::Confirm(Confirm::StopService { .. })));
    let effects = ch(&mut app, 'y');
    assert!(
        matches!(&effects[..], [Effect::Service(vigil::engine::service::ServiceCommand::Stop)]),
        "{effects:?}"
    );
    // A failure to start is said, with the reason.
    app.update(Msg::Service(vigil::engine::service::ServiceEvent::Failed("address in use".into())));
    assert!(app.status.as_ref().unwrap().text.contains("address in use"));
}

/// The run detail's third tab shows the run's variants beside the original: file size, how many
/// times smaller, test accuracy and its change, agreement, and single-input latency (the slower
/// one marked).
#[test]
fn run_detail_shows_variants_side_by_side() {
    use vigil::ml::model::LayerStorage;
    use vigil::ml::variants::{Measured, Precision, Report, VariantSpec};
    let original = Measured {
        disk_bytes: 203_784,
        memory_bytes: 203_304,
        dense_weight_bytes: 201_728,
        test_accuracy: 0.9805,
        latency_ms: 0.0041,
        throughput: 650_000.0,
    };
    let report = |name: &str, precision, disk, acc, latency| Report {
        run: "digits-mlp-d4e5f6".into(),
        variant: name.into(),
        spec: VariantSpec { precision, prune: None },
        base_sha256: "ab".repeat(32),
        original: original.clone(),
        measured: Measured { disk_bytes: disk, test_accuracy: acc, latency_ms: latency, ..original.clone() },
        agreement: 0.994,
        sparsity: None,
        layers: vec![LayerStorage { layer: "layers.0".into(), stored: name.into(), why: None }],
        slower: None,
        frozen_encoder: None,
    };
    let mut app = common::app();
    let mut info = common::info("digits-mlp-d4e5f6", vigil::store::RunStatus::Completed, 40, 40, 1480);
    info.spec = "digits-mlp".into();
    app.update(Msg::Store(StoreUpdate::Run(Box::new({
        let mut f = common::bare_feed(info);
        f.variants = Some(vec![
            report("q4_0", Precision::Q4_0, 30_464, 0.9805, 0.0128),
            report("q8_0", Precision::Q8_0, 55_680, 0.9777, 0.0099),
        ]);
        f
    }))));
    ch(&mut app, '2');
    while app.selected_id().as_deref() != Some("digits-mlp-d4e5f6") {
        key(&mut app, KeyCode::Down);
    }
    ch(&mut app, '3');
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("Variants") && t.contains("q8_0") && t.contains("6.7x") && t.contains("-0.28"), "{t}");
    insta::assert_snapshot!("detail_variants_80x24", t);
}

/// The Security view: robustness curves of an undefended and a defended run overlaid, the
/// extraction watch per key (W, alarm, trend, ood count) and the flagged requests, at 80x24 in
/// colour and without.
#[test]
fn security_view_shows_curves_the_extraction_watch_and_flagged_requests() {
    let curve = |key: &str, acc: [f64; 4]| -> vigil::ml::attack::curve::Curve {
        let points: Vec<serde_json::Value> = [0.0, 0.1, 0.2, 0.3]
            .iter()
            .zip(acc)
            .map(|(e, a)| serde_json::json!({"eps": e, "accuracy": a, "success_rate": 1.0 - a, "mean_norm": e}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "key": key, "method": "Pgd", "norm": "Linf", "steps": 20, "step_size": null,
            "random_start": false, "target": null, "seed": 0, "space": "input", "units": "input",
            "range": "[0, 1]", "split": "test", "checkpoint": "best", "examples": 359,
            "created": "2026-11-28T12:00:00Z", "points": points,
        }))
        .unwrap()
    };
    for (depth, suffix) in [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_no_color")] {
        let mut app = common::app_with(depth);
        for (id, acc) in [
            ("digits-mlp-d4e5f6", [0.98, 0.45, 0.03, 0.0]),
            ("digits-mlp-pgd-a1a1a1", [0.97, 0.79, 0.41, 0.12]),
        ] {
            let info = common::info(id, vigil::store::RunStatus::Completed, 40, 40, 1480);
            app.update(Msg::Store(StoreUpdate::Run(Box::new({
                let mut f = common::bare_feed(info);
                f.attacks = Some(vec![curve("pgd-linf-20", acc)]);
                f
            }))));
        }
        let mut feed = common::service_feed();
        for (i, r) in feed.records.iter_mut().enumerate() {
            if r.key.as_deref() == Some("bob") {
                r.extraction_w = Some(0.97 - 0.004 * i as f64);
                if i > 30 {
                    r.flags = vec![vigil::serve::access_log::Flag::Extraction];
                }
            } else if r.key.is_some() {
                r.extraction_w = Some(0.95);
            }
        }
        app.update(Msg::ServiceFeed(Box::new(feed)));
        ch(&mut app, '9');
        let t = text(&render(&mut app, 80, 24));
        assert!(t.contains("Robustness") && t.contains("digits-mlp-pgd-a1a1a1 pgd-linf-20"), "{t}");
        assert!(t.contains("alarm") && t.contains("extraction bob"), "{t}");
        insta::assert_snapshot!(format!("security_80x24{suffix}"), t);
    }
}

/// A text model attacked with HotFlip gets the Token flips panel beside its embedding-space
/// curve: the success rate per number of tokens changed and the adversarial sentences, the
/// changed words in stars (so they read in NO_COLOR) and bold, at 80x24.
#[test]
fn security_view_shows_hotflip_success_by_tokens_changed_and_the_sentences() {
    let curve: vigil::ml::attack::curve::Curve = serde_json::from_value(serde_json::json!({
        "key": "pgd-linf-20", "method": "Pgd", "norm": "Linf", "steps": 20, "step_size": null,
        "random_start": false, "target": null, "seed": 0, "space": "embedding", "units": "embedding",
        "range": null, "split": "test", "checkpoint": "best", "examples": 180,
        "created": "2026-11-28T12:00:00Z",
        "points": [{"eps": 0.0, "accuracy": 0.95, "success_rate": 0.0, "mean_norm": 0.0},
                   {"eps": 1.0, "accuracy": 0.2, "success_rate": 0.8, "mean_norm": 1.0}],
    }))
    .unwrap();
    let flips: vigil::ml::attack::hotflip::FlipReport = serde_json::from_value(serde_json::json!({
        "key": "hotflip", "max_flips": 3, "candidates": 8, "target": null, "split": "test",
        "checkpoint": "best", "examples": 180, "attacked": 171, "clean_accuracy": 0.95,
        "classes": ["cooking", "finance", "sports", "technology", "weather"],
        "points": [{"flips": 1, "accuracy": 0.6, "success_rate": 0.37, "fooled": 63},
                   {"flips": 2, "accuracy": 0.4, "success_rate": 0.58, "fooled": 99},
                   {"flips": 3, "accuracy": 0.25, "success_rate": 0.74, "fooled": 126}],
        "adversarial": [
            {"index": 4, "label": 1, "clean_pred": 1, "adversarial_pred": 3, "text_pred": 3,
             "flips": [{"position": 3, "from": "bank", "to": "match"}],
             "clean": "the central bank warned", "adversarial": "the central *match* warned"},
            {"index": 9, "label": 0, "clean_pred": 0, "adversarial_pred": 2, "text_pred": 2,
             "flips": [{"position": 1, "from": "grilled", "to": "vote"}, {"position": 4, "from": "salt", "to": "ballot"}],
             "clean": "they grilled bread with salt", "adversarial": "they *vote* bread with *ballot*"}
        ],
        "fool_as_text": 2, "created": "2026-11-28T12:00:00Z",
    }))
    .unwrap();
    for (depth, suffix) in [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_no_color")] {
        let mut app = common::app_with(depth);
        let info = common::info("topics-transformer-a1b2c3", vigil::store::RunStatus::Completed, 20, 20, 900);
        app.update(Msg::Store(StoreUpdate::Run(Box::new({
            let mut f = common::bare_feed(info);
            f.attacks = Some(vec![curve.clone()]);
            f.flips = Some(vec![flips.clone()]);
            f
        }))));
        ch(&mut app, '9');
        let t = text(&render(&mut app, 80, 24));
        assert!(t.contains("Token flips"), "{t}");
        assert!(t.contains("≤1 37%") && t.contains("≤3 74%"), "{t}");
        assert!(t.contains("*match*"), "{t}");
        assert!(t.contains("pgd-linf-20 embeddings"), "the curve says it is not about texts: {t}");
        insta::assert_snapshot!(format!("security_hotflip_80x24{suffix}"), t);
    }
}

/// The Security view shows the input detector's false-positive rate on benign traffic beside its
/// detection rate on PGD inputs at ε = 0.1, from the run's saved curve.
#[test]
fn security_view_shows_the_detectors_benign_and_attack_rates() {
    let points: Vec<serde_json::Value> = [(0.0, 0.98, 0.0), (0.1, 0.45, 0.228), (0.2, 0.03, 0.45)]
        .iter()
        .map(|(e, a, d)| {
            serde_json::json!({"eps": e, "accuracy": a, "success_rate": 1.0 - a, "mean_norm": e, "detected": d})
        })
        .collect();
    let curve: vigil::ml::attack::curve::Curve = serde_json::from_value(serde_json::json!({
        "key": "pgd-linf-20", "method": "Pgd", "norm": "Linf", "steps": 20, "step_size": null,
        "random_start": false, "target": null, "seed": 0, "space": "input", "units": "input",
        "range": "[0, 1]", "split": "test", "checkpoint": "best", "examples": 359,
        "created": "2026-11-28T12:00:00Z", "points": points, "benign_flagged": 0.0084,
    }))
    .unwrap();
    let mut app = common::app_with(ColorDepth::TrueColor);
    let info = common::info("digits-mlp-d4e5f6", vigil::store::RunStatus::Completed, 40, 40, 1480);
    app.update(Msg::Store(StoreUpdate::Run(Box::new({
        let mut f = common::bare_feed(info);
        f.attacks = Some(vec![curve]);
        f
    }))));
    ch(&mut app, '9');
    let t = text(&render(&mut app, 120, 30));
    assert!(t.contains("ood flags 0.8% of benign, 22.8% of PGD ε=0.1"), "{t}");
}

// ---- the headless console -------------------------------------------------------------------

/// The real engines and effects without a terminal: a one-epoch run started from the new-run
/// form trains on a temporary store, and the app sees it finish through the store follower.
#[test]
fn the_headless_console_trains_a_run_through_its_real_engines() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::console_options(
        vigil::store::RunStore::new(dir.path()),
        std::time::Duration::from_millis(200),
    );
    let specs: Vec<_> =
        vigil::ml::spec::list(&opts.models_dir).into_iter().filter_map(|e| e.spec.ok()).collect();
    let app = App::new(common::theme(ColorDepth::TrueColor), vigil::tui::keymap::Keymap::defaults(), specs);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut h = vigil::tui::Headless::start(&opts, app).unwrap();
        let press = |code| Msg::Key(KeyEvent::new(code, KeyModifiers::NONE));
        h.update(press(KeyCode::Char('n')));
        h.update(press(KeyCode::Backspace));
        h.update(press(KeyCode::Backspace));
        h.update(press(KeyCode::Char('1')));
        h.update(Msg::Key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL)));
        assert_eq!(h.app.mode, Mode::Normal);
        let done = h
            .run_until(std::time::Duration::from_secs(120), |app| {
                app.runs.values().any(|r| r.info.status == vigil::store::RunStatus::Completed)
            })
            .await;
        assert!(done, "the run did not finish: {:?}", h.app.status);
        let r = h.app.runs.values().next().unwrap();
        assert_eq!((r.info.epochs, r.info.epoch), (1, 1));
        assert!(!r.steps.is_empty() && !r.epochs.is_empty(), "the follower fed its metrics");
        // The sampler runs too.
        assert!(h.run_until(std::time::Duration::from_secs(10), |app| app.system.is_some()).await);
        h.finish().await;
    });
}

// ---- issue 19: what a first-time user hits --------------------------------------------------

/// A message longer than the line wraps into a message area of up to three lines, so its end
/// (what to do) stays on screen; `M` opens the history and the Logs view lists it too.
#[test]
fn long_messages_wrap_and_the_history_keeps_them() {
    let mut app = common::app();
    let msg = "serving digits-mlp-d4e5f6 on http://127.0.0.1:7878 (warning: no active key with the \
               predict scope; create one with `vigil keys create --scope predict`)";
    app.say(vigil::tui::app::Level::Warn, msg);
    let buf = render(&mut app, 80, 24);
    let t = text(&buf);
    let footer: Vec<&str> = t.lines().rev().take(3).collect();
    assert!(footer[0].contains("--scope predict`)"), "the end of the message is on screen:\n{t}");
    insta::assert_snapshot!("status_wrapped_80x24", t);
    ch(&mut app, 'M');
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("Messages (1, newest first)") && t.contains("no active key"), "{t}");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode, Mode::Normal);
    ch(&mut app, '5');
    let t = text(&render(&mut app, 160, 48));
    assert!(t.contains("Messages (1") && t.contains("warning: no active key"), "{t}");
}

/// A run that finishes, fails or diverges is announced once with a notice that stands out,
/// whether the runner or the store (a run of another process) tells of it first.
#[test]
fn runs_that_end_are_announced_once() {
    use vigil::store::RunStatus;
    use vigil::tui::state::messages::Notice;
    let mut app = common::app();
    let mut info = app.runs["digits-cnn-a1b2c3"].info.clone();
    info.status = RunStatus::Completed;
    app.update(Msg::Store(StoreUpdate::Run(Box::new(common::bare_feed(info)))));
    assert_eq!(app.messages.current().unwrap().notice, Some(Notice::Finished));
    app.update(Msg::Runner(RunnerEvent::Completed("digits-cnn-a1b2c3".into())));
    assert_eq!(app.messages.len(), 1, "announced once");
    let buf = render(&mut app, 80, 24);
    let (x, y) = find(&buf, "● finished").unwrap();
    assert!(buf[(x, y)].modifier.contains(ratatui::style::Modifier::REVERSED), "a notice stands out");
    // Another run diverges.
    let mut info = common::info("digits-mlp-77aa00", RunStatus::Running, 1, 40, 10);
    app.update(Msg::Store(StoreUpdate::Run(Box::new(common::bare_feed(info.clone())))));
    info.status = RunStatus::Failed;
    info.failure = Some("the training loss became NaN at epoch 2 step 40 (learning rate 5.000e1)".into());
    app.update(Msg::Store(StoreUpdate::Run(Box::new(common::bare_feed(info)))));
    let m = app.messages.current().unwrap();
    assert_eq!(m.notice, Some(Notice::Diverged));
    assert!(m.text.starts_with("digits-mlp-77aa00 diverged: the training loss became NaN"), "{}", m.text);
    app.update(Msg::Runner(RunnerEvent::Failed("digits-mlp-77aa00".into(), "boom".into())));
    assert_eq!(app.messages.len(), 2);
}

/// Ten fixture runs that share their id's prefix, all marked.
fn ten_runs(depth: ColorDepth) -> App {
    let mut app = common::app_with(depth);
    for i in 0..10u64 {
        let id = format!("digits-cnn-7b45{i:02x}");
        let mut info = common::info(&id, vigil::store::RunStatus::Completed, 40, 40, 300);
        info.created = format!("2026-11-28T11:{i:02}:00Z");
        let mut feed = common::bare_feed(info);
        feed.steps = common::steps(300)
            .into_iter()
            .map(|mut s| {
                s.loss *= 1.0 + 0.1 * i as f64;
                s
            })
            .collect();
        app.update(Msg::Store(StoreUpdate::Run(Box::new(feed))));
        app.marked.insert(id.into());
    }
    for r in ["digits-cnn-a1b2c3", "digits-mlp-d4e5f6", "digits-mlp-0f0f0f"] {
        app.marked.remove(r);
    }
    ch(&mut app, '4');
    app
}

/// Compare with ten runs: ten distinct colours (and glyphs without colour) in the legend, the
/// ids cut to their unique part, and a run keeps its colour when a run with an earlier id
/// joins.
#[test]
fn compare_gives_ten_runs_ten_colours_that_stay() {
    for depth in [ColorDepth::TrueColor, ColorDepth::Ansi256, ColorDepth::Ansi16] {
        let mut app = ten_runs(depth);
        let buf = render(&mut app, 160, 48);
        let t = text(&buf);
        let mut colours = std::collections::BTreeSet::new();
        for i in 0..10u64 {
            // The legend (above the table) shows each run's unique part after its mark, which
            // carries the run's colour.
            let label = format!("-7b45{i:02x}");
            let (x, y) = find(&buf, &label).unwrap_or_else(|| panic!("{label} in\n{t}"));
            let mark = (0..x).rev().find(|&m| buf[(m, y)].symbol() == "━").expect("a mark");
            colours.insert(format!("{:?}", buf[(mark, y)].fg));
        }
        assert_eq!(colours.len(), 10, "{depth:?}: {colours:?}");
        if depth == ColorDepth::TrueColor {
            insta::assert_snapshot!("compare_10_runs_160x48", t);
        }
    }
    let mut app = ten_runs(ColorDepth::TrueColor);
    let before = app.compare.slots.clone();
    let mut info = common::info("digits-cnn-000000", vigil::store::RunStatus::Completed, 40, 40, 300);
    info.created = "2026-11-28T09:00:00Z".into();
    app.marked.insert("digits-cnn-000000".into());
    app.update(Msg::Store(StoreUpdate::Run(Box::new(common::bare_feed(info)))));
    assert_eq!(app.compare.slots.get("digits-cnn-000000"), Some(&10), "the newcomer takes a free slot");
    for (id, slot) in &before {
        assert_eq!(app.compare.slots.get(id), Some(slot), "{id} kept its colour");
    }
    // Without colour: ten glyphs, and the ids' unique parts at 80 columns.
    let mut app = ten_runs(ColorDepth::None);
    let t = text(&render(&mut app, 160, 48));
    insta::assert_snapshot!("compare_10_runs_160x48_no_color", t);
    let legend: String = t.lines().filter(|l| l.contains("7b45")).collect();
    for g in vigil::tui::widgets::chart::GLYPHS.iter().take(10) {
        assert!(legend.contains(&format!("{g} ")), "glyph {g} in {legend}");
    }
    let t = text(&render(&mut app, 80, 24));
    for i in 0..10u64 {
        assert!(t.contains(&format!("45{i:02x}")), "run {i}'s unique part at 80x24:\n{t}");
    }
}

#[test]
fn compare_parameters_scroll() {
    let mut app = common::app();
    ch(&mut app, '4');
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("Parameters 1-3 of 11") && t.contains("model.hidden"), "{t}");
    key(&mut app, KeyCode::PageDown);
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("Parameters 6-8 of 11") && !t.contains("model.hidden"), "{t}");
    key(&mut app, KeyCode::PageUp);
    assert_eq!(app.compare.params_scroll, 0);
}

/// The Overview follows the run that trains (not the row under the Runs cursor), marks it, and
/// keeps a pinned run while another starts.
#[test]
fn overview_follows_the_training_run_and_pins_one() {
    let mut app = common::app();
    assert_eq!(app.selected_id().unwrap(), "digits-mlp-d4e5f6", "the Runs cursor is elsewhere");
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("digits-cnn-a1b2c3 · following"), "{t}");
    assert!(t.contains("▶digits-cnn-a1b2c3"), "{t}");
    ch(&mut app, 'P');
    let mut info = common::info("digits-mlp-9999aa", vigil::store::RunStatus::Running, 1, 40, 10);
    info.created = "2026-11-28T23:00:00Z".into();
    app.update(Msg::Store(StoreUpdate::Run(Box::new(common::bare_feed(info)))));
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("digits-cnn-a1b2c3 · pinned"), "{t}");
    // Enter opens the run shown.
    key(&mut app, KeyCode::Enter);
    assert_eq!((app.view, app.selected_id().unwrap().as_str()), (View::Detail, "digits-cnn-a1b2c3"));
    ch(&mut app, '1');
    ch(&mut app, 'P');
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("digits-mlp-9999aa · following"), "the newest training run: {t}");
    // ↑↓ walk the active runs and pin the one reached.
    key(&mut app, KeyCode::Up);
    assert_eq!(app.overview.pinned.as_deref(), Some("digits-cnn-a1b2c3"));
}

/// The smoothed curve is drawn over its raw one: where both pass, the cell is the smoothed
/// curve's colour; the raw one is in the faded colour elsewhere.
#[test]
fn smoothed_curves_are_drawn_over_their_raw_ones() {
    let mut app = common::app();
    ch(&mut app, '3');
    let theme = app.theme.clone();
    let buf = render(&mut app, 80, 24);
    let count = |c| buf.content().iter().filter(|cell| cell.fg == c && cell.symbol() != " ").count();
    let (smooth, raw) = (count(theme.series(0)), count(theme.faint(0)));
    assert!(smooth > 60 && raw > 5, "smoothed {smooth} cells, raw {raw}");
    assert_ne!(theme.series(0), theme.faint(0));
    // Accuracy in percent, never above 100%.
    ch(&mut app, 'm');
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("100%┤") || t.contains("90%┤"), "{t}");
    for l in t.lines() {
        if let Some(i) = l.find("%┤") {
            let v: f64 = l[..i].trim_start_matches('│').trim().parse().unwrap();
            assert!(v <= 100.0, "{l}");
        }
    }
}

/// `w`/`W` in the System and Security views export the chart on screen, in the theme's
/// colours, not the selected run's loss.
#[test]
fn exports_from_system_and_security_are_their_charts() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = common::app();
    ch(&mut app, '6');
    let chart = vigil::tui::export::visible_chart(&app);
    let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
    assert_eq!((chart.title.as_str(), names), ("system-history", vec!["cpu %", "memory %"]));
    let csv = std::fs::read_to_string(vigil::tui::export::csv(&app, dir.path()).unwrap()).unwrap();
    assert!(csv.starts_with("series,time before now (s),percent\ncpu %,0,69.19"), "{csv}");
    ch(&mut app, '9');
    assert!(vigil::tui::export::csv(&app, dir.path()).is_err(), "no attacked run: nothing to export");
    // The PNG of a run's curves is on the theme's canvas with the series in its colours.
    ch(&mut app, '3');
    let png = vigil::tui::export::png(&app, dir.path()).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(std::fs::read(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let px = |x: usize, y: usize| {
        let i = (y * info.width as usize + x) * info.color_type.samples();
        (pixels[i], pixels[i + 1], pixels[i + 2])
    };
    assert_eq!(px(3, 3), app.theme.rgb.background);
    let has =
        |c: (u8, u8, u8)| (0..info.height as usize).any(|y| (0..info.width as usize).any(|x| px(x, y) == c));
    assert!(has(app.theme.rgb.series[0]) && has(app.theme.rgb.faint[0]), "smoothed and raw colours");
}

/// At 80x24 the Detail header keeps the test accuracy, a private run's ε and the
/// membership-inference figure (dropping the step and the duration instead).
#[test]
fn detail_header_at_80x24_keeps_epsilon() {
    let mut app = common::app();
    let r = app.runs.get_mut("digits-mlp-d4e5f6").unwrap();
    r.info.dp = Some(vigil::store::DpSpent {
        epsilon: 2.9917,
        delta: 1e-5,
        sigma: 5.8,
        clip_norm: 1.0,
        sample_rate: 0.22,
        steps: 300,
    });
    r.info.membership_advantage = Some(0.0312);
    ch(&mut app, '3');
    let t = text(&render(&mut app, 80, 24));
    let head = t.lines().nth(1).unwrap();
    assert!(
        head.contains("test 98.05%") && head.contains("DP ε 2.99") && head.contains("MI adv 0.031"),
        "{head}"
    );
    insta::assert_snapshot!("detail_dp_80x24", t);
}

/// The confusion matrix without colour: all ten columns, the mistakes marked.
#[test]
fn confusion_matrix_without_colour_shows_every_class() {
    let mut app = common::app_with(ColorDepth::None);
    ch(&mut app, '3');
    key(&mut app, KeyCode::Tab);
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let t = text(&render(&mut app, w, h));
        let header = t.lines().find(|l| l.contains("   0   1   2")).unwrap();
        assert!(header.contains("   9"), "{header}");
        insta::assert_snapshot!(format!("confusion_{w}x{h}_no_color"), t);
    }
}

/// The extraction watch at 80x24 with six keys: the key in alarm (last by name) is first.
#[test]
fn security_keys_in_alarm_come_first() {
    let mut app = common::app();
    let mut feed = common::service_feed();
    let names = ["ann", "bea", "cal", "dan", "eve", "zed"];
    for (i, r) in feed.records.iter_mut().enumerate() {
        r.key = Some(names[i % names.len()].to_string());
        r.extraction_w = Some(0.95);
        if r.key.as_deref() == Some("zed") {
            r.extraction_w = Some(0.85);
            r.flags = vec![vigil::serve::access_log::Flag::Extraction];
        }
    }
    app.update(Msg::ServiceFeed(Box::new(feed)));
    ch(&mut app, '9');
    let t = text(&render(&mut app, 80, 24));
    let rows: Vec<&str> = t.lines().filter(|l| l.contains("0.9") || l.contains("0.85")).collect();
    assert!(rows[0].contains("zed") && rows[0].contains("alarm"), "{t}");
    assert!(t.contains("6 keys · 1 in alarm"), "{t}");
}

/// The high-contrast theme paints its background on every cell of every view.
#[test]
fn high_contrast_paints_every_cell() {
    for depth in [ColorDepth::TrueColor, ColorDepth::Ansi256, ColorDepth::Ansi16] {
        for k in ['1', '2', '3', '4', '5', '6', '7', '8', '9', '?', 'n', 'M'] {
            let mut app = common::app();
            app.theme = vigil::tui::theme::Theme::builtin("high-contrast", depth).unwrap();
            let bg = app.theme.bg;
            ch(&mut app, k);
            for (w, h) in [(80, 24), (160, 48)] {
                let buf = render(&mut app, w, h);
                let bare = buf.content().iter().filter(|c| c.bg == ratatui::style::Color::Reset).count();
                assert_eq!(
                    bare, 0,
                    "{depth:?} view {k} at {w}x{h}: {bare} cells without the background {bg:?}"
                );
            }
        }
    }
}

/// Class names are not cut to six letters where the Explain view has room for them.
#[test]
fn explain_shows_whole_class_names_where_they_fit() {
    let mut app = common::app();
    ch(&mut app, '7');
    for m in common::explain_events() {
        app.update(m);
    }
    let set = app.explain.set.as_mut().expect("the explain events carry a set");
    for (i, c) in set.classes.iter_mut().enumerate() {
        *c = format!("ankle-boot-{i}");
    }
    let t = text(&render(&mut app, 160, 48));
    let top: Vec<&str> = t.lines().filter(|l| l.contains("ankle-boot-") && l.contains('%')).collect();
    assert!(top.len() >= 3 && top.iter().all(|l| !l.contains("ankle- ")), "{t}");
}
