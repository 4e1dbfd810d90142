//! Every fused kernel against candle's generic ops (forward values and the gradients of input,
//! weight and bias) and against central finite differences, at shapes that catch indexing
//! mistakes: batch 1, odd spatial sizes, widths that are not multiples of the SIMD width, even
//! kernels, no padding.

use candle_core::{D, DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::ml::kernels::optim::{AdamStep, SgdStep};

fn random(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> Vec<f32> {
    (0..shape.iter().product::<usize>()).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale).collect()
}

fn var(values: &[f32], shape: &[usize]) -> Var {
    Var::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: got {g}, want {w} (scale {scale})");
    }
}

/// A loss that weights every output differently, so that a misplaced gradient shows.
fn weighted_sum(out: &Tensor, weights: &Tensor) -> Tensor {
    out.mul(weights).unwrap().sum_all().unwrap()
}

/// Gradients of `loss(inputs)` with respect to each input, by autograd.
fn autograd(inputs: &[Var], loss: &dyn Fn(&[Tensor]) -> Tensor) -> Vec<Vec<f32>> {
    let tensors: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = loss(&tensors).backward().unwrap();
    tensors.iter().map(|t| flat(grads.get(t).expect("every input has a gradient"))).collect()
}

/// Gradients of `loss(inputs)` with respect to each input, by central differences. ReLU and
/// pooling are piecewise linear, so a central difference is exact unless the step crosses a kink
/// (a ReLU at zero, two pooled values changing places); there the differences at two step sizes
/// disagree and the element is left out (`None`).
fn numeric(
    values: &[Vec<f32>],
    shapes: &[Vec<usize>],
    loss: &dyn Fn(&[Tensor]) -> Tensor,
) -> Vec<Vec<Option<f32>>> {
    let eval = |vals: &[Vec<f32>]| -> f64 {
        let ts: Vec<Tensor> = vals
            .iter()
            .zip(shapes)
            .map(|(v, s)| Tensor::from_vec(v.clone(), &s[..], &Device::Cpu).unwrap())
            .collect();
        loss(&ts).to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    };
    let diff = |which: usize, i: usize, h: f32| -> f64 {
        let mut plus = values.to_vec();
        plus[which][i] += h;
        let mut minus = values.to_vec();
        minus[which][i] -= h;
        (eval(&plus) - eval(&minus)) / (2.0 * h as f64)
    };
    (0..values.len())
        .map(|which| {
            (0..values[which].len())
                .map(|i| {
                    let (wide, narrow) = (diff(which, i, 1e-2), diff(which, i, 5e-3));
                    ((wide - narrow).abs() <= 1e-3 * wide.abs().max(1.0)).then_some(wide as f32)
                })
                .collect()
        })
        .collect()
}

/// Checks analytic gradients against finite differences where those are defined, and that at
/// least half the elements could be checked.
fn assert_matches_differences(what: &str, got: &[f32], numeric: &[Option<f32>]) {
    let scale = got.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let mut checked = 0;
    for (i, (g, n)) in got.iter().zip(numeric).enumerate() {
        if let Some(n) = n {
            assert!((g - n).abs() <= 1e-2 * scale, "{what}[{i}]: analytic {g}, finite difference {n}");
            checked += 1;
        }
    }
    assert!(checked * 2 >= got.len(), "{what}: only {checked} of {} elements away from kinks", got.len());
}

/// Checks a fused op against its generic twin and finite differences, forward and backward.
fn check(
    name: &str,
    shapes: &[Vec<usize>],
    out_shape: &[usize],
    fused: &dyn Fn(&[Tensor]) -> Tensor,
    generic: &dyn Fn(&[Tensor]) -> Tensor,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<Vec<f32>> = shapes.iter().map(|s| random(&mut rng, s, 1.0)).collect();
    let weights = Tensor::from_vec(random(&mut rng, out_shape, 1.0), out_shape, &Device::Cpu).unwrap();
    let vars: Vec<Var> = values.iter().zip(shapes).map(|(v, s)| var(v, s)).collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();

    let (a, b) = (fused(&tensors), generic(&tensors));
    assert_eq!(a.dims(), b.dims(), "{name}: output shapes");
    assert_close(&format!("{name} forward"), &flat(&a), &flat(&b), 1e-5);

    let fused_loss = |ts: &[Tensor]| weighted_sum(&fused(ts), &weights);
    let generic_loss = |ts: &[Tensor]| weighted_sum(&generic(ts), &weights);
    let got = autograd(&vars, &fused_loss);
    let want = autograd(&vars, &generic_loss);
    let fd = numeric(&values, shapes, &fused_loss);
    for (i, ((g, w), n)) in got.iter().zip(&want).zip(&fd).enumerate() {
        assert_close(&format!("{name} gradient of input {i} vs candle"), g, w, 1e-5);
        assert_matches_differences(&format!("{name} gradient of input {i} vs finite differences"), g, n);
    }
}

fn generic_linear(ts: &[Tensor], relu: bool) -> Tensor {
    let y = ts[0].matmul(&ts[1].t().unwrap()).unwrap().broadcast_add(&ts[2]).unwrap();
    if relu { y.relu().unwrap() } else { y }
}

#[test]
fn linear_matches_candle_and_finite_differences() {
    for (seed, &(n, inputs, outputs)) in [(1, 3, 5), (7, 13, 17), (33, 70, 19), (4, 1, 1)].iter().enumerate()
    {
        for relu in [false, true] {
            check(
                &format!("linear {n}x{inputs}->{outputs} relu={relu}"),
                &[vec![n, inputs], vec![outputs, inputs], vec![outputs]],
                &[n, outputs],
                &|ts| linear(&ts[0], &ts[1], &ts[2], relu).unwrap(),
                &|ts| generic_linear(ts, relu),
                seed as u64,
            );
        }
    }
}

#[test]
fn linear_takes_strided_inputs_and_non_leaf_inputs() {
    // The input is a transposed view of a computed tensor: gemm reads it through its strides, and
    // the gradient must reach the variable underneath through the transpose and the scaling.
    check(
        "linear on a transposed, scaled input",
        &[vec![9, 6], vec![4, 9], vec![4]],
        &[6, 4],
        &|ts| linear(&(&ts[0] * 3.0).unwrap().t().unwrap(), &ts[1], &ts[2], true).unwrap(),
        &|ts| generic_linear(&[(&ts[0] * 3.0).unwrap().t().unwrap(), ts[1].clone(), ts[2].clone()], true),
        11,
    );
}

fn generic_conv(ts: &[Tensor], padding: usize, relu: bool) -> Tensor {
    let c = ts[2].dim(0).unwrap();
    let y = ts[0]
        .conv2d(&ts[1], padding, 1, 1, 1)
        .unwrap()
        .broadcast_add(&ts[2].reshape((1, c, 1, 1)).unwrap())
        .unwrap();
    if relu { y.relu().unwrap() } else { y }
}

/// candle's own pooling is wrong backwards (see `layers`); a reshape and two maxima are exact.
fn generic_pool(x: &Tensor) -> Tensor {
    let (b, c, h, w) = x.dims4().unwrap();
    let x = x.narrow(2, 0, h / 2 * 2).unwrap().narrow(3, 0, w / 2 * 2).unwrap();
    x.reshape((b, c, h / 2, 2, w / 2, 2)).unwrap().max(5).unwrap().max(3).unwrap()
}

/// (batch, cin, h, w, cout, kernel, padding)
const CONV_SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 6] = [
    (1, 1, 5, 5, 2, 3, 1),
    (2, 3, 7, 9, 5, 3, 1),
    (3, 2, 6, 5, 3, 5, 2),
    (2, 3, 5, 4, 2, 2, 1),
    (1, 2, 6, 7, 3, 3, 0),
    (2, 17, 4, 3, 1, 1, 0),
];

#[test]
fn conv2d_matches_candle_and_finite_differences() {
    for (seed, &(b, cin, h, w, cout, k, pad)) in CONV_SHAPES.iter().enumerate() {
        let (ho, wo) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
        for relu in [false, true] {
            check(
                &format!("conv {b}x{cin}x{h}x{w} -> {cout} k{k} pad {pad} relu={relu}"),
                &[vec![b, cin, h, w], vec![cout, cin, k, k], vec![cout]],
                &[b, cout, ho, wo],
                &|ts| conv2d(&ts[0], &ts[1], &ts[2], pad, relu).unwrap(),
                &|ts| generic_conv(ts, pad, relu),
                100 + seed as u64,
            );
        }
    }
}

#[test]
fn conv2d_relu_pool_matches_candle_and_finite_differences() {
    for (seed, &(b, cin, h, w, cout, k, pad)) in CONV_SHAPES.iter().enumerate() {
        let (ho, wo) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
        if ho < 2 || wo < 2 {
            continue;
        }
        check(
            &format!("conv+relu+pool {b}x{cin}x{h}x{w} -> {cout} k{k} pad {pad}"),
            &[vec![b, cin, h, w], vec![cout, cin, k, k], vec![cout]],
            &[b, cout, ho / 2, wo / 2],
            &|ts| conv2d_relu_pool(&ts[0], &ts[1], &ts[2], pad).unwrap(),
            &|ts| generic_pool(&generic_conv(ts, pad, true)),
            200 + seed as u64,
        );
    }
}

#[test]
fn max_pool_matches_candle_and_finite_differences() {
    for (seed, shape) in [[1, 1, 2, 2], [1, 2, 5, 5], [3, 4, 6, 7], [2, 1, 9, 4]].iter().enumerate() {
        let [b, c, h, w] = *shape;
        check(
            &format!("max_pool2 {shape:?}"),
            &[shape.to_vec()],
            &[b, c, h / 2, w / 2],
            &|ts| max_pool2(&ts[0]).unwrap(),
            &|ts| generic_pool(&ts[0]),
            300 + seed as u64,
        );
    }
}

#[test]
fn max_pool_ties_go_to_the_first_element_and_nan_wins() {
    // PyTorch: torch.nn.functional.max_pool2d(x, 2, return_indices=True) picks index 0 for a
    // window of equal values and the NaN's index in a window holding one.
    let x = Var::from_vec(vec![1.0f32, 1.0, 1.0, 1.0, 0.0, f32::NAN, 5.0, 2.0], (1, 2, 2, 2), &Device::Cpu)
        .unwrap();
    let y = max_pool2(x.as_tensor()).unwrap();
    let v = flat(&y);
    assert_eq!(v[0], 1.0);
    assert!(v[1].is_nan());
    let grads = y.sum_all().unwrap().backward().unwrap();
    let g = flat(grads.get(x.as_tensor()).unwrap());
    assert_eq!(g, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn cross_entropy_matches_candle_and_finite_differences() {
    for (seed, &(n, classes)) in [(1usize, 3usize), (5, 7), (64, 10), (3, 1)].iter().enumerate() {
        let labels: Vec<u32> = (0..n).map(|i| ((i * 5 + seed) % classes) as u32).collect();
        let labels = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
        check(
            &format!("cross-entropy {n}x{classes}"),
            &[vec![n, classes]],
            &[],
            &|ts| (cross_entropy(&ts[0], &labels).unwrap() * 3.0).unwrap(),
            &|ts| (candle_nn::loss::cross_entropy(&ts[0], &labels).unwrap() * 3.0).unwrap(),
            400 + seed as u64,
        );
    }
}

#[test]
fn cross_entropy_refuses_labels_out_of_range() {
    let logits = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let labels = Tensor::from_vec(vec![0u32, 3], 2, &Device::Cpu).unwrap();
    let err = cross_entropy(&logits, &labels).unwrap_err().to_string();
    assert!(err.contains("label 3 of row 1 is not one of 3 classes"), "{err}");
}

#[test]
fn fused_network_gradients_reach_the_input() {
    // Saliency differentiates the logits with respect to the image through every fused op: the
    // fused CNN block, pooling, flattening and dense layers must agree with candle's generic ops.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let shapes =
        [vec![2, 1, 9, 7], vec![4, 1, 3, 3], vec![4], vec![3, 4, 3, 3], vec![3], vec![5, 6], vec![5]];
    let values: Vec<Vec<f32>> = shapes.iter().map(|s| random(&mut rng, s, 1.0)).collect();
    let vars: Vec<Var> = values.iter().zip(&shapes).map(|(v, s)| var(v, s)).collect();
    let fused = |ts: &[Tensor]| -> Tensor {
        let h = conv2d_relu_pool(&ts[0], &ts[1], &ts[2], 1).unwrap();
        let h = conv2d_relu_pool(&h, &ts[3], &ts[4], 1).unwrap();
        let logits = linear(&h.flatten_from(1).unwrap(), &ts[5], &ts[6], false).unwrap();
        logits.max(D::Minus1).unwrap().sum_all().unwrap()
    };
    let generic = |ts: &[Tensor]| -> Tensor {
        let h = generic_pool(&generic_conv(&ts[0..3], 1, true));
        let h = generic_pool(&generic_conv(&[h, ts[3].clone(), ts[4].clone()], 1, true));
        let logits = generic_linear(&[h.flatten_from(1).unwrap(), ts[5].clone(), ts[6].clone()], false);
        logits.max(D::Minus1).unwrap().sum_all().unwrap()
    };
    let got = autograd(&vars, &fused);
    let want = autograd(&vars, &generic);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("network gradient of input {i}"), g, w, 1e-5);
    }
    assert!(got[0].iter().any(|g| *g != 0.0), "the input gradient is all zeros");
}

#[test]
fn fused_adam_and_sgd_follow_their_formulas() {
    // Three steps on 40,000 values (more than one parallel chunk), checked against the textbook
    // formulas evaluated in f64.
    let n = 40_000;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let p0 = random(&mut rng, &[n], 1.0);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| random(&mut rng, &[n], 1.0)).collect();
    for decoupled in [false, true] {
        let p = var(&p0, &[n]);
        let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut pr, mut mr, mut vr): (Vec<f64>, Vec<f64>, Vec<f64>) =
            (p0.iter().map(|&x| x as f64).collect(), vec![0.0; n], vec![0.0; n]);
        for (t, g) in grads.iter().enumerate() {
            let step = AdamStep {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.1,
                decoupled,
                step: t as i32 + 1,
            };
            let gt = Tensor::from_vec(g.clone(), n, &Device::Cpu).unwrap();
            optim::adam(p.as_tensor(), &gt, &mut m, &mut v, step).unwrap();
            for i in 0..n {
                let mut gi = g[i] as f64;
                if !decoupled {
                    gi += 0.1 * pr[i];
                }
                mr[i] = 0.9 * mr[i] + 0.1 * gi;
                vr[i] = 0.99 * vr[i] + 0.01 * gi * gi;
                let mhat = mr[i] / (1.0 - 0.9f64.powi(t as i32 + 1));
                let vhat = vr[i] / (1.0 - 0.99f64.powi(t as i32 + 1));
                if decoupled {
                    pr[i] *= 1.0 - 0.01 * 0.1;
                }
                pr[i] -= 0.01 * mhat / (vhat.sqrt() + 1e-8);
            }
        }
        let want: Vec<f32> = pr.iter().map(|&x| x as f32).collect();
        assert_close(&format!("adam decoupled={decoupled}"), &flat(p.as_tensor()), &want, 1e-5);
    }
    for nesterov in [false, true] {
        let p = var(&p0, &[n]);
        let mut buf = vec![0.0f32; n];
        let (mut pr, mut br): (Vec<f64>, Vec<f64>) = (p0.iter().map(|&x| x as f64).collect(), vec![0.0; n]);
        for g in &grads {
            let step = SgdStep { lr: 0.1, momentum: 0.9, weight_decay: 0.01, nesterov };
            let gt = Tensor::from_vec(g.clone(), n, &Device::Cpu).unwrap();
            optim::sgd(p.as_tensor(), &gt, &mut buf, step).unwrap();
            for i in 0..n {
                let gi = g[i] as f64 + 0.01 * pr[i];
                br[i] = 0.9 * br[i] + gi;
                let u = if nesterov { gi + 0.9 * br[i] } else { br[i] };
                pr[i] -= 0.1 * u;
            }
        }
        let want: Vec<f32> = pr.iter().map(|&x| x as f32).collect();
        assert_close(&format!("sgd nesterov={nesterov}"), &flat(p.as_tensor()), &want, 1e-5);
    }
}

#[test]
fn linear_flattens_feature_maps() {
    check(
        "linear on (2, 3, 2, 3) feature maps",
        &[vec![2, 3, 2, 3], vec![4, 18], vec![4]],
        &[2, 4],
        &|ts| linear(&ts[0], &ts[1], &ts[2], true).unwrap(),
        &|ts| generic_linear(&[ts[0].flatten_from(1).unwrap(), ts[1].clone(), ts[2].clone()], true),
        12,
    );
}

#[test]
fn training_backward_matches_candle_backward() {
    // The weight feeds two fused layers and one generic product, the bias a fused layer and a
    // generic sum: the deferred shares and candle's own must add up to candle's gradients.
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let x = var(&random(&mut rng, &[5, 6], 1.0), &[5, 6]);
    let w = var(&random(&mut rng, &[6, 6], 1.0), &[6, 6]);
    let b = var(&random(&mut rng, &[6], 1.0), &[6]);
    let loss = |fused: bool| -> Tensor {
        let (x, w, b) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let layer = |h: &Tensor, relu: bool| {
            if fused {
                linear(h, w, b, relu).unwrap()
            } else {
                generic_linear(&[h.clone(), w.clone(), b.clone()], relu)
            }
        };
        let h = layer(&layer(x, true), false);
        let extra = (h.matmul(w).unwrap().sum_all().unwrap() + b.sqr().unwrap().sum_all().unwrap()).unwrap();
        (h.sqr().unwrap().sum_all().unwrap() * 0.1 + extra).unwrap()
    };
    let want = loss(false).backward().unwrap();
    let got = backward(&loss(true)).unwrap();
    for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
        let (g, e) = (got.get(v.as_tensor()).expect("gradient"), want.get(v.as_tensor()).expect("gradient"));
        assert_close(&format!("gradient of {name}"), &flat(g), &flat(e), 1e-5);
    }
    // Outside `backward`, nothing is deferred: candle's own pass sees every gradient.
    let plain = loss(true).backward().unwrap();
    assert_close(
        "plain backward",
        &flat(plain.get(w.as_tensor()).unwrap()),
        &flat(want.get(w.as_tensor()).unwrap()),
        1e-5,
    );
}

/// The recurrent layer as candle's ops write it (the layer's own fallback), for comparison.
fn generic_recurrent(cell: Cell, ts: &[Tensor]) -> Tensor {
    let (x, w_ih, w_hh, b_ih, b_hh) = (&ts[0], &ts[1], &ts[2], &ts[3], &ts[4]);
    let (b, t, f) = x.dims3().unwrap();
    let h_dim = w_hh.dim(1).unwrap();
    let xp = x
        .reshape((b * t, f))
        .unwrap()
        .matmul(&w_ih.t().unwrap())
        .unwrap()
        .broadcast_add(b_ih)
        .unwrap()
        .reshape((b, t, ()))
        .unwrap();
    let mut h = Tensor::zeros((b, h_dim), DType::F32, &Device::Cpu).unwrap();
    let mut c = h.clone();
    let mut outs = Vec::new();
    let sig = |v: &Tensor| candle_nn::ops::sigmoid(v).unwrap();
    for step in 0..t {
        let xs = xp.narrow(1, step, 1).unwrap().squeeze(1).unwrap();
        let hp = h.matmul(&w_hh.t().unwrap()).unwrap().broadcast_add(b_hh).unwrap();
        let part = |v: &Tensor, q: usize| v.narrow(1, q * h_dim, h_dim).unwrap();
        match cell {
            Cell::Lstm => {
                let gates = (&xs + &hp).unwrap();
                let (i, fg) = (sig(&part(&gates, 0)), sig(&part(&gates, 1)));
                let (g, o) = (part(&gates, 2).tanh().unwrap(), sig(&part(&gates, 3)));
                c = ((fg * &c).unwrap() + (i * g).unwrap()).unwrap();
                h = (o * c.tanh().unwrap()).unwrap();
            }
            Cell::Gru => {
                let r = sig(&(part(&xs, 0) + part(&hp, 0)).unwrap());
                let z = sig(&(part(&xs, 1) + part(&hp, 1)).unwrap());
                let n = (part(&xs, 2) + (r * part(&hp, 2)).unwrap()).unwrap().tanh().unwrap();
                h = ((&n - (&z * &n).unwrap()).unwrap() + (&z * &h).unwrap()).unwrap();
            }
        }
        outs.push(h.clone());
    }
    Tensor::stack(&outs, 1).unwrap()
}

fn fused_recurrent(cell: Cell, ts: &[Tensor]) -> Tensor {
    let (b, t, f) = ts[0].dims3().unwrap();
    let xp = linear(&ts[0].reshape((b * t, f)).unwrap(), &ts[1], &ts[3], false).unwrap();
    recurrent(cell, &xp, &ts[2], &ts[4], b, t).unwrap()
}

#[test]
fn recurrent_matches_candle_and_finite_differences() {
    // (batch, steps, features, hidden); 35 examples span two row blocks of the parallel loop.
    for (seed, &(b, t, f, h)) in
        [(1usize, 1usize, 1usize, 1usize), (3, 5, 2, 4), (2, 7, 3, 5), (35, 3, 2, 3)].iter().enumerate()
    {
        for cell in [Cell::Lstm, Cell::Gru] {
            let g = if cell == Cell::Lstm { 4 } else { 3 };
            check(
                &format!("{cell:?} {b}x{t}x{f} hidden {h}"),
                &[vec![b, t, f], vec![g * h, f], vec![g * h, h], vec![g * h], vec![g * h]],
                &[b, t, h],
                &|ts| fused_recurrent(cell, ts),
                &|ts| generic_recurrent(cell, ts),
                500 + seed as u64,
            );
        }
    }
}

#[test]
fn gemm_front_checks_bounds_and_multiplies_strided_views() {
    use super::gemm::{matmul, row_major, strided};
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let a = random(&mut rng, &[40], 1.0);
    let b = random(&mut rng, &[40], 1.0);
    // A 3x5 view starting at 2 with strides (1, 7) (a transposed layout), times a 5x4 view at 1
    // with strides (8, 2); candle computes the same through its own strided matmul.
    let got = matmul(strided(&a[2..], 3, 5, 1, 7).unwrap(), strided(&b[1..], 5, 4, 8, 2).unwrap()).unwrap();
    let ta = Tensor::from_vec(a.clone(), 40, &Device::Cpu).unwrap();
    let tb = Tensor::from_vec(b.clone(), 40, &Device::Cpu).unwrap();
    let va = ta.narrow(0, 2, 35).unwrap().reshape((5, 7)).unwrap().narrow(1, 0, 3).unwrap().t().unwrap();
    let vb = tb.narrow(0, 1, 39).unwrap().pad_with_zeros(0, 0, 1).unwrap().reshape((5, 8)).unwrap();
    let vb = vb.reshape((5, 4, 2)).unwrap().narrow(2, 0, 1).unwrap().squeeze(2).unwrap();
    assert_close("strided gemm", &got, &flat(&va.matmul(&vb).unwrap()), 1e-6);
    // Views that would read past their slice, and products whose sizes differ, are refused.
    let overrun = strided(&a, 5, 9, 8, 1).unwrap_err().to_string();
    assert!(overrun.contains("overruns 40 values"), "{overrun}");
    let mismatch = matmul(row_major(&a, 4, 10).unwrap(), row_major(&b, 8, 5).unwrap());
    assert!(mismatch.unwrap_err().to_string().contains("inner sizes differ"));
    // A zero stride over a dimension longer than one is refused, and so are sizes whose product
    // wraps (a 2^33 x 2^31 view of one value would otherwise make a zero-length result buffer).
    assert!(strided(&a, 4, 4, 0, 1).unwrap_err().to_string().contains("cannot have strides"));
    let half = usize::BITS / 2;
    assert!(
        strided(&a[..1], 1 << (half + 1), 1 << (half - 1), 0, 0)
            .unwrap_err()
            .to_string()
            .contains("too large")
    );
    // Empty products are zeros of the right size.
    assert_eq!(matmul(row_major(&a, 3, 0).unwrap(), row_major(&b, 0, 2).unwrap()).unwrap(), vec![0.0; 6]);
}

#[test]
fn pooling_a_single_row_or_column_gives_an_empty_output() {
    // PyTorch: MaxPool2d(2) of a 1-wide map is (B, C, H/2, 0); its gradient is all zeros.
    let x = Var::from_vec(vec![0.5f32; 2 * 3 * 4], (2, 3, 4, 1), &Device::Cpu).unwrap();
    let w = Var::from_vec(vec![0.1f32; 2 * 3], (2, 3, 1, 1), &Device::Cpu).unwrap();
    let b = Var::from_vec(vec![0.0f32; 2], 2, &Device::Cpu).unwrap();
    let pooled = max_pool2(x.as_tensor()).unwrap();
    assert_eq!(pooled.dims(), &[2, 3, 2, 0]);
    let fused = conv2d_relu_pool(x.as_tensor(), w.as_tensor(), b.as_tensor(), 0).unwrap();
    assert_eq!(fused.dims(), &[2, 2, 2, 0]);
    let grads = fused.sum_all().unwrap().backward().unwrap();
    assert!(flat(grads.get(x.as_tensor()).unwrap()).iter().all(|g| *g == 0.0));
}

#[test]
fn gemm_front_splits_large_products_exactly() {
    // Large enough for threads: split by rows when tall or when there are many rows, else
    // threaded inside gemm. Each element is one gemm dot product either way, so the result
    // equals candle's own product (the same gemm crate, unsplit) to the last bit.
    use super::gemm::{matmul, row_major};
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for (m, k, n) in [(301, 57, 70), (70, 57, 301), (40, 57, 401)] {
        let a = random(&mut rng, &[m, k], 1.0);
        let b = random(&mut rng, &[k, n], 1.0);
        let got = matmul(row_major(&a, m, k).unwrap(), row_major(&b, k, n).unwrap()).unwrap();
        let ta = Tensor::from_vec(a, (m, k), &Device::Cpu).unwrap();
        let tb = Tensor::from_vec(b, (k, n), &Device::Cpu).unwrap();
        assert_eq!(got, flat(&ta.matmul(&tb).unwrap()), "{m}x{k} by {k}x{n}");
    }
}

/// Attention from candle's generic ops, as the encoder computed it before the fused kernel.
fn generic_attention(ts: &[Tensor], heads: usize, bias: &[f32], mask: Option<&[f32]>) -> Tensor {
    let (b, l, e) = ts[0].dims3().unwrap();
    let hd = e / heads;
    let split =
        |t: &Tensor| t.reshape((b, l, heads, hd)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
    let (q, k, v) = (split(&ts[0]), split(&ts[1]), split(&ts[2]));
    let kt = k.transpose(2, 3).unwrap().contiguous().unwrap();
    let scores = (q.matmul(&kt).unwrap() / (hd as f64).sqrt()).unwrap();
    let bias = Tensor::from_vec(bias.to_vec(), (b, 1, 1, l), &Device::Cpu).unwrap();
    let mut p = candle_nn::ops::softmax(&scores.broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
    if let Some(m) = mask {
        p = p.mul(&Tensor::from_vec(m.to_vec(), (b, heads, l, l), &Device::Cpu).unwrap()).unwrap();
    }
    p.matmul(&v).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((b, l, e)).unwrap()
}

#[test]
fn attention_matches_candle_and_finite_differences() {
    // (batch, length, width, heads, padded tail of the last example, dropout)
    let cases =
        [(1, 1, 4, 1, 0, false), (2, 5, 6, 2, 2, true), (3, 7, 12, 4, 3, false), (2, 4, 9, 3, 0, true)];
    for (seed, &(b, l, e, heads, pad, drop)) in cases.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + seed as u64);
        let mut bias = vec![0.0f32; b * l];
        for j in l - pad..l {
            bias[(b - 1) * l + j] = -1e9;
        }
        let mask: Option<Dropout> = drop.then(|| Dropout {
            keep: (0..b * heads * l * l).map(|_| u8::from(rng.random::<f32>() >= 0.25)).collect(),
            scale: 1.0 / 0.75,
        });
        let multipliers = mask.as_ref().map(Dropout::multipliers);
        let shape = vec![b, l, e];
        check(
            &format!("attention {b}x{l}x{e}, {heads} heads, {pad} padded, dropout {drop}"),
            &[shape.clone(), shape.clone(), shape.clone()],
            &shape,
            &|ts| attention(&ts[0], &ts[1], &ts[2], heads, bias.clone(), mask.clone()).unwrap(),
            &|ts| generic_attention(ts, heads, &bias, multipliers.as_deref()),
            seed as u64,
        );
    }
}

#[test]
fn attention_without_gradients_keeps_nothing_and_matches() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (b, l, e, heads) = (2, 6, 8, 2);
    let ts: Vec<Tensor> = (0..3)
        .map(|_| Tensor::from_vec(random(&mut rng, &[b, l, e], 1.0), (b, l, e), &Device::Cpu).unwrap())
        .collect();
    let bias = vec![0.0f32; b * l];
    let got = attention(&ts[0], &ts[1], &ts[2], heads, bias.clone(), None).unwrap();
    assert!(!got.track_op());
    assert_close(
        "attention inference",
        &flat(&got),
        &flat(&generic_attention(&ts, heads, &bias, None)),
        1e-5,
    );
    // A bias of the wrong length is refused, not read out of bounds.
    assert!(attention(&ts[0], &ts[1], &ts[2], heads, vec![0.0; 3], None).is_err());
    assert!(attention(&ts[0], &ts[1], &ts[2], 3, bias, None).is_err());
}

fn generic_layer_norm(ts: &[Tensor], eps: f64) -> Tensor {
    let x = &ts[0];
    let e = x.dim(D::Minus1).unwrap() as f64;
    let centred = x.broadcast_sub(&(x.sum_keepdim(D::Minus1).unwrap() / e).unwrap()).unwrap();
    let var = (centred.sqr().unwrap().sum_keepdim(D::Minus1).unwrap() / e).unwrap();
    let normed = centred.broadcast_div(&(var + eps).unwrap().sqrt().unwrap()).unwrap();
    normed.broadcast_mul(&ts[1]).unwrap().broadcast_add(&ts[2]).unwrap()
}

#[test]
fn layer_norm_matches_candle_and_finite_differences() {
    // 3-D inputs, a width of 1 (every output is the bias), and more rows than one task takes.
    for (seed, dims) in [vec![2, 3, 5], vec![4, 1], vec![130, 7]].into_iter().enumerate() {
        let e = *dims.last().unwrap();
        check(
            &format!("layer_norm {dims:?}"),
            &[dims.clone(), vec![e], vec![e]],
            &dims,
            &|ts| layer_norm(&ts[0], &ts[1], &ts[2], 1e-5).unwrap(),
            &|ts| generic_layer_norm(ts, 1e-5),
            20 + seed as u64,
        );
    }
}

#[test]
fn gelu_matches_candle_and_finite_differences() {
    // More values than one parallel chunk, so that the split is exercised too.
    for (seed, dims) in [vec![3, 5], vec![20_000]].into_iter().enumerate() {
        let fd_ok = dims.iter().product::<usize>() < 100;
        let name = format!("gelu {dims:?}");
        if fd_ok {
            check(
                &name,
                std::slice::from_ref(&dims),
                &dims,
                &|ts| gelu(&ts[0]).unwrap(),
                &|ts| ts[0].gelu_erf().unwrap(),
                40,
            );
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(41 + seed as u64);
        let v = var(&random(&mut rng, &dims, 4.0), &dims);
        let w = Tensor::from_vec(random(&mut rng, &dims, 1.0), &dims[..], &Device::Cpu).unwrap();
        let got = autograd(std::slice::from_ref(&v), &|ts| weighted_sum(&gelu(&ts[0]).unwrap(), &w));
        let want = autograd(std::slice::from_ref(&v), &|ts| weighted_sum(&ts[0].gelu_erf().unwrap(), &w));
        assert_close(
            &format!("{name} forward"),
            &flat(&gelu(v.as_tensor()).unwrap()),
            &flat(&v.as_tensor().gelu_erf().unwrap()),
            1e-6,
        );
        assert_close(&format!("{name} gradient"), &got[0], &want[0], 1e-5);
    }
}

#[test]
fn embedding_matches_index_select_and_sums_repeated_ids() {
    // Repeated ids (3 three times) must sum their rows' gradients; unused rows get zeros.
    let ids = vec![3u32, 0, 3, 5, 3, 1];
    check(
        "embedding",
        &[vec![7, 4]],
        &[6, 4],
        &|ts| embedding(&ts[0], ids.clone()).unwrap(),
        &|ts| ts[0].index_select(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap(), 0).unwrap(),
        41,
    );
}

#[test]
fn an_embedding_id_outside_the_table_is_an_error_naming_it() {
    let table = Tensor::zeros((5, 3), DType::F32, &Device::Cpu).unwrap();
    let err = embedding(&table, vec![1, 5]).unwrap_err().to_string();
    assert!(err.contains("id 5 is outside a table of 5 rows"), "{err}");
}

#[test]
fn inference_gives_the_same_values_keeps_nothing_and_refuses_a_backward_pass() {
    // Variables, as a trained model's weights are: candle tracks them always.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut values = |n: usize| (0..n).map(|_| rng.random::<f32>() - 0.5).collect::<Vec<f32>>();
    // Layer norm, whose backward pass reads the normalised rows its forward pass keeps.
    let x = Var::from_vec(values(6 * 8), (6, 8), &Device::Cpu).unwrap();
    let w = Var::from_vec(values(8), 8, &Device::Cpu).unwrap();
    let b = Var::from_vec(values(8), 8, &Device::Cpu).unwrap();
    let run = || layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
    let trained = run();
    let inferred = inference(run);
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&trained), flat(&inferred));
    assert!(!in_inference(), "left as it was");
    // Outside, the gradient flows; through what inference computed, it is an error, never a
    // missing or wrong gradient.
    assert!(backward(&trained.sum_all().unwrap()).unwrap().get(w.as_tensor()).is_some());
    let err = backward(&inferred.sum_all().unwrap()).unwrap_err().to_string();
    assert!(err.contains("saved state"), "{err}");
    let err = inference(|| backward(&trained.sum_all().unwrap())).unwrap_err().to_string();
    assert!(err.contains("inside kernels::inference"), "{err}");
    // Restored however the closure ends.
    let _ = std::panic::catch_unwind(|| inference(|| panic!("inside")));
    assert!(!in_inference());
}
