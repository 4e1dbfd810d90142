//! Attributions checked against Captum: `tests/fixtures/captum_reference.json` holds Captum's
//! attributions (saliency with `abs=False`, InputXGradient, integrated gradients with three
//! rules and two baselines, occlusion) for small networks of every kind whose weights both sides
//! compute from the same formula. It was written by
//! `python bench/captum_reference.py fixtures tests/fixtures/captum_reference.json`, so these
//! tests need no Python. The same networks also check that a batch's attributions equal the
//! per-input ones, for every method.

mod common;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use vigil::ml::data::InputShape;
use vigil::ml::explain::{Explainer, Method};
use vigil::ml::model::Network;

#[derive(Deserialize)]
struct Fixture {
    tool: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    model: String,
    input_shape: InputShape,
    classes: usize,
    vocabulary: Option<usize>,
    inputs: serde_json::Value,
    targets: Vec<usize>,
    logits: Vec<Vec<f32>>,
    results: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    settings: Method,
    attributions: Vec<Vec<f32>>,
    delta: Option<Vec<f64>>,
}

fn fixture() -> Fixture {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/captum_reference.json"))
            .expect("the fixture is in the repository");
    serde_json::from_str(&text).expect("the fixture parses")
}

/// The network of a case with the formula weights of `formula_weights` in the script.
fn network(case: &Case) -> Network {
    common::reference::formula_network(&case.model, &case.input_shape, case.classes, case.vocabulary)
}

fn inputs(case: &Case) -> Tensor {
    let n = case.targets.len();
    let mut shape = vec![n];
    shape.extend(case.input_shape.dims());
    match &case.input_shape {
        InputShape::Text { .. } => {
            let ids: Vec<Vec<u32>> = serde_json::from_value(case.inputs.clone()).unwrap();
            Tensor::from_vec(ids.concat(), shape, &Device::Cpu).unwrap()
        }
        _ => {
            let x: Vec<Vec<f32>> = serde_json::from_value(case.inputs.clone()).unwrap();
            Tensor::from_vec(x.concat(), shape, &Device::Cpu).unwrap()
        }
    }
}

#[test]
fn networks_match_pytorch() {
    for case in fixture().cases {
        let net = network(&case);
        let logits = net.forward(&inputs(&case), None).unwrap().to_vec2::<f32>().unwrap();
        for (ours, theirs) in logits.iter().zip(&case.logits) {
            for (a, b) in ours.iter().zip(theirs) {
                assert!((a - b).abs() < 1e-5, "{}: logits {ours:?} vs PyTorch {theirs:?}", case.name);
            }
        }
    }
}

#[test]
fn attributions_match_captum() {
    let f = fixture();
    let mut checked = 0;
    for case in &f.cases {
        let net = network(case);
        let x = inputs(case);
        let explainer = Explainer::new(&net);
        for reference in &case.results {
            let ours = explainer.explain(&x, &reference.settings, Some(&case.targets)).unwrap();
            for (i, (e, want)) in ours.iter().zip(&reference.attributions).enumerate() {
                assert_eq!(e.attributions.len(), want.len(), "{} {:?}", case.name, reference.settings);
                for (j, (a, b)) in e.attributions.iter().zip(want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "{} {:?}, input {i}, value {j}: vigil {a}, {} {b}",
                        case.name,
                        reference.settings,
                        f.tool
                    );
                }
                if let (Some(deltas), Some(c)) = (&reference.delta, e.completeness) {
                    assert!(
                        (c.gap - deltas[i]).abs() < 1e-4,
                        "{} {:?}: completeness gap {} vs Captum's delta {}",
                        case.name,
                        reference.settings,
                        c.gap,
                        deltas[i]
                    );
                }
                checked += 1;
            }
        }
    }
    // 7 networks x 6 settings x 3 inputs: a fixture that lost cases would pass vacuously.
    assert_eq!(checked, 7 * 6 * 3);
}

#[test]
fn a_batch_equals_its_inputs_alone_for_every_method_and_model() {
    for case in fixture().cases {
        let net = network(&case);
        let x = inputs(&case);
        let explainer = Explainer::new(&net);
        let mut methods: Vec<Method> = case.results.iter().map(|r| r.settings.clone()).collect();
        methods.push(Method::SmoothGrad { noise_level: 0.2, samples: 8, seed: 7 });
        for method in &methods {
            let batch = explainer.explain(&x, method, Some(&case.targets)).unwrap();
            for (i, together) in batch.iter().enumerate() {
                let alone = explainer
                    .explain(&x.narrow(0, i, 1).unwrap(), method, Some(&case.targets[i..=i]))
                    .unwrap()
                    .remove(0);
                assert_eq!(together.predicted, alone.predicted);
                for (a, b) in together.attributions.iter().zip(&alone.attributions) {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{} {method:?} input {i}: {a} vs {b}",
                        case.name
                    );
                }
            }
            // Small chunks through the network give the same result as one pass.
            let chunked = explainer.clone().max_points(5).explain(&x, method, Some(&case.targets)).unwrap();
            for (a, b) in chunked.iter().zip(&batch) {
                for (p, q) in a.attributions.iter().zip(&b.attributions) {
                    assert!(
                        (p - q).abs() <= 1e-5 * q.abs().max(1.0),
                        "{} {method:?} chunked: {p} vs {q}",
                        case.name
                    );
                }
            }
        }
    }
}
