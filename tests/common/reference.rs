//! The weights behind the reference fixtures (tests/fixtures/captum_reference.json and
//! art_reference.json), written once here as `formula_weights` is in bench/captum_reference.py.

use candle_core::{Device, Tensor};
use vigil::ml::data::InputShape;
use vigil::ml::model::Network;
use vigil::ml::spec::{Init, ModelSpec};

/// Sets every parameter of `net` to the formula weights: parameter k in name order, value i:
/// 0.6 sin(0.37 i + 1.3 k + 0.1) / sqrt(fan-in) for weights, 0.1 sin(...) for biases.
pub fn formula_weights(net: &Network) {
    let mut vars: Vec<_> = net.vars().to_vec();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, (name, var)) in vars.iter().enumerate() {
        let n = var.elem_count();
        let leaf = name.rsplit('.').next().unwrap();
        let fan = n / var.dims()[0];
        let values: Vec<f32> = (0..n)
            .map(|i| {
                let s = (0.37 * i as f64 + 1.3 * k as f64 + 0.1).sin();
                (if leaf.starts_with("bias") { 0.1 * s } else { 0.6 * s / (fan as f64).sqrt() }) as f32
            })
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap()).unwrap();
    }
}

/// A fixture case's network (`model` is its RON model spec) with the formula weights.
pub fn formula_network(
    model: &str,
    shape: &InputShape,
    classes: usize,
    vocabulary: Option<usize>,
) -> Network {
    let spec: ModelSpec = ron::from_str(model).expect("the fixture's model spec parses");
    let net =
        Network::build(&spec, shape, classes, vocabulary, Init::XavierUniform, 0, &Device::Cpu).unwrap();
    formula_weights(&net);
    net
}
