//! Explaining requests from the service's access log in the console: the engine finds the run
//! that answered a logged request and explains its input through the service's own checks and
//! preprocessing; the keys that pick a request (enter on the Service view's cursor, `r`, ←→);
//! what the view says when the log keeps only hashes; snapshots at 80x24 in colour and NO_COLOR.

mod common;

use std::sync::mpsc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use vigil::engine::explain::{ExplainCommand, ExplainEvent, ExplainResult, LoggedInput, RequestResult};
use vigil::serve::access_log::AccessRecord;
use vigil::tui::app::{App, Effect, Msg, View};
use vigil::tui::theme::ColorDepth;

fn key(app: &mut App, code: KeyCode) -> Vec<Effect> {
    app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn ch(app: &mut App, c: char) -> Vec<Effect> {
    key(app, KeyCode::Char(c))
}

use common::{render, text};

/// 64 raw pixel values (0–16, as the digits data has them) drawing a rough "7".
fn seven() -> Vec<f64> {
    (0..64)
        .map(|i| {
            let (r, c) = (i / 8, i % 8);
            if r == 1 && (1..7).contains(&c) || c == 7 - r && r >= 1 { 16.0 } else { 0.0 }
        })
        .collect()
}

/// A logged request of two inputs, with its raw inputs (the service ran with --log-raw-inputs).
fn logged(seq: u64, model: &str, version: &str, raw: serde_json::Value) -> AccessRecord {
    let mut r = common::access(seq, seq as i64, 200, Some("alice"), None, &[]);
    r.model = Some(model.into());
    r.version = Some(version.into());
    r.inputs = raw.as_array().map_or(0, Vec::len);
    r.labels = vec!["7".into(); r.inputs];
    r.raw_inputs = Some(raw);
    r
}

#[test]
fn the_engine_explains_a_logged_request_with_the_run_that_answered_it() {
    use vigil::ml::explain::{Explainer, Method};
    use vigil::ml::train::load_trained;
    use vigil::store::{CheckpointKind, RunStore};

    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = common::trained_logreg(&store, 3);
    let sha = run.manifest().unwrap().files[CheckpointKind::Best.file()].clone();
    let version = &sha[..12];

    let (ev_tx, ev_rx) = mpsc::channel();
    let engine = vigil::engine::explain::spawn(store.clone(), move |e| ev_tx.send(e).is_ok()).unwrap();
    let cmd_tx = engine.commands.clone();
    let next = || ev_rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the engine answers");
    let ask = |record: &AccessRecord, input: usize, method: &str| {
        let input = LoggedInput::of_record(record).into_iter().nth(input).expect("an explainable input");
        cmd_tx.send(ExplainCommand::Request { input: Box::new(input), method: method.into() }).unwrap();
    };

    let record = logged(1, "digits-logreg", version, serde_json::json!([vec![0.0; 64], seven()]));
    ask(&record, 1, "grad-input");
    let r = match next() {
        ExplainEvent::ExplainedRequest(r) => r,
        other => panic!("expected the request's explanation, got {other:?}"),
    };
    assert_eq!((r.result.run.as_str(), r.result.index, r.input.inputs), (run.id.as_str(), 1, 2));
    assert_eq!(r.classes.len(), 10);
    // The same attributions as explaining the preprocessed input directly with the run's model.
    let t = load_trained(&run, CheckpointKind::Best).unwrap();
    let raw: Vec<f32> = seven().iter().map(|&v| v as f32).collect();
    let x = t.pipeline.transform(&raw).unwrap();
    let x = candle_core::Tensor::from_vec(x, (1, 1, 8, 8), &candle_core::Device::Cpu).unwrap();
    let want = Explainer::new(&t.network).explain(&x, &Method::GradInput, None).unwrap().remove(0);
    assert_eq!(r.result.explanation.predicted, want.predicted);
    for (a, b) in r.result.explanation.attributions.iter().zip(&want.attributions) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    // A version no run has (the run was retrained or deleted since).
    ask(&logged(2, "digits-logreg", "000000000000", serde_json::json!([seven()])), 0, "saliency");
    match next() {
        ExplainEvent::Failed(m) => assert!(m.contains("no run") && m.contains("000000000000"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A logged input the model cannot take: the service's own message, with the request named.
    ask(&logged(3, "digits-logreg", version, serde_json::json!([[1.0, 2.0]])), 0, "saliency");
    match next() {
        ExplainEvent::Failed(m) => assert!(m.contains("r3") && m.contains("expected 64 values"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    ask(&logged(4, "digits-logreg", version, serde_json::json!(["a text"])), 0, "saliency");
    match next() {
        ExplainEvent::Failed(m) => assert!(m.contains("takes numbers"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Closing the commands ends the engine's thread.
    drop(cmd_tx);
    let vigil::engine::Handle { commands, join } = engine;
    drop(commands);
    let vigil::engine::Join::Thread(t) = join else { panic!("the explanation engine runs on a thread") };
    t.join().unwrap();
}

#[test]
fn only_answered_requests_with_raw_inputs_can_be_explained() {
    let raw = logged(1, "digits-mlp", "42c45ce85347", serde_json::json!([seven(), seven()]));
    assert_eq!(LoggedInput::count(&raw), 2);
    let inputs = LoggedInput::of_record(&raw);
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[1].label(), "r1 #2/2");
    assert_eq!(inputs[1].answered.as_deref(), Some("7"));
    let mut hashed = raw.clone();
    hashed.raw_inputs = None;
    let mut refused = raw.clone();
    refused.status = 422;
    let mut no_model = raw.clone();
    no_model.model = None;
    for r in [hashed, refused, no_model] {
        assert_eq!(LoggedInput::count(&r), 0);
        assert!(LoggedInput::of_record(&r).is_empty());
    }
}

/// A console whose Service view has the fixture's log plus two requests with raw inputs.
fn app_with_requests(depth: ColorDepth) -> App {
    let mut app = common::app_with(depth);
    let mut feed = common::service_feed();
    feed.records.push(logged(44, "digits-mlp", "42c45ce85347", serde_json::json!([seven(), seven()])));
    feed.records.push(logged(45, "digits-mlp", "42c45ce85347", serde_json::json!([seven()])));
    app.update(Msg::ServiceFeed(Box::new(feed)));
    app
}

fn request(id: &str, input: usize) -> Vec<Effect> {
    vec![Effect::Explain(ExplainCommand::Request {
        input: Box::new(LoggedInput {
            request_id: id.into(),
            time: common::access(0, id[1..].parse().unwrap(), 200, None, None, &[]).time,
            key: Some("alice".into()),
            model: "digits-mlp".into(),
            version: "42c45ce85347".into(),
            variant: None,
            input,
            inputs: if id == "r44" { 2 } else { 1 },
            raw: serde_json::json!(seven()),
            answered: Some("7".into()),
        }),
        method: "ig".into(),
    })]
}

#[test]
fn enter_on_the_service_view_explains_the_request_under_the_cursor() {
    let mut app = app_with_requests(ColorDepth::TrueColor);
    ch(&mut app, '8');
    // Following: the cursor is the newest line.
    assert_eq!(key(&mut app, KeyCode::Enter), request("r45", 0));
    assert_eq!(app.view, View::Explain);
    assert!(app.explain.requests.on && app.explain.pending);
    // ←→ walk the logged inputs, oldest first, and stop at the ends.
    assert_eq!(key(&mut app, KeyCode::Left), request("r44", 1));
    assert_eq!(key(&mut app, KeyCode::Left), request("r44", 0));
    assert!(key(&mut app, KeyCode::Right) == request("r44", 1));
    // Keys of the test-example mode say where they went instead of acting.
    assert!(ch(&mut app, 'f').is_empty());
    assert!(app.status.as_ref().unwrap().text.contains("r goes back to test examples"));
    // `r` goes back to the run's test examples, and again to the same request.
    assert!(!ch(&mut app, 'r').iter().any(|e| matches!(e, Effect::Explain(ExplainCommand::Request { .. }))));
    assert!(!app.explain.requests.on);
    assert_eq!(ch(&mut app, 'r'), request("r44", 1));

    // Scrolled back to a request whose inputs were only hashed: enter says how to log them.
    ch(&mut app, '8');
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Up);
    assert_eq!(app.service.cursor().unwrap().request_id, "r43");
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    assert_eq!(app.view, View::Service);
    let status = &app.status.as_ref().unwrap().text;
    assert!(status.contains("--log-raw-inputs"), "{status}");
    // A refused request has no answer to explain.
    key(&mut app, KeyCode::Up);
    assert_eq!(app.service.cursor().unwrap().request_id, "r42");
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    let status = &app.status.as_ref().unwrap().text;
    assert!(status.contains("was not answered") && status.contains("429"), "{status}");
}

fn request_result() -> RequestResult {
    let explanation = match common::explain_events().remove(1) {
        Msg::Explain(ExplainEvent::Explained(r)) => r.explanation,
        _ => unreachable!("the fixture's second message is the explanation"),
    };
    let input = match &request("r44", 0)[0] {
        Effect::Explain(ExplainCommand::Request { input, .. }) => (**input).clone(),
        _ => unreachable!(),
    };
    RequestResult {
        input,
        classes: (0..10).map(|d| d.to_string()).collect(),
        result: ExplainResult { run: "digits-mlp-d4e5f6".into(), index: 0, explanation, millis: 1.7 },
    }
}

#[test]
fn snapshots_of_a_logged_request_explained() {
    for (depth, suffix) in [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_nocolor")] {
        let mut app = app_with_requests(depth);
        ch(&mut app, '8');
        key(&mut app, KeyCode::Up);
        key(&mut app, KeyCode::Enter);
        app.update(Msg::Explain(ExplainEvent::ExplainedRequest(Box::new(request_result()))));
        let t = text(&render(&mut app, 80, 24));
        assert!(t.contains("request r44 #1/2 (1/3)") && t.contains("answered 7"), "{t}");
        assert!(t.contains("top classes") && t.contains("hl request"), "{t}");
        insta::assert_snapshot!(format!("explain_request_80x24{suffix}"), t);
    }
}

#[test]
fn without_raw_inputs_in_the_log_the_view_says_how_to_get_them() {
    let mut app = common::app();
    app.update(Msg::ServiceFeed(Box::new(common::service_feed())));
    assert!(ch(&mut app, 'r').is_empty());
    assert_eq!(app.view, View::Explain);
    let t = text(&render(&mut app, 80, 24));
    assert!(t.contains("--log-raw-inputs") && t.contains("test examples"), "{t}");
    insta::assert_snapshot!("explain_requests_none_80x24", t);
}
