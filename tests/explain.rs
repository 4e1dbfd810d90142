//! Attribution methods on networks whose answers are known: Captum's analytic case, occlusion
//! worked out by hand, saliency against finite differences through max pooling, the
//! completeness of integrated gradients on a trained digits MLP, the sanity checks with their
//! model-independent control, and every kind of bad request.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil::error::Error;
use vigil::ml::data::InputShape;
use vigil::ml::data::preprocess::PreparedData;
use vigil::ml::explain::sanity::{deletion_test, randomisation_test};
use vigil::ml::explain::{Baseline, Explainer, Method, Rule};
use vigil::ml::model::Network;
use vigil::ml::spec::{self, Activation, Init, ModelSpec};
use vigil::ml::train::{Silent, TrainControl, load_trained};
use vigil::store::{CheckpointKind, RunStore};

fn mlp(inputs: usize, hidden: &[usize], classes: usize, act: Activation) -> Network {
    let spec = ModelSpec::Mlp { hidden: hidden.to_vec(), activation: act, dropout: 0.0 };
    Network::build(
        &spec,
        &InputShape::Tabular { features: inputs },
        classes,
        None,
        Init::XavierUniform,
        1,
        &Device::Cpu,
    )
    .unwrap()
}

fn set(net: &Network, name: &str, values: &[f32]) {
    let (_, var) = net.vars().iter().find(|(n, _)| n == name).expect("the parameter exists");
    var.set(&Tensor::from_slice(values, var.shape(), &Device::Cpu).unwrap()).unwrap();
}

fn row(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, (1, values.len()), &Device::Cpu).unwrap()
}

fn ig(steps: usize, rule: Rule) -> Method {
    Method::Ig { steps, rule, baseline: Baseline::Zero }
}

/// F(x) = 1 − ReLU(1 − x): an MLP with one hidden ReLU unit (weight −1, bias 1) and an output
/// (weight −1, bias 1).
fn captum_basic_model() -> Network {
    let net = mlp(1, &[1], 1, Activation::Relu);
    set(&net, "layers.0.weight", &[-1.0]);
    set(&net, "layers.0.bias", &[1.0]);
    set(&net, "layers.1.weight", &[-1.0]);
    set(&net, "layers.1.bias", &[1.0]);
    net
}

// Captum's analytic case (tests/attr/test_integrated_gradients_basic.py, BasicModel):
// F(x) = 1 − ReLU(1 − x) at x = 1 from baseline 0. F(1) − F(0) = 1 and dF/dx = 1 on the whole
// open path, so IG = 1 exactly, for every rule, and the completeness gap is 0.
#[test]
fn integrated_gradients_on_captums_analytic_case() {
    let net = captum_basic_model();
    let explainer = Explainer::new(&net);
    assert_eq!(net.forward(&row(&[1.0]), None).unwrap().to_vec2::<f32>().unwrap(), vec![vec![1.0]]);
    for rule in [Rule::GaussLegendre, Rule::RiemannMiddle, Rule::RiemannLeft] {
        let e = explainer.explain(&row(&[1.0]), &ig(50, rule), None).unwrap().remove(0);
        assert!((e.attributions[0] - 1.0).abs() < 1e-6, "{rule:?}: {:?}", e.attributions);
        let c = e.completeness.unwrap();
        assert!(c.gap < 1e-6, "{rule:?}: gap {}", c.gap);
        assert_eq!((c.output, c.baseline_output), (1.0, 0.0));
    }
    // Gradient x input at x = 1 is 1 too; at x = 3 the function is flat, so both are 0, while
    // IG still gives the whole difference F(3) − F(0) = 1 (up to the rule: the kink at x = 1
    // falls between Gauss-Legendre nodes).
    let e = explainer.explain(&row(&[3.0]), &Method::GradInput, None).unwrap().remove(0);
    assert_eq!(e.attributions, vec![0.0]);
    let e = explainer.explain(&row(&[3.0]), &ig(300, Rule::GaussLegendre), None).unwrap().remove(0);
    let c = e.completeness.unwrap();
    assert!((c.output - c.baseline_output - 1.0).abs() < 1e-6);
    assert!(c.gap < 1e-2, "gap {}", c.gap);
}

/// A fixed network for occlusion by hand: hidden = ReLU(W1 x + b1) with W1 = [[1, −1, 0],
/// [0, 1, 1]], b1 = [0, −0.5]; output = h0 + 2 h1.
fn occlusion_model() -> Network {
    let net = mlp(3, &[2], 1, Activation::Relu);
    set(&net, "layers.0.weight", &[1.0, -1.0, 0.0, 0.0, 1.0, 1.0]);
    set(&net, "layers.0.bias", &[0.0, -0.5]);
    set(&net, "layers.1.weight", &[1.0, 2.0]);
    set(&net, "layers.1.bias", &[0.0]);
    net
}

#[test]
fn occlusion_gives_the_values_worked_out_by_hand() {
    // x = [2, 1, 3]: h = ReLU([1, 3.5]) = [1, 3.5], F = 8.
    // Window 2, stride 1 (Captum: ceil((3 − 2) / 1) + 1 = 2 positions):
    //   zero {0, 1}: x = [0, 0, 3], h = [0, 2.5], F = 5, drop 3
    //   zero {1, 2}: x = [2, 0, 0], h = [2, 0],   F = 2, drop 6
    //   feature 0: 3 / 1, feature 1: (3 + 6) / 2 = 4.5, feature 2: 6 / 1.
    // Window 1: drops 8 − F([0, 1, 3]) = 8 − 7 = 1, 8 − F([2, 0, 3]) = 8 − 7 = 1,
    //   8 − F([2, 1, 0]) = 8 − 2 = 6.
    // Window 3, stride 2: one position covering everything, drop 8 − F(0) = 8.
    // A fill of 1 instead of 0, window 1: F([1, 1, 3]) = 0 + 2 * 3.5 = 7 → 1,
    //   F([2, 1, 3]) = 8 → 0, F([2, 1, 1]) = 1 + 2 * 1.5 = 4 → 4.
    let net = occlusion_model();
    let explainer = Explainer::new(&net);
    let x = row(&[2.0, 1.0, 3.0]);
    let run = |window, stride, baseline| {
        explainer
            .explain(&x, &Method::Occlusion { window, stride, baseline }, None)
            .unwrap()
            .remove(0)
            .attributions
    };
    assert_eq!(run(2, 1, Baseline::Zero), vec![3.0, 4.5, 6.0]);
    assert_eq!(run(1, 1, Baseline::Zero), vec![1.0, 1.0, 6.0]);
    assert_eq!(run(3, 2, Baseline::Zero), vec![8.0, 8.0, 8.0]);
    assert_eq!(run(1, 1, Baseline::Constant(1.0)), vec![1.0, 0.0, 4.0]);
    // Gradient x input by hand: dF/dx = W1ᵀ [1, 2] = [1, 1, 2] (both units active).
    let e = explainer.explain(&x, &Method::GradInput, None).unwrap().remove(0);
    assert_eq!(e.attributions, vec![2.0, 1.0, 6.0]);
}

#[test]
fn saliency_equals_finite_differences_through_max_pooling() {
    // A 9x9 image (odd: pooling crops an edge) through two conv + 2x2 max-pool blocks. If the
    // pooling gradient were candle's max_pool2d's (a quarter of the true one), every gradient
    // through it would be off by 4x.
    let spec = ModelSpec::Cnn {
        channels: vec![3, 4],
        kernel: 3,
        dense: vec![6],
        activation: Activation::Tanh,
        dropout: 0.0,
    };
    let shape = InputShape::Image { channels: 1, height: 9, width: 9 };
    let net = Network::build(&spec, &shape, 3, None, Init::KaimingNormal, 11, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x: Vec<f32> = (0..81).map(|_| rng.random::<f32>()).collect();
    let input = Tensor::from_slice(&x, (1, 1, 9, 9), &Device::Cpu).unwrap();
    let target = 2;
    let e = Explainer::new(&net).explain(&input, &Method::Saliency, Some(&[target])).unwrap().remove(0);
    let f = |v: &[f32]| -> f64 {
        let t = Tensor::from_slice(v, (1, 1, 9, 9), &Device::Cpu).unwrap();
        net.forward(&t, None).unwrap().to_vec2::<f32>().unwrap()[0][target] as f64
    };
    // Small enough that no pooling window changes its maximum within ±h, large enough that
    // f32 rounding (about 1e-7 |F| / h) stays near 1e-4.
    let h = 1e-3f32;
    let mut largest = 0f64;
    for i in 0..81 {
        let (mut plus, mut minus) = (x.clone(), x.clone());
        plus[i] += h;
        minus[i] -= h;
        let numeric = (f(&plus) - f(&minus)) / (2.0 * h as f64);
        largest = largest.max(numeric.abs());
        assert!(
            (e.attributions[i] as f64 - numeric).abs() < 2e-3,
            "pixel {i}: saliency {}, finite difference {numeric}",
            e.attributions[i]
        );
    }
    assert!(largest > 0.05, "the check needs gradients that are not all tiny: {largest}");
}

/// Trains digits-mlp (about two seconds in release) into a temporary store.
fn trained_digits_mlp() -> (tempfile::TempDir, vigil::ml::train::Trained, PreparedData) {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let (spec, _) = spec::resolve("digits-mlp", std::path::Path::new("models")).unwrap();
    let run = store.create(&spec).unwrap();
    vigil::ml::train::train(&run, false, &mut Silent, &TrainControl::new()).unwrap();
    let trained = load_trained(&run, CheckpointKind::Best).unwrap();
    let data = PreparedData::build(&trained.spec, Some(&trained.pipeline)).unwrap();
    (dir, trained, data)
}

#[test]
fn integrated_gradients_on_digits_mlp_converge_to_completeness() {
    // The whole test split: on a ReLU network the path is piecewise linear, so Gauss-Legendre
    // converges slowly and unevenly per input; the median over 359 inputs shrinks steadily
    // (release, seed 42: 1.8e-3, 8.0e-4, 4.2e-4, 1.2e-4).
    let (_dir, trained, data) = trained_digits_mlp();
    let idx: Vec<usize> = (0..data.test.labels.len()).collect();
    let x = data.test.features.batch(&idx, &Device::Cpu).unwrap();
    let explainer = Explainer::new(&trained.network);
    let mut medians = Vec::new();
    for steps in [20, 50, 100, 300] {
        let mut gaps: Vec<f64> = explainer
            .explain(&x, &ig(steps, Rule::GaussLegendre), None)
            .unwrap()
            .iter()
            .map(|e| e.completeness.unwrap().relative_gap())
            .collect();
        gaps.sort_by(f64::total_cmp);
        medians.push(gaps[gaps.len() / 2]);
    }
    assert!(
        medians.windows(2).all(|w| w[1] < w[0]),
        "the median relative gap must shrink with steps: {medians:?}"
    );
    assert!(medians[3] < 1e-2, "median relative gap at 300 steps: {}", medians[3]);
}

#[test]
fn randomisation_and_deletion_tests_on_digits_mlp() {
    let (_dir, trained, data) = trained_digits_mlp();
    let net = &trained.network;
    let idx: Vec<usize> = (0..40).collect();
    let x = data.test.features.batch(&idx, &Device::Cpu).unwrap();
    let before = net.forward(&x, None).unwrap().to_vec2::<f32>().unwrap();
    let explainer = Explainer::new(net);
    let methods = [Method::Saliency, ig(50, Rule::GaussLegendre)];
    let r = randomisation_test(&explainer, trained.spec.init, &x, &methods, 3).unwrap();
    assert_eq!(r.layers, vec!["layers.2", "layers.1", "layers.0"]);
    for curve in &r.curves[..2] {
        let last = curve.correlations.last().unwrap().unwrap();
        assert!(last < 0.5 && curve.passed, "{}: {:?}", curve.name, curve.correlations);
    }
    let control = &r.curves[2];
    assert_eq!(control.name, "control");
    assert!(control.correlations.iter().all(|c| c.unwrap() > 0.99), "{:?}", control.correlations);
    assert!(!control.passed, "the model-independent control must be reported as failing");
    // The check worked on a copy: the trained network is untouched.
    assert_eq!(net.forward(&x, None).unwrap().to_vec2::<f32>().unwrap(), before);

    let labels = &data.test.labels[..40];
    let d = deletion_test(&explainer, &x, labels, &methods, 10, 3).unwrap();
    assert_eq!(d.fractions.len(), 11);
    assert!(d.random.accuracy[0] > 0.9, "{:?}", d.random.accuracy);
    let ig_curve = &d.curves[1];
    assert!(
        ig_curve.passed && ig_curve.auc < 0.5 * d.random.auc,
        "IG {} vs random {}",
        ig_curve.auc,
        d.random.auc
    );
}

#[test]
fn reinitialising_a_layer_changes_that_layer_only() {
    let net = mlp(4, &[5], 3, Activation::Relu);
    let before: Vec<Vec<f32>> =
        net.vars().iter().map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
    set(&net, "layers.1.bias", &[0.5, 0.5, 0.5]);
    net.reinit_layer("layers.1", Init::XavierUniform, 9).unwrap();
    let after: Vec<Vec<f32>> =
        net.vars().iter().map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
    assert_eq!(after[0], before[0], "layers.0.weight kept");
    assert_eq!(after[1], before[1], "layers.0.bias kept");
    assert_ne!(after[2], before[2], "layers.1.weight redrawn");
    assert_eq!(after[3], vec![0.0; 3], "biases start at zero");
    // Xavier uniform bound sqrt(6 / (5 + 3)).
    assert!(after[2].iter().all(|w| w.abs() <= (6.0f32 / 8.0).sqrt()));
    let err = net.reinit_layer("conv9", Init::XavierUniform, 9).unwrap_err();
    assert!(matches!(err, Error::Input(_)) && err.to_string().contains("layers.0, layers.1"), "{err}");

    let rnn = Network::build(
        &ModelSpec::Rnn { cell: vigil::ml::spec::Cell::Gru, hidden: 4, layers: 2, dropout: 0.0 },
        &InputShape::Sequence { steps: 5, features: 2 },
        3,
        None,
        Init::XavierUniform,
        1,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(rnn.layer_names(), vec!["rnn.l0", "rnn.l1", "head"]);
}

#[test]
fn smoothgrad_without_noise_is_the_gradient_and_is_seeded() {
    let net = occlusion_model();
    let explainer = Explainer::new(&net);
    let x = row(&[2.0, 1.0, 3.0]);
    let saliency = explainer.explain(&x, &Method::Saliency, None).unwrap().remove(0);
    assert_eq!(saliency.attributions, vec![1.0, 1.0, 2.0]);
    let quiet = Method::SmoothGrad { noise_level: 0.0, samples: 4, seed: 1 };
    assert_eq!(explainer.explain(&x, &quiet, None).unwrap()[0].attributions, saliency.attributions);
    let noisy = |seed| Method::SmoothGrad { noise_level: 0.5, samples: 16, seed };
    let a = explainer.explain(&x, &noisy(1), None).unwrap().remove(0).attributions;
    assert_eq!(a, explainer.explain(&x, &noisy(1), None).unwrap().remove(0).attributions);
    assert_ne!(a, explainer.explain(&x, &noisy(2), None).unwrap().remove(0).attributions);
}

#[test]
fn probability_output_is_attributed_when_asked() {
    // Two classes with logits (x, -x): p0 = sigmoid(2x), dp0/dx = 2 p0 (1 - p0).
    let net = Network::build(
        &ModelSpec::LogReg,
        &InputShape::Tabular { features: 1 },
        2,
        None,
        Init::XavierUniform,
        1,
        &Device::Cpu,
    )
    .unwrap();
    set(&net, "layers.0.weight", &[1.0, -1.0]);
    let e = Explainer::new(&net)
        .output(vigil::ml::explain::Output::Probability)
        .explain(&row(&[0.5]), &Method::Saliency, Some(&[0]))
        .unwrap()
        .remove(0);
    let p = 1.0 / (1.0 + (-1.0f32).exp());
    assert!((e.attributions[0] - 2.0 * p * (1.0 - p)).abs() < 1e-6, "{:?}", e.attributions);
}

#[test]
fn bad_requests_are_refused_with_what_is_wrong() {
    let net = occlusion_model();
    let explainer = Explainer::new(&net);
    let x = row(&[2.0, 1.0, 3.0]);
    let refused = |method: Method, targets: Option<&[usize]>, needle: &str| {
        let err = explainer.explain(&x, &method, targets).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        assert_eq!(err.exit_code(), 2);
    };
    refused(ig(0, Rule::GaussLegendre), None, "between 1 and 10000 steps");
    refused(ig(1, Rule::RiemannLeft), None, "between 2 and 10000 steps");
    refused(
        Method::Ig { steps: 5, rule: Rule::GaussLegendre, baseline: Baseline::Custom(vec![0.0; 2]) },
        None,
        "needs 3 values",
    );
    refused(
        Method::Ig { steps: 5, rule: Rule::GaussLegendre, baseline: Baseline::Constant(f32::NAN) },
        None,
        "not a finite",
    );
    refused(Method::Occlusion { window: 4, stride: 1, baseline: Baseline::Zero }, None, "between 1 and 3");
    refused(Method::Occlusion { window: 2, stride: 3, baseline: Baseline::Zero }, None, "stride 3");
    refused(Method::SmoothGrad { noise_level: -1.0, samples: 5, seed: 0 }, None, "noise level");
    refused(
        Method::SmoothGrad { noise_level: 0.1, samples: 0, seed: 0 },
        None,
        "between 1 and 10000 samples",
    );
    refused(Method::Saliency, Some(&[1]), "target class 1 does not exist");
    refused(Method::Saliency, Some(&[0, 0]), "2 targets for 1 inputs");
    let err = explainer.explain(&row(&[1.0, 2.0]), &Method::Saliency, None).unwrap_err();
    assert!(err.to_string().contains("inputs of shape [3]"), "{err}");
    let err = Method::named("gradcam", &InputShape::Tabular { features: 3 }).unwrap_err();
    assert!(err.to_string().contains("saliency, grad-input, ig, smoothgrad, occlusion"), "{err}");
}

/// Two layers, three tokens, two heads, worked by hand:
///
/// layer 1, heads averaged: A1 = [[.6 .2 .2] [.5 .5 0] [0 .4 .6]]
///   Â1 = (A1 + I)/2 = [[.8 .1 .1] [.25 .75 0] [0 .2 .8]]
/// layer 2, one pattern in both heads: A2 = [[0 1 0] [0 0 1] [1 0 0]]
///   Â2 = [[.5 .5 0] [0 .5 .5] [.5 0 .5]]
/// R = Â2 Â1 = [[.525 .425 .05] [.125 .475 .4] [.4 .15 .45]]
#[test]
fn attention_rollout_matches_a_hand_computation() {
    let d = &candle_core::Device::Cpu;
    // The heads of layer 1 differ; their mean is A1.
    let h1a = [0.7f32, 0.1, 0.2, 0.5, 0.5, 0.0, 0.0, 0.8, 0.2];
    let h1b = [0.5f32, 0.3, 0.2, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0];
    let l1 =
        candle_core::Tensor::from_iter(h1a.into_iter().chain(h1b), d).unwrap().reshape((1, 2, 3, 3)).unwrap();
    let p = [0f32, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let l2 =
        candle_core::Tensor::from_iter(p.into_iter().chain(p), d).unwrap().reshape((1, 2, 3, 3)).unwrap();
    let r = vigil::ml::explain::rollout::rollout(&[l1.clone(), l2.clone()])
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want = [[0.525, 0.425, 0.05], [0.125, 0.475, 0.4], [0.4, 0.15, 0.45]];
    for (row, w) in r.iter().zip(want) {
        for (a, b) in row.iter().zip(w) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
    }

    // CLS pooling reads row 0; mean pooling over tokens 0 and 1 (token 2 padding) averages
    // rows 0 and 1 and zeroes token 2: [.325 .45 0].
    let mask = candle_core::Tensor::new(&[[1f32, 1.0, 0.0]], d).unwrap();
    let maps = |pooling| vigil::ml::model::AttentionMaps {
        layers: vec![l1.clone(), l2.clone()],
        mask: mask.clone(),
        pooling,
        prepended: 0,
        patch: 1,
    };
    let cls = vigil::ml::explain::rollout::pooled_rollout(&maps(vigil::ml::spec::Pooling::Cls)).unwrap();
    for (a, b) in cls[0].iter().zip([0.525, 0.425, 0.0]) {
        assert!((a - b).abs() < 1e-6, "{cls:?}");
    }
    let mean = vigil::ml::explain::rollout::pooled_rollout(&maps(vigil::ml::spec::Pooling::Mean)).unwrap();
    for (a, b) in mean[0].iter().zip([0.325, 0.45, 0.0]) {
        assert!((a - b).abs() < 1e-6, "{mean:?}");
    }
    // A prepended CLS vector is not a token: its column is left out.
    let cls_vector = vigil::ml::model::AttentionMaps { prepended: 1, ..maps(vigil::ml::spec::Pooling::Cls) };
    let v = vigil::ml::explain::rollout::pooled_rollout(&cls_vector).unwrap();
    assert_eq!(v[0].len(), 2);
    assert!((v[0][0] - 0.425).abs() < 1e-6 && v[0][1] == 0.0, "{v:?}");
}
