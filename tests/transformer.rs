//! The Transformer encoder's numerics: one layer against PyTorch's `nn.TransformerEncoderLayer`
//! with the same weights (both norm placements, with padding), and the gradients of whole tiny
//! seeded models (text with CLS and mean pooling, and a numeric sequence) against central
//! finite differences.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use vigil::ml::data::InputShape;
use vigil::ml::model::Network;
use vigil::ml::model::layers::Dense;
use vigil::ml::model::transformer::{EncoderLayer, LayerNorm};
use vigil::ml::spec::{Init, ModelSpec, NormPlacement, Pooling};

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> =
        v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let values: Vec<f32> =
        v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn layer_from(weights: &Value) -> EncoderLayer {
    let w = |name: &str| tensor(&weights[format!("encoder.layer.0.{name}")]);
    let dense = |name: &str| Dense {
        weight: w(&format!("{name}.weight")),
        bias: w(&format!("{name}.bias")),
        quant: None,
    };
    let norm = |name: &str| LayerNorm {
        weight: w(&format!("{name}.weight")),
        bias: w(&format!("{name}.bias")),
        eps: 1e-5,
    };
    EncoderLayer {
        query: dense("attention.self.query"),
        key: dense("attention.self.key"),
        value: dense("attention.self.value"),
        attn_out: dense("attention.output.dense"),
        attn_norm: norm("attention.output.LayerNorm"),
        ff_in: dense("intermediate.dense"),
        ff_out: dense("output.dense"),
        ff_norm: norm("output.LayerNorm"),
    }
}

// Reference: bench/transformer_reference.py (PyTorch's nn.TransformerEncoderLayer, batch_first,
// gelu, dropout 0, with src_key_padding_mask) wrote tests/fixtures/transformer_reference.json.
#[test]
fn transformer_layer_matches_pytorch() {
    let text = std::fs::read_to_string("tests/fixtures/transformer_reference.json").unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let heads = fixture["heads"].as_u64().unwrap() as usize;
    for case in fixture["cases"].as_array().unwrap() {
        let norm =
            if case["norm_first"].as_bool().unwrap() { NormPlacement::Pre } else { NormPlacement::Post };
        let layer = layer_from(&case["weights"]);
        let x = tensor(&case["input"]);
        let (b, l, _) = x.dims3().unwrap();
        let mask: Vec<f32> =
            case["mask"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mask_t = Tensor::from_vec(mask.clone(), (b, l), &Device::Cpu).unwrap();
        let bias = ((&mask_t - 1.0).unwrap() * 1e9).unwrap().reshape((b, 1, 1, l)).unwrap();
        // Both the differentiable path (a variable input) and the no-gradient fused path.
        for tracked in [false, true] {
            let input =
                if tracked { candle_core::Var::from_tensor(&x).unwrap().into_inner() } else { x.clone() };
            let y = layer.forward(&input, &bias, heads, norm, 0.0, &mut None).unwrap();
            let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            let want: Vec<f32> = tensor(&case["output"]).flatten_all().unwrap().to_vec1().unwrap();
            let e = got.len() / (b * l);
            let mut compared = 0;
            for (pos, real) in mask.iter().enumerate() {
                if *real == 0.0 {
                    continue;
                }
                for j in 0..e {
                    let (g, w) = (got[pos * e + j], want[pos * e + j]);
                    assert!(
                        (g - w).abs() < 2e-5,
                        "{norm:?} tracked={tracked} position {pos} value {j}: {g} vs PyTorch {w}"
                    );
                    compared += 1;
                }
            }
            assert_eq!(compared, 8 * e, "the fixture has 8 real tokens");
        }
    }
}

fn tiny(spec: &ModelSpec, input: &InputShape, vocab: Option<usize>) -> Network {
    Network::build(spec, input, 3, vocab, Init::XavierUniform, 5, &Device::Cpu).unwrap()
}

fn spec(pooling: Pooling, norm: NormPlacement) -> ModelSpec {
    ModelSpec::Transformer {
        dim: 8,
        heads: 2,
        layers: 2,
        ff: 12,
        dropout: 0.0,
        pooling,
        norm,
        head: vec![5],
        patch: 1,
    }
}

/// A scalar of the logits with every class and example weighted differently.
fn objective(net: &Network, x: &Tensor) -> Tensor {
    let logits = net.forward(x, None).unwrap();
    let (b, c) = logits.dims2().unwrap();
    let w: Vec<f32> = (0..b * c).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
    logits.mul(&Tensor::from_vec(w, (b, c), &Device::Cpu).unwrap()).unwrap().sum_all().unwrap()
}

/// Every parameter's analytic gradient against central differences, at a few entries each.
fn check_gradients(net: &Network, x: &Tensor) {
    // Embeddings start at N(0, 0.02²), where the first layer norm is so steep that a finite
    // difference of any usable step is not the derivative; values of order 1 keep it smooth.
    for (name, var) in net.vars().iter().filter(|(n, _)| n.starts_with("embeddings.")) {
        let n = var.elem_count();
        let v: Vec<f32> = (0..n).map(|i| 0.8 * ((i * 7 + name.len()) as f32).sin()).collect();
        var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
    }
    let grads = vigil::ml::kernels::backward(&objective(net, x)).unwrap();
    let value = |net: &Network| objective(net, x).to_scalar::<f32>().unwrap() as f64;
    let mut checked = 0;
    let mut largest = 0f64;
    for (name, var) in net.vars() {
        let g: Vec<f32> = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
            None => panic!("{name} has no gradient"),
        };
        let orig: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let n = orig.len();
        for k in [0, n / 3, n / 2, n - 1] {
            let h = 1e-2f32;
            let mut plus = orig.clone();
            plus[k] += h;
            var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let fp = value(net);
            let mut minus = orig.clone();
            minus[k] -= h;
            var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let fm = value(net);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let numeric = (fp - fm) / (2.0 * h as f64);
            let analytic = g[k] as f64;
            largest = largest.max(analytic.abs());
            assert!(
                (numeric - analytic).abs() < 3e-3 + 2e-2 * numeric.abs(),
                "{name}[{k}]: analytic {analytic}, finite difference {numeric}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "checked {checked} entries");
    assert!(largest > 1e-2, "gradients are all near zero ({largest}): the check would pass vacuously");
}

#[test]
fn text_transformer_gradients_match_finite_differences() {
    // Token 0 is padding: the second example has two padded positions, which must get and pass
    // on no gradient through attention.
    let ids = Tensor::from_vec(vec![2u32, 5, 3, 7, 4, 6, 9, 0, 0, 8], (2, 5), &Device::Cpu).unwrap();
    for (pooling, norm) in [(Pooling::Cls, NormPlacement::Post), (Pooling::Mean, NormPlacement::Pre)] {
        let net = tiny(&spec(pooling, norm), &InputShape::Text { max_len: 5 }, Some(10));
        check_gradients(&net, &ids);
    }
}

#[test]
fn sequence_transformer_gradients_match_finite_differences() {
    let values: Vec<f32> = (0..2 * 6 * 2).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.2).collect();
    let x = Tensor::from_vec(values, (2, 6, 2), &Device::Cpu).unwrap();
    let net = tiny(
        &spec(Pooling::Mean, NormPlacement::Post),
        &InputShape::Sequence { steps: 6, features: 2 },
        None,
    );
    check_gradients(&net, &x);
    // Patches of 3 steps: two tokens of 6 values each.
    let patched = ModelSpec::Transformer {
        dim: 8,
        heads: 2,
        layers: 1,
        ff: 12,
        dropout: 0.0,
        pooling: Pooling::Cls,
        norm: NormPlacement::Pre,
        head: vec![],
        patch: 3,
    };
    let net = tiny(&patched, &InputShape::Sequence { steps: 6, features: 2 }, None);
    check_gradients(&net, &x);
}

#[test]
fn padding_does_not_change_the_answer() {
    // The same sentence with and without trailing padding: the mask must hide the padding
    // from attention and from the mean.
    let net = tiny(&spec(Pooling::Mean, NormPlacement::Post), &InputShape::Text { max_len: 6 }, Some(10));
    let short = Tensor::from_vec(vec![2u32, 5, 3, 0, 0, 0], (1, 6), &Device::Cpu).unwrap();
    let other = Tensor::from_vec(vec![2u32, 5, 3, 0, 0, 0, 2, 5, 3, 7, 7, 7], (2, 6), &Device::Cpu).unwrap();
    let a: Vec<f32> = net.forward(&short, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b = net.forward(&other, None).unwrap();
    let b0: Vec<f32> = b.get(0).unwrap().to_vec1().unwrap();
    let b1: Vec<f32> = b.get(1).unwrap().to_vec1().unwrap();
    for (x, y) in a.iter().zip(&b0) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b0:?}");
    }
    assert!(
        a.iter().zip(&b1).any(|(x, y)| (x - y).abs() > 1e-4),
        "real tokens in place of padding must change it"
    );
    assert_eq!(b.dtype(), DType::F32);
}
