//! Panels in every view that has several (issue 19): Tab and Shift-Tab move the focus (in the
//! Detail view Tab keeps switching tabs and Shift-Tab moves the focus), ↑↓ scroll a focused
//! panel other than the view's main one, and `z` shows the focused panel alone; the same keys,
//! from one table, in every view. The Logs view's `/` search reaches the message history. State
//! through `App::update`, the screen through snapshots at 80x24.

mod common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use vigil::tui::app::{App, Level, Msg, View};
use vigil::tui::state::panes;

use common::{render, text};

fn key(app: &mut App, code: KeyCode) {
    app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn ch(app: &mut App, c: char) {
    key(app, KeyCode::Char(c));
}

/// The text with every clock time (`HH:MM:SS`) masked: messages carry the wall clock.
fn mask_clock(t: &str) -> String {
    let b = t.as_bytes();
    let mut out = String::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        let clock = b.len() >= i + 8
            && [0, 1, 3, 4, 6, 7].iter().all(|k| b[i + k].is_ascii_digit())
            && b[i + 2] == b':'
            && b[i + 5] == b':';
        if clock {
            out.push_str("hh:mm:ss");
            i += 8;
        } else {
            let c = t[i..].chars().next().expect("in the text");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The fixture console with traffic in the service's log and an explanation to show.
fn app() -> App {
    let mut app = common::app();
    app.update(Msg::ServiceFeed(Box::new(common::service_feed())));
    ch(&mut app, '2');
    ch(&mut app, '7');
    for m in common::explain_events() {
        app.update(m);
    }
    app
}

#[test]
fn every_view_with_panels_zooms_its_focused_panel_at_80x24() {
    let mut app = app();
    app.say(Level::Info, "started digits-cnn-a1b2c3");
    app.say(Level::Warn, "serving digits-mlp-d4e5f6 on http://127.0.0.1:7878 (warning: no active key with predict scope: create one with ctrl-k)");
    // (view key, keys to the panel, the panel, text only that panel shows, text of a panel
    // hidden while it is zoomed)
    let cases: &[(char, &[KeyCode], &str, &str, &str)] = &[
        ('1', &[KeyCode::Tab], "Active runs", "Active runs (1)", "CPU"),
        ('3', &[KeyCode::Tab, KeyCode::BackTab], "Per class", "macro", "Confusion"),
        ('4', &[KeyCode::Tab], "Parameters", "best val acc", "visible run"),
        ('5', &[KeyCode::Tab], "Messages", "create one with ctrl-k", "Log of"),
        ('7', &[KeyCode::Tab], "Prediction", "top classes", "Attribution"),
        ('9', &[KeyCode::Tab, KeyCode::Tab], "Flagged requests", "Flagged requests", "Robustness"),
    ];
    for (view_key, keys, panel, shows, hidden) in cases {
        ch(&mut app, *view_key);
        let view = app.view;
        for k in *keys {
            key(&mut app, *k);
        }
        assert_eq!(app.view, view, "the panel keys stay in {view:?}");
        assert_eq!(panes::focused(&app, view), Some(*panel), "{view:?}");
        let t = text(&render(&mut app, 80, 24));
        assert!(t.contains(hidden), "{view:?} before zooming shows {hidden:?}: {t}");
        ch(&mut app, 'z');
        let t = text(&render(&mut app, 80, 24));
        assert!(t.contains(shows) && !t.contains(hidden), "{view:?} zoomed on {panel}: {t}");
        let name = format!("zoomed_{}_80x24", panel.to_lowercase().replace(' ', "_"));
        insta::assert_snapshot!(name, mask_clock(&t));
        ch(&mut app, 'z');
        assert!(text(&render(&mut app, 80, 24)).contains(hidden), "{view:?}: z again comes back");
    }
}

#[test]
fn the_focused_panel_has_a_thick_border_that_reads_without_colour() {
    let mut app = common::app_with(vigil::tui::theme::ColorDepth::None);
    ch(&mut app, '4');
    let before = text(&render(&mut app, 80, 24));
    assert!(!before.contains('┏'), "the main panel has the focus, drawn as usual: {before}");
    key(&mut app, KeyCode::Tab);
    let after = text(&render(&mut app, 80, 24));
    let top_of = |t: &str, word: &str| t.lines().find(|l| l.contains(word)).unwrap_or("").to_string();
    assert!(top_of(&after, "Parameters").contains('┏'), "{after}");
    assert!(!top_of(&after, "visible run").contains('┏'), "{after}");
}

#[test]
fn arrows_scroll_a_focused_panel_but_keep_the_views_meaning_on_its_main_one() {
    let mut app = app();
    // Overview: ↑↓ on the loss chart walk the active runs (pin one), as before.
    ch(&mut app, '1');
    key(&mut app, KeyCode::Down);
    assert!(app.overview.pinned.is_some(), "↓ on the main panel is the view's own key");
    assert_eq!(app.panes.overview.scroll, 0);
    // On another panel they scroll it.
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    assert_eq!(panes::focused(&app, View::Overview), Some("System"));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.panes.overview.scroll, 1);
    key(&mut app, KeyCode::Up);
    assert_eq!(app.panes.overview.scroll, 0);

    // Security: its panels have no other use for the arrows, so the first one scrolls too.
    ch(&mut app, '9');
    key(&mut app, KeyCode::Tab);
    assert_eq!(panes::focused(&app, View::Security), Some("Extraction watch"));
    let keys_before = text(&render(&mut app, 80, 24));
    assert!(keys_before.contains("alice") && keys_before.contains("bob"), "{keys_before}");
    key(&mut app, KeyCode::Down);
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("1 above"), "the first key went off the top: {t}");

    // Detail: Tab changes the tab and the focus starts on the new tab's first panel; Shift-Tab
    // moves it; the parameters tab's checkpoints panel scrolls.
    ch(&mut app, '3');
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.detail.tab, vigil::tui::app::DetailTab::Params);
    assert_eq!(panes::focused(&app, View::Detail), Some("Parameters"));
    key(&mut app, KeyCode::BackTab);
    // The fixture run has no variants, so no (invisible) Variants panel takes the focus.
    assert_eq!(panes::focused(&app, View::Detail), Some("Checkpoints"), "Shift-Tab goes backwards and wraps");
}

#[test]
fn the_log_search_reaches_the_messages_and_moves_the_focus_to_them() {
    let mut app = common::app();
    ch(&mut app, '5');
    let events = panes::log_event_count(&app);
    assert!(events > 0);
    app.say(Level::Warn, "serving on http://127.0.0.1:7878 (warning: no active key with predict scope)");
    app.say(Level::Info, "sorted by created");
    let lines = panes::log_lines(&app);
    assert_eq!(lines.len(), events + app.messages.len(), "the events, then every message");
    ch(&mut app, '/');
    for c in "predict scope".chars() {
        ch(&mut app, c);
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(panes::focused(&app, View::Logs), Some("Messages"), "a match in the messages focuses them");
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("/predict scope 1 match"), "{t}");
    assert!(t.contains("no active key with"), "the matching message is shown: {t}");

    // A word in both: n goes from the log's match on to the message's, and wraps back.
    key(&mut app, KeyCode::Esc);
    app.say(Level::Info, "checkpoint kept for digits-mlp-0f0f0f");
    let lines = panes::log_lines(&app);
    let hits: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.contains("checkpoint")).map(|(i, _)| i).collect();
    assert!(
        hits.first().is_some_and(|&i| i < events) && hits.last().is_some_and(|&i| i >= events),
        "{lines:?}"
    );
    ch(&mut app, '/');
    for c in "checkpoint".chars() {
        ch(&mut app, c);
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(panes::focused(&app, View::Logs), Some("Log"));
    for _ in 1..hits.len() {
        ch(&mut app, 'n');
    }
    assert_eq!(panes::focused(&app, View::Logs), Some("Messages"), "the last match is the message");
    assert_eq!(app.panes.logs_focus.scroll as usize, hits[hits.len() - 1] - events);
    ch(&mut app, 'n');
    assert_eq!(panes::focused(&app, View::Logs), Some("Log"), "n wraps back to the log");
}
