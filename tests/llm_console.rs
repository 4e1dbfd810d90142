//! The console's Service view with a language model served: requests and completion tokens per
//! second, time to first token p50/p99, each key's tokens beside its budget, and the tail with
//! each completion's prompt and completion sizes; at 80x24 and 160x48, in colour and without.

mod common;

use vigil::tui::app::{App, Msg};
use vigil::tui::theme::ColorDepth;

fn generation_app(depth: ColorDepth) -> App {
    let mut app = common::app_with(depth);
    app.update(Msg::ServiceFeed(Box::new(common::generation_feed())));
    app.update(Msg::Key(crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Char('8'))));
    app
}

#[test]
fn the_service_view_shows_generative_traffic() {
    for (depth, suffix) in [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_no_color")] {
        for (w, h) in [(80u16, 24u16), (160, 48)] {
            let mut app = generation_app(depth);
            let s = common::text(&common::render(&mut app, w, h));
            // 30 completions of 40..127 tokens, one of 7 cut short, one of 60: 2,572 completion
            // tokens in the minute, 42.9 a second.
            assert!(s.contains("tok/s 42.9"), "{s}");
            assert!(s.contains("TTFT p50 "), "{s}");
            assert!(s.contains("→"), "the tail shows prompt→completion sizes: {s}");
            assert!(s.contains("cancelled") || s.contains("client"), "{s}");
            insta::assert_snapshot!(format!("generation_{w}x{h}{suffix}"), s);
        }
    }
}

#[test]
fn keys_show_their_tokens_against_their_budget() {
    let feed = common::generation_feed();
    let alice = feed.snapshot.keys.iter().find(|k| k.name == "alice").unwrap();
    // alice: 20 of the 30 completions plus the flagged one.
    let expected: u64 =
        (0..30u64).filter(|i| i % 3 != 0).map(|i| (20 + i) + (40 + 3 * i)).sum::<u64>() + 18 + 60;
    assert_eq!(alice.tokens, expected);
    assert_eq!(alice.budget_left, Some(200_000 - 500 * 32));
    let g = feed.snapshot.generation.as_ref().unwrap();
    assert_eq!((g.requests, g.cancelled), (32, 1));
    let mut app = generation_app(ColorDepth::TrueColor);
    let s = common::text(&common::render(&mut app, 80, 24));
    assert!(s.contains(&expected.to_string()), "alice's tokens are on screen: {s}");
}
