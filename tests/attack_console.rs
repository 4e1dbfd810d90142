//! Adversarial examples in the console's Explain view: the keys and the requests they make, the
//! engine on a real run with a saved attack, and snapshots of the clean-vs-adversarial layout at
//! 80x24 and 160x48 in colour, in 16 colours and with NO_COLOR (colours checked on cells).

mod common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use vigil::engine::explain::{AdversarialResult, AttackChoice, ExplainCommand, ExplainEvent};
use vigil::ml::explain::{ExplainedInput, Explanation, Method};
use vigil::tui::app::{App, Effect, Msg};
use vigil::tui::theme::ColorDepth;

fn ch(app: &mut App, c: char) -> Vec<Effect> {
    app.update(Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)))
}

use common::{render, text};

const RUN: &str = "digits-mlp-d4e5f6";

fn choices() -> Vec<AttackChoice> {
    vec![
        AttackChoice {
            curve: "pgd-linf-20".into(),
            label: "PGD L∞ 20 steps".into(),
            eps: 0.1,
            accuracy: 0.4485,
        },
        AttackChoice { curve: "fgsm-linf".into(), label: "FGSM L∞".into(), eps: 0.25, accuracy: 0.0084 },
    ]
}

/// The Explain view's fixture (a "3", test example 0) and its PGD version read as an 8.
fn adversarial_result() -> AdversarialResult {
    let clean = match common::explain_events().remove(1) {
        Msg::Explain(ExplainEvent::Explained(r)) => r.explanation,
        _ => unreachable!("the fixture's second message is the explanation"),
    };
    let ExplainedInput::Dense(x) = &clean.input else { unreachable!() };
    // ±0.1 on every pixel, clipped to [0, 1]: the noise an L∞ attack leaves.
    let adv: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| (v + if i % 3 == 0 { 0.1 } else { -0.1 }).clamp(0.0, 1.0))
        .collect();
    let mut probabilities = vec![0.002f32; 10];
    probabilities[8] = 0.71;
    probabilities[3] = 0.2;
    probabilities[5] = 0.074;
    let adversarial = Explanation {
        method: Method::Saliency,
        input: ExplainedInput::Dense(adv),
        target: 8,
        predicted: 8,
        probabilities,
        attributions: clean
            .attributions
            .iter()
            .enumerate()
            .map(|(i, a)| if i % 2 == 0 { -a } else { *a })
            .collect(),
        completeness: None,
        ..clean.clone()
    };
    let clean = Explanation { method: Method::Saliency, completeness: None, ..clean };
    AdversarialResult {
        run: RUN.into(),
        index: 0,
        attack: choices()[0].clone(),
        clean,
        adversarial,
        norm: 0.1,
        norm_name: "L∞".into(),
        millis: 3.1,
    }
}

fn opened(depth: ColorDepth) -> App {
    let mut app = common::app_with(depth);
    ch(&mut app, '7');
    for m in common::explain_events() {
        app.update(m);
    }
    app
}

#[test]
fn the_adversarial_key_asks_for_both_explanations_and_cycles_attacks() {
    let mut app = opened(ColorDepth::TrueColor);
    // No attack saved for the run yet: the key says how to make one and asks for nothing.
    assert!(ch(&mut app, 'a').is_empty());
    assert!(app.status.as_ref().unwrap().text.contains(&format!("vigil attack {RUN}")));
    assert!(!app.explain.adversarial);

    // The engine lists the run's saved attacks after opening it; another run's list is ignored.
    app.update(Msg::Explain(ExplainEvent::Attacks { run: "other-run".into(), attacks: choices() }));
    assert!(app.explain.attacks.is_empty());
    app.update(Msg::Explain(ExplainEvent::Attacks { run: RUN.into(), attacks: choices() }));
    let adversarial = |index, attack: usize, method: &str| {
        vec![Effect::Explain(ExplainCommand::Adversarial {
            run: RUN.into(),
            index,
            method: method.into(),
            attack: choices()[attack].clone(),
        })]
    };
    assert_eq!(ch(&mut app, 'a'), adversarial(0, 0, "ig"));
    assert!(app.explain.adversarial && app.explain.pending);
    app.update(Msg::Explain(ExplainEvent::ExplainedAdversarial(Box::new(adversarial_result()))));
    assert!(!app.explain.pending);
    // Every navigation key keeps asking for the pair.
    assert_eq!(
        app.update(Msg::Key(KeyEvent::new(KeyCode::Right, KeyModifiers::NONE))),
        adversarial(1, 0, "ig")
    );
    assert_eq!(ch(&mut app, 'm'), adversarial(1, 0, "smoothgrad"));
    assert_eq!(ch(&mut app, 'A'), adversarial(1, 1, "smoothgrad"));
    assert_eq!(ch(&mut app, 'A'), adversarial(1, 0, "smoothgrad"), "attacks cycle");
    // Off again: back to the clean explanation alone.
    assert_eq!(
        ch(&mut app, 'a'),
        vec![Effect::Explain(ExplainCommand::Explain {
            run: RUN.into(),
            index: 1,
            method: "smoothgrad".into()
        })]
    );
    // The keys do nothing outside the Explain view.
    ch(&mut app, '2');
    assert!(ch(&mut app, 'a').is_empty() && ch(&mut app, 'A').is_empty());
}

#[test]
fn clean_and_adversarial_side_by_side_in_colour_16_colours_and_without() {
    for (depth, suffix) in
        [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_no_color"), (ColorDepth::Ansi16, "_ansi16")]
    {
        for (w, h) in [(80u16, 24u16), (160, 48)] {
            let mut app = opened(depth);
            app.update(Msg::Explain(ExplainEvent::Attacks { run: RUN.into(), attacks: choices() }));
            ch(&mut app, 'a');
            app.update(Msg::Explain(ExplainEvent::ExplainedAdversarial(Box::new(adversarial_result()))));
            app.status = None;
            let buf = render(&mut app, w, h);
            let t = text(&buf);
            for needle in ["clean · 3 95.0%", "ε=0.1 · 8 71.0%", "PGD L∞ 20 steps", "adversarial 8 71.0% ✗"]
            {
                assert!(t.contains(needle), "{needle:?} missing at {w}x{h}{suffix}:\n{t}");
            }
            if depth == ColorDepth::None {
                assert!(t.contains('#') && t.contains('='), "sign glyphs without colour:\n{t}");
                assert!(
                    buf.content().iter().all(|c| c.bg == ratatui::style::Color::Reset),
                    "no colour at all"
                );
            }
            if depth == ColorDepth::Ansi16 {
                for c in buf.content() {
                    assert!(
                        !matches!(c.bg, ratatui::style::Color::Rgb(..) | ratatui::style::Color::Indexed(_))
                            && !matches!(
                                c.fg,
                                ratatui::style::Color::Rgb(..) | ratatui::style::Color::Indexed(_)
                            ),
                        "only the 16 named colours"
                    );
                }
            }
            insta::assert_snapshot!(format!("explain_adversarial_{w}x{h}{suffix}"), t);
        }
    }
}

#[test]
fn the_engine_explains_a_saved_adversarial_example_beside_its_input() {
    use std::sync::mpsc;
    use vigil::ml::attack::curve::{CurveOptions, robustness_curve, save};
    use vigil::ml::attack::{Attack, Norm};
    use vigil::ml::data::preprocess::PreparedData;
    use vigil::ml::train::load_trained;
    use vigil::store::{CheckpointKind, RunStore};

    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let run = common::trained_logreg(&store, 3);
    let t = load_trained(&run, CheckpointKind::Best).unwrap();
    let data = PreparedData::build(&t.spec, Some(&t.pipeline)).unwrap();
    let opts = CurveOptions {
        attack: Attack::fgsm(Norm::Linf, 0.0),
        eps: vec![0.0, 0.3],
        fixed_step: None,
        detector: None,
        split: "test".into(),
        checkpoint: "best".into(),
    };
    let (mut c, sets) = robustness_curve(&t.network, &t.pipeline, &data.test, &opts).unwrap();
    save(&run, &mut c, &sets).unwrap();

    let (ev_tx, ev_rx) = mpsc::channel();
    let engine = vigil::engine::explain::spawn(store.clone(), move |e| ev_tx.send(e).is_ok()).unwrap();
    let cmd_tx = engine.commands.clone();
    cmd_tx.send(ExplainCommand::Open(run.id.clone())).unwrap();
    let next = || ev_rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the engine answers");
    assert!(matches!(next(), ExplainEvent::Opened(_)));
    let attacks = match next() {
        ExplainEvent::Attacks { run: r, attacks } => {
            assert_eq!(r, run.id);
            attacks
        }
        other => panic!("expected the saved attacks, got {other:?}"),
    };
    // Radius 0 is not an attack to show.
    assert_eq!(attacks.len(), 1);
    assert_eq!((attacks[0].curve.as_str(), attacks[0].eps), ("fgsm-linf", 0.3));
    cmd_tx
        .send(ExplainCommand::Adversarial {
            run: run.id.clone(),
            index: 5,
            method: "saliency".into(),
            attack: attacks[0].clone(),
        })
        .unwrap();
    let r = match next() {
        ExplainEvent::ExplainedAdversarial(r) => r,
        other => panic!("expected the pair, got {other:?}"),
    };
    assert_eq!(r.index, 5);
    assert!((r.norm - 0.3).abs() < 1e-5, "FGSM moves every example by ε: {}", r.norm);
    assert_eq!(r.adversarial.predicted as u32, sets[1].adversarial_pred[5]);
    assert_eq!(r.clean.predicted as u32, sets[1].clean_pred[5]);
    let (ExplainedInput::Dense(a), ExplainedInput::Dense(b)) = (&r.clean.input, &r.adversarial.input) else {
        panic!("digits are dense")
    };
    let moved = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!((moved - 0.3).abs() < 1e-5, "{moved}");
    // Closing the commands ends the engine's thread.
    drop(cmd_tx);
    let vigil::engine::Handle { commands, join } = engine;
    drop(commands);
    let vigil::engine::Join::Thread(t) = join else { panic!("the explanation engine runs on a thread") };
    t.join().unwrap();
}
