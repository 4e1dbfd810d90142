//! Optimiser updates as single in-place passes over a parameter, its gradient and its state, in
//! place of the dozen whole-tensor temporaries the same formulas cost as tensor expressions.
//! The state lives in plain vectors owned by [`crate::ml::optim::Optimizer`]; the parameter is
//! written through candle's in-place op, as `Var::set` would write it.

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};

use super::{contiguous, par};

/// Elements per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// Adam's constants for one step.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW: decay the weights directly instead of adding `wd·p` to the gradient.
    pub decoupled: bool,
    /// The 1-based step number, for bias correction.
    pub step: i32,
}

/// SGD's constants for one step.
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// One Adam or AdamW update of `p` from `g`, with moments `m` and `v` updated in place.
pub fn adam(p: &Tensor, g: &Tensor, m: &mut [f32], v: &mut [f32], step: AdamStep) -> candle_core::Result<()> {
    p.inplace_op2(&g.contiguous()?, &Update { state: RefCell::new((m, v)), kind: Kind::Adam(step) })
}

/// One SGD update of `p` from `g`; `buf` is the momentum buffer (empty without momentum).
pub fn sgd(p: &Tensor, g: &Tensor, buf: &mut [f32], step: SgdStep) -> candle_core::Result<()> {
    p.inplace_op2(&g.contiguous()?, &Update { state: RefCell::new((buf, &mut [])), kind: Kind::Sgd(step) })
}

enum Kind {
    Adam(AdamStep),
    Sgd(SgdStep),
}

struct Update<'a> {
    state: RefCell<(&'a mut [f32], &'a mut [f32])>,
    kind: Kind,
}

fn adam_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    let (b1, b2) = (s.beta1 as f32, s.beta2 as f32);
    let (one_b1, one_b2) = ((1.0 - s.beta1) as f32, (1.0 - s.beta2) as f32);
    // p -= lr · m̂ / (sqrt(v̂) + eps), with the bias corrections folded into two scalars.
    let step_size = (s.lr / (1.0 - s.beta1.powi(s.step))) as f32;
    let inv_sqrt_bc2 = (1.0 / (1.0 - s.beta2.powi(s.step)).sqrt()) as f32;
    let (eps, wd) = (s.eps as f32, s.weight_decay as f32);
    let decay = (1.0 - s.lr * s.weight_decay) as f32;
    let coupled = wd > 0.0 && !s.decoupled;
    let decoupled = wd > 0.0 && s.decoupled;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = if coupled { g + wd * *p } else { g };
        *m = b1 * *m + one_b1 * g;
        *v = b2 * *v + one_b2 * g * g;
        let denom = v.sqrt() * inv_sqrt_bc2 + eps;
        if decoupled {
            *p *= decay;
        }
        *p -= step_size * *m / denom;
    }
}

fn sgd_chunk(p: &mut [f32], g: &[f32], buf: &mut [f32], s: &SgdStep) {
    let (lr, mu, wd) = (s.lr as f32, s.momentum as f32, s.weight_decay as f32);
    if buf.is_empty() {
        for (p, &g) in p.iter_mut().zip(g) {
            let g = if wd > 0.0 { g + wd * *p } else { g };
            *p -= lr * g;
        }
        return;
    }
    for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
        let g = if wd > 0.0 { g + wd * *p } else { g };
        // A zero buffer makes the first step's `buf = g`, as PyTorch starts it.
        *b = mu * *b + g;
        let u = if s.nesterov { g + mu * *b } else { *b };
        *p -= lr * u;
    }
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "vigil-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        ps: &mut CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let g = contiguous(gs, gl)?;
        let Some((start, end)) = pl.contiguous_offsets() else {
            candle_core::bail!("optimiser step: the parameter is not contiguous");
        };
        let CpuStorage::F32(pv) = ps else {
            candle_core::bail!("optimiser step: the parameter is {:?}, not f32", ps.dtype());
        };
        let p = &mut pv[start..end];
        let mut state = self.state.borrow_mut();
        let (a, b) = &mut *state;
        let n = p.len();
        if g.len() != n || a.len() != n && !a.is_empty() || b.len() != n && !b.is_empty() {
            candle_core::bail!("optimiser step: parameter, gradient and state sizes differ");
        }
        match &self.kind {
            Kind::Adam(s) => {
                if a.is_empty() || b.is_empty() {
                    candle_core::bail!("optimiser step: Adam needs both moments");
                }
                if n <= CHUNK {
                    adam_chunk(p, g, a, b, s);
                    return Ok(());
                }
                let chunks: Vec<_> = p
                    .chunks_mut(CHUNK)
                    .zip(g.chunks(CHUNK))
                    .zip(a.chunks_mut(CHUNK))
                    .zip(b.chunks_mut(CHUNK))
                    .collect();
                par::for_each(chunks, |_, (((p, g), m), v)| adam_chunk(p, g, m, v, s));
            }
            Kind::Sgd(s) => {
                if a.is_empty() || n <= CHUNK {
                    sgd_chunk(p, g, a, s);
                } else {
                    let chunks: Vec<_> =
                        p.chunks_mut(CHUNK).zip(g.chunks(CHUNK)).zip(a.chunks_mut(CHUNK)).collect();
                    par::for_each(chunks, |_, ((p, g), buf)| sgd_chunk(p, g, buf, s));
                }
            }
        }
        Ok(())
    }
}
