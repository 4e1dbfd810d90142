//! Optimisers and learning-rate schedules. candle's SGD has no momentum and its AdamW no L2
//! variant, so all three live here, with their state exposed as named tensors so a checkpoint
//! can save it and `--resume` continue exactly where a run stopped.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};
use crate::ml::kernels::{
    self,
    optim::{AdamStep, SgdStep},
};
use crate::ml::spec::{Optimizer as OptimizerSpec, Schedule};

/// Per-parameter state: momentum buffer (SGD) or first and second moments (Adam).
#[derive(Debug, Clone)]
enum Slot {
    /// No update made yet.
    Empty,
    /// State as tensors: the generic path (any device), or state just loaded from a checkpoint.
    Tensors { m: Option<Tensor>, v: Option<Tensor> },
    /// State as plain vectors, updated in place by the fused CPU kernels (an empty vector is
    /// state the optimiser does not keep, such as SGD's buffer without momentum).
    Host { m: Vec<f32>, v: Vec<f32> },
}

impl Slot {
    /// The state as tensors shaped like `like`, whichever form it is kept in.
    fn tensors(&self, like: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let host = |values: &Vec<f32>| -> Result<Option<Tensor>> {
            if values.is_empty() {
                return Ok(None);
            }
            Ok(Some(Tensor::from_vec(values.clone(), like.shape(), like.device())?))
        };
        Ok(match self {
            Slot::Empty => (None, None),
            Slot::Tensors { m, v } => (m.clone(), v.clone()),
            Slot::Host { m, v } => (host(m)?, host(v)?),
        })
    }

    /// The state as plain vectors (empty where there is none), moved out of the slot.
    fn take_host(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        let values = |t: Option<Tensor>| -> Result<Vec<f32>> {
            Ok(match t {
                Some(t) => t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                None => Vec::new(),
            })
        };
        Ok(match std::mem::replace(self, Slot::Empty) {
            Slot::Empty => (Vec::new(), Vec::new()),
            Slot::Host { m, v } => (m, v),
            Slot::Tensors { m, v } => (values(m)?, values(v)?),
        })
    }
}

/// An optimiser bound to a network's parameters.
pub struct Optimizer {
    spec: OptimizerSpec,
    vars: Vec<(String, Var)>,
    slots: Vec<Slot>,
    /// Number of updates made so far (Adam's bias correction needs it).
    pub steps: u64,
    lr: f64,
}

impl Optimizer {
    pub fn new(spec: &OptimizerSpec, vars: &[(String, Var)]) -> Self {
        Optimizer {
            lr: spec.lr(),
            spec: spec.clone(),
            vars: vars.to_vec(),
            slots: vars.iter().map(|_| Slot::Empty).collect(),
            steps: 0,
        }
    }

    /// The rate the next step uses.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Applies one update from the gradients of a backward pass. Parameters without a gradient
    /// (unused in this batch) are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_by(|p| grads.get(p).cloned())
    }

    /// [`Self::step`] with gradients from elsewhere than a backward pass (DP-SGD's privatised
    /// ones): `grad` gives each parameter's gradient, or `None` to leave it alone.
    pub fn step_by(&mut self, grad: impl Fn(&Tensor) -> Option<Tensor>) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let lr = self.lr;
        for ((_, var), slot) in self.vars.iter().zip(self.slots.iter_mut()) {
            let Some(g) = grad(var.as_tensor()) else { continue };
            let g = &g;
            let p = var.as_tensor();
            if kernels::applies(&[p, g]) && p.is_contiguous() {
                fused_step(&self.spec, p, g, slot, t, lr)?;
                continue;
            }
            let (m, v) = slot.tensors(p)?;
            let next = match self.spec {
                OptimizerSpec::Sgd { momentum, weight_decay, nesterov, .. } => {
                    let g = if weight_decay > 0.0 { (g + (p * weight_decay)?)? } else { g.clone() };
                    let update = if momentum > 0.0 {
                        let buf = match &m {
                            Some(buf) => ((buf * momentum)? + &g)?,
                            None => g.clone(),
                        };
                        let u = if nesterov { (&g + (&buf * momentum)?)? } else { buf.clone() };
                        *slot = Slot::Tensors { m: Some(buf), v: None };
                        u
                    } else {
                        g
                    };
                    (p - (update * lr)?)?
                }
                OptimizerSpec::Adam { beta1, beta2, eps, weight_decay, .. }
                | OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay, .. } => {
                    let decoupled = matches!(self.spec, OptimizerSpec::AdamW { .. });
                    let g =
                        if weight_decay > 0.0 && !decoupled { (g + (p * weight_decay)?)? } else { g.clone() };
                    let m = match &m {
                        Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                        None => (&g * (1.0 - beta1))?,
                    };
                    let v = match &v {
                        Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                        None => (g.sqr()? * (1.0 - beta2))?,
                    };
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    // p -= lr * m̂ / (sqrt(v̂) + eps), with the corrections folded into scalars.
                    let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
                    let update = ((&m / bc1)? / denom)?;
                    let p = if decoupled && weight_decay > 0.0 {
                        (p * (1.0 - lr * weight_decay))?
                    } else {
                        p.clone()
                    };
                    *slot = Slot::Tensors { m: Some(m), v: Some(v) };
                    (p - (update * lr)?)?
                }
            };
            var.set(&next)?;
        }
        Ok(())
    }

    /// The optimiser's state as named tensors (`m.<param>`, `v.<param>`), for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for ((name, var), slot) in self.vars.iter().zip(&self.slots) {
            let (m, v) =
                slot.tensors(var.as_tensor()).expect("optimiser state is kept at its parameter's size");
            if let Some(m) = m {
                out.insert(format!("m.{name}"), m);
            }
            if let Some(v) = v {
                out.insert(format!("v.{name}"), v);
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state`].
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for ((name, var), slot) in self.vars.iter().zip(self.slots.iter_mut()) {
            let (mut m, mut v) = slot.tensors(var.as_tensor())?;
            for (prefix, dst) in [("m", &mut m), ("v", &mut v)] {
                if let Some(t) = state.get(&format!("{prefix}.{name}")) {
                    if t.dims() != var.dims() {
                        return Err(Error::train_state(format!(
                            "optimiser state for {name} has shape {:?}, expected {:?}",
                            t.dims(),
                            var.dims()
                        )));
                    }
                    *dst = Some(t.clone());
                }
            }
            *slot = if m.is_none() && v.is_none() { Slot::Empty } else { Slot::Tensors { m, v } };
        }
        self.steps = steps;
        Ok(())
    }
}

/// One update of a CPU f32 parameter by the fused kernels, with its state kept as vectors.
fn fused_step(spec: &OptimizerSpec, p: &Tensor, g: &Tensor, slot: &mut Slot, t: i32, lr: f64) -> Result<()> {
    let n = p.elem_count();
    let (mut m, mut v) = slot.take_host()?;
    match *spec {
        OptimizerSpec::Sgd { momentum, weight_decay, nesterov, .. } => {
            if momentum > 0.0 && m.is_empty() {
                m = crate::ml::kernels::zeros(n);
            }
            kernels::optim::sgd(p, g, &mut m, SgdStep { lr, momentum, weight_decay, nesterov })?;
        }
        OptimizerSpec::Adam { beta1, beta2, eps, weight_decay, .. }
        | OptimizerSpec::AdamW { beta1, beta2, eps, weight_decay, .. } => {
            // Zeros written, not asked of the allocator: fresh zero pages, read by the first
            // update before it writes them, each took a copy-on-write fault and a TLB shootdown
            // across the threads (a quarter of a MiniLM fine-tune's first step, with perf).
            if m.is_empty() {
                m = crate::ml::kernels::zeros(n);
            }
            if v.is_empty() {
                v = crate::ml::kernels::zeros(n);
            }
            let decoupled = matches!(spec, OptimizerSpec::AdamW { .. });
            let step = AdamStep { lr, beta1, beta2, eps, weight_decay, decoupled, step: t };
            kernels::optim::adam(p, g, &mut m, &mut v, step)?;
        }
    }
    *slot = Slot::Host { m, v };
    Ok(())
}

/// The learning rate at a global step. `steps_per_epoch` converts epoch-based settings.
pub fn scheduled_lr(base: f64, schedule: &Schedule, step: u64, steps_per_epoch: u64, epochs: usize) -> f64 {
    let spe = steps_per_epoch.max(1);
    match *schedule {
        Schedule::Constant => base,
        Schedule::Step { every, gamma } => {
            let epoch = step / spe;
            base * gamma.powi((epoch / every.max(1) as u64) as i32)
        }
        Schedule::Cosine { min_lr, warmup_epochs } => {
            let warmup = warmup_epochs as u64 * spe;
            let total = (epochs as u64 * spe).max(1);
            if step < warmup {
                return base * (step + 1) as f64 / warmup as f64;
            }
            let progress = ((step - warmup) as f64 / (total - warmup).max(1) as f64).min(1.0);
            min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn quadratic_run(spec: OptimizerSpec, steps: usize) -> Vec<f32> {
        // Minimise f(w) = sum((w - 3)^2) from w = [0, 10].
        let w = Var::from_vec(vec![0.0f32, 10.0], 2, &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(&spec, &[("w".into(), w.clone())]);
        for _ in 0..steps {
            let loss = (w.as_tensor() - 3.0).unwrap().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        w.as_tensor().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn sgd_momentum_matches_pytorch() {
        // torch.optim.SGD([w], lr=0.1, momentum=0.9) on sum((w-3)^2) from [0, 10], 3 steps,
        // worked by hand with g = 2(w-3) (PyTorch prints the same):
        // step1: g=[-6,14], buf=g, w=[0.6, 8.6]
        // step2: g=[-4.8,11.2], buf=[-10.2,23.8], w=[1.62, 6.22]
        // step3: g=[-2.76,6.44], buf=[-11.94,27.86], w=[2.814, 3.434]
        let w = quadratic_run(
            OptimizerSpec::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: false },
            3,
        );
        assert!((w[0] - 2.814).abs() < 1e-5 && (w[1] - 3.434).abs() < 1e-5, "{w:?}");
    }

    #[test]
    fn adam_first_steps_move_by_lr() {
        // Adam's first update is lr * sign(g) (bias-corrected m/sqrt(v) = ±1).
        let w = quadratic_run(
            OptimizerSpec::Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            1,
        );
        assert!((w[0] - 0.1).abs() < 1e-6 && (w[1] - 9.9).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn adamw_decouples_weight_decay_and_adam_couples_it() {
        // loss = sum(w), g = 1, w = 2, lr = 0.1, wd = 0.5, one step; Adam's first normalised
        // update is ±1.
        // AdamW: w * (1 - lr*wd) - lr * 1 = 2 * 0.95 - 0.1 = 1.8
        // Adam (L2): g = 1 + wd*w = 2 > 0, so w - lr * 1 = 1.9
        let run = |spec: OptimizerSpec| {
            let w = Var::from_vec(vec![2.0f32], 1, &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(&spec, &[("w".into(), w.clone())]);
            let loss = w.as_tensor().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            w.as_tensor().to_vec1::<f32>().unwrap()[0]
        };
        let adamw =
            run(OptimizerSpec::AdamW { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.5 });
        let adam =
            run(OptimizerSpec::Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.5 });
        assert!((adamw - 1.8).abs() < 1e-6, "{adamw}");
        assert!((adam - 1.9).abs() < 1e-6, "{adam}");
    }

    #[test]
    fn fused_and_generic_steps_agree() {
        // f32 parameters on the CPU take the fused kernels, f64 ones candle's tensor ops: the
        // same five steps on sum(c * (w - 3)^2) must land in the same place, state included.
        let specs = [
            OptimizerSpec::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 0.01, nesterov: true },
            OptimizerSpec::Sgd { lr: 0.05, momentum: 0.0, weight_decay: 0.0, nesterov: false },
            OptimizerSpec::Adam { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 },
            OptimizerSpec::AdamW { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 },
        ];
        let start: Vec<f64> = (0..7).map(|i| i as f64 * 0.7 - 2.0).collect();
        let scale: Vec<f64> = (0..7).map(|i| 1.0 + i as f64 * 0.3).collect();
        for spec in specs {
            let run = |dtype: candle_core::DType| -> (Vec<f64>, HashMap<String, Tensor>) {
                let w = Var::from_tensor(
                    &Tensor::new(start.as_slice(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap(),
                )
                .unwrap();
                let c = Tensor::new(scale.as_slice(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
                let mut opt = Optimizer::new(&spec, &[("w".into(), w.clone())]);
                for _ in 0..5 {
                    let loss =
                        (w.as_tensor() - 3.0).unwrap().sqr().unwrap().mul(&c).unwrap().sum_all().unwrap();
                    opt.step(&loss.backward().unwrap()).unwrap();
                }
                let values =
                    w.as_tensor().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
                (values, opt.state())
            };
            let (fused, fused_state) = run(candle_core::DType::F32);
            let (generic, generic_state) = run(candle_core::DType::F64);
            for (a, b) in fused.iter().zip(&generic) {
                assert!((a - b).abs() < 1e-5, "{spec:?}: fused {fused:?} vs generic {generic:?}");
            }
            let mut names: Vec<_> = fused_state.keys().collect();
            names.sort();
            let mut want: Vec<_> = generic_state.keys().collect();
            want.sort();
            assert_eq!(names, want, "{spec:?}: state entries");
        }
    }

    #[test]
    fn schedules() {
        assert_eq!(scheduled_lr(1.0, &Schedule::Step { every: 2, gamma: 0.5 }, 45, 10, 10), 0.25);
        let cos = Schedule::Cosine { min_lr: 0.0, warmup_epochs: 0 };
        assert!((scheduled_lr(1.0, &cos, 50, 10, 10) - 0.5).abs() < 1e-12);
        let warm = Schedule::Cosine { min_lr: 0.0, warmup_epochs: 1 };
        assert!((scheduled_lr(1.0, &warm, 4, 10, 10) - 0.5).abs() < 1e-12);
    }
}
