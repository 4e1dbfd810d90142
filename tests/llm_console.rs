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

/// A key the distillation watch put in alarm: the Security view lists it among the keys (`llm`
/// where a classifier key has PRADA's W) and says why under the table, and its lines are among
/// the flagged requests; at 80x24, in colour and with NO_COLOR.
#[test]
fn the_security_view_shows_llm_keys_in_extraction_alarm_and_why() {
    let reason = "100 prompts within 600 s, 100% distinct, 100% from one template";
    for (depth, suffix) in [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_no_color")] {
        let mut feed = common::generation_feed();
        for i in 0..5u64 {
            let mut r = common::completion(33 + i, 34 + i as i64, "mallory", (30, 1), "length", 20);
            r.flags = vec![vigil::serve::access_log::Flag::Extraction];
            r.generation.as_mut().unwrap().extraction = Some(reason.into());
            feed.records.push(r);
        }
        let mut app = common::app_with(depth);
        app.update(Msg::ServiceFeed(Box::new(feed)));
        app.update(Msg::Key(crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Char('9'))));
        let s = common::text(&common::render(&mut app, 80, 24));
        assert!(s.contains("1 in alarm"), "{s}");
        let row = s.lines().find(|l| l.starts_with("│mallory")).unwrap_or_default();
        let cells: Vec<&str> = row.trim_matches('│').split_whitespace().collect();
        assert_eq!(cells.get(..4), Some(&["mallory", "5", "llm", "alarm"][..]), "mallory's row: {s}");
        assert!(s.contains("mallory: 100 prompts within 600 s"), "why, under the table: {s}");
        assert!(s.contains("extraction mallory 200"), "its flagged lines: {s}");
        // Keys that were never flagged have no reason line.
        assert!(!s.contains("alice: "), "{s}");
        insta::assert_snapshot!(format!("security_llm_80x24{suffix}"), s);
    }
}

// ---- the key form's language-model limits -------------------------------------------------

fn form(values: &[(&str, &str)]) -> vigil::tui::state::keys::KeyForm {
    let mut f = vigil::tui::state::keys::KeyForm::default();
    for (label, value) in values {
        let field = f.fields.iter_mut().find(|x| x.label == *label).expect("a field of the form");
        field.value = value.to_string();
    }
    f
}

#[test]
fn the_form_sets_a_keys_token_limits_with_the_cli_rules() {
    let spec = form(&[
        ("name", "alice"),
        ("scopes", "generate"),
        ("tokens/min", "50_000"),
        ("tok budget", "200000/day"),
        ("logprobs", "5"),
    ])
    .check()
    .unwrap();
    assert_eq!(spec.generate.tokens_per_minute, Some(50_000));
    assert_eq!(spec.generate.token_budget.map(|b| b.to_string()).as_deref(), Some("200000/day"));
    assert_eq!(spec.generate.logprobs, Some(5));
    // The defaults: no token limits and no logprobs (they make distillation cheap).
    let plain = form(&[("name", "bob")]).check().unwrap();
    assert_eq!(plain.generate, vigil::serve::keys::GeneratePolicy::default());
    for (label, value, says) in [
        ("tokens/min", "0", "tokens/min: \"0\" must be a whole number of tokens above 0"),
        ("tok budget", "lots", "tok budget:"),
        ("logprobs", "50", "logprobs: allows at most 20 alternatives per token, not 50"),
        ("logprobs", "some", "logprobs: \"some\" is not a whole number"),
    ] {
        let err = form(&[("name", "x"), (label, value)]).check().unwrap_err();
        assert!(err.contains(says), "{label}={value}: {err}");
    }
}
