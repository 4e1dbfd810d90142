//! The text CNN's numerics (Kim, 2014): the forward pass against PyTorch with the same weights
//! (a generated fixture), every parameter's gradient against central finite differences, and
//! the padding rule: a window that reaches into padding never wins the max, and padding added
//! to a text changes nothing.

use candle_core::{Device, Tensor};
use serde_json::Value;
use vigil::ml::data::InputShape;
use vigil::ml::model::Network;
use vigil::ml::spec::{Init, ModelSpec};

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> =
        v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let values: Vec<f32> =
        v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn spec(embed: usize, widths: Vec<usize>, filters: usize) -> ModelSpec {
    ModelSpec::TextCnn { embed, widths, filters, dropout: 0.0 }
}

fn ids(values: Vec<u32>, b: usize) -> Tensor {
    let l = values.len() / b;
    Tensor::from_vec(values, (b, l), &Device::Cpu).unwrap()
}

// Reference: bench/textcnn_reference.py (nn.Embedding, nn.Conv1d, nn.Linear with seeded weights,
// padded texts, one width longer than the texts) wrote tests/fixtures/textcnn_reference.json.
#[test]
fn text_cnn_matches_pytorch() {
    let text = std::fs::read_to_string("tests/fixtures/textcnn_reference.json").unwrap();
    let f: Value = serde_json::from_str(&text).unwrap();
    let n = |k: &str| f[k].as_u64().unwrap() as usize;
    let widths: Vec<usize> =
        f["widths"].as_array().unwrap().iter().map(|w| w.as_u64().unwrap() as usize).collect();
    let net = Network::build(
        &spec(n("embed"), widths, n("filters")),
        &InputShape::Text { max_len: n("max_len") },
        n("classes"),
        Some(n("vocab")),
        Init::XavierUniform,
        1,
        &Device::Cpu,
    )
    .unwrap();
    for (name, var) in net.vars() {
        let w = tensor(&f["weights"][name]);
        assert_eq!(w.dims(), var.dims(), "{name}: PyTorch's shape is Vigil's");
        var.set(&w).unwrap();
    }
    let x: Vec<u32> = f["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let got: Vec<f32> = net.forward(&ids(x, 3), None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = tensor(&f["logits"]).flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-5, "logit {i}: {g} vs PyTorch {w}");
    }
}

/// A scalar of the logits with every class and example weighted differently.
fn objective(net: &Network, x: &Tensor) -> Tensor {
    let logits = net.forward(x, None).unwrap();
    let (b, c) = logits.dims2().unwrap();
    let w: Vec<f32> = (0..b * c).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
    logits.mul(&Tensor::from_vec(w, (b, c), &Device::Cpu).unwrap()).unwrap().sum_all().unwrap()
}

#[test]
fn text_cnn_gradients_match_finite_differences() {
    // Three texts, the second and third padded; widths 1, 2 and 4 (4 is longer than both).
    let x = ids(vec![2, 5, 3, 7, 4, 6, 9, 1, 8, 0, 0, 0, 3, 0, 0, 0, 0, 0], 3);
    let net = Network::build(
        &spec(5, vec![1, 2, 4], 4),
        &InputShape::Text { max_len: 6 },
        3,
        Some(10),
        Init::XavierUniform,
        11,
        &Device::Cpu,
    )
    .unwrap();
    let grads = vigil::ml::kernels::backward(&objective(&net, &x)).unwrap();
    let value = || objective(&net, &x).to_scalar::<f32>().unwrap() as f64;
    let (mut checked, mut largest) = (0, 0f64);
    for (name, var) in net.vars() {
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let orig: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let len = orig.len();
        for k in [0, len / 5, len / 3, len / 2, 2 * len / 3, len - 1] {
            // The network is piecewise linear in each parameter (max and ReLU switch only at
            // ties), so a small step is exact away from a switch.
            let h = 1e-3f32;
            let at = |d: f32| {
                let mut v = orig.clone();
                v[k] += d;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                value()
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let analytic = g[k] as f64;
            largest = largest.max(analytic.abs());
            assert!(
                (numeric - analytic).abs() < 2e-3 + 1e-2 * numeric.abs(),
                "{name}[{k}]: analytic {analytic}, finite difference {numeric}"
            );
            checked += 1;
        }
        if name == "embedding.weight" {
            // Row 0 is padding: zeroed before the convolutions, so it gets no gradient at all.
            assert!(g[..5].iter().all(|v| *v == 0.0), "padding's embedding got a gradient: {:?}", &g[..5]);
        }
    }
    assert!(checked >= 40, "checked {checked} entries");
    assert!(largest > 1e-2, "gradients are all near zero ({largest}): the check would pass vacuously");
}

fn constant_net() -> Network {
    let net = Network::build(
        &spec(4, vec![2], 1),
        &InputShape::Text { max_len: 5 },
        2,
        Some(6),
        Init::XavierUniform,
        3,
        &Device::Cpu,
    )
    .unwrap();
    let set = |name: &str, v: f32| {
        let var = &net.vars().iter().find(|(n, _)| n == name).unwrap().1;
        var.set(&Tensor::full(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
    };
    // Every real token's embedding is -1 and the filter sums its window plus its bias: a
    // window over two real tokens gives bias - 8, one that runs past the text's end bias - 4,
    // and one over padding only (zeros) the bias itself.
    set("embedding.weight", -1.0);
    set("convs.0.weight", 1.0);
    set("convs.0.bias", 1.0);
    net
}

#[test]
fn a_window_that_reaches_into_padding_never_wins_the_max() {
    let net = constant_net();
    let features = |net: &Network| -> Vec<f32> {
        net.penultimate(&ids(vec![3, 4, 0, 0, 0], 1)).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    };
    // max(1 - 8) = -7, then ReLU: 0. A window past the end would give -3, padding 1.
    assert_eq!(features(&net), vec![0.0]);
    // Bias 10: the text's one window gives 2; past its end 6, padding only 10.
    let bias = &net.vars().iter().find(|(n, _)| n == "convs.0.bias").unwrap().1;
    bias.set(&Tensor::full(10.0f32, 1, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(features(&net), vec![2.0]);
    // A text of one token, shorter than the window: its first window (the token, then zeros).
    let one: Vec<f32> =
        net.penultimate(&ids(vec![3, 0, 0, 0, 0], 1)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(one, vec![6.0]);
}

#[test]
fn padding_does_not_change_the_answer() {
    let net = Network::build(
        &spec(6, vec![2, 3], 5),
        &InputShape::Text { max_len: 8 },
        3,
        Some(12),
        Init::XavierUniform,
        9,
        &Device::Cpu,
    )
    .unwrap();
    let short = net.forward(&ids(vec![4, 7, 2, 9], 1), None).unwrap();
    let long = net.forward(&ids(vec![4, 7, 2, 9, 0, 0, 0, 0], 1), None).unwrap();
    // Whatever the padding token's embedding holds.
    let table = &net.vars().iter().find(|(n, _)| n == "embedding.weight").unwrap().1;
    let mut rows: Vec<f32> = table.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    rows[..6].iter_mut().for_each(|v| *v = 50.0);
    table.set(&Tensor::from_vec(rows, (12, 6), &Device::Cpu).unwrap()).unwrap();
    let loud = net.forward(&ids(vec![4, 7, 2, 9, 0, 0, 0, 0], 1), None).unwrap();
    let v = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    for (a, b) in v(&short).iter().zip(v(&long)) {
        assert!((a - b).abs() < 1e-6, "{:?} vs {:?}", v(&short), v(&long));
    }
    assert_eq!(v(&long), v(&loud));
}
