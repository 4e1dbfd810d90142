//! Vigil's backward pass, for training and for input gradients alike: candle's own, except that
//! the fused kernels hand the gradients of parameters straight to the returned [`GradStore`].
//!
//! candle adds every gradient it receives into a fresh zero-filled tensor of the parameter's
//! size; for a large weight that is a parallel element-wise op, whose worker thread, woken once
//! per step on a loaded two-core machine, could stall the step for milliseconds. While
//! [`backward`] runs, the kernels give parameter (`Var`) gradients to a per-thread list instead
//! and return nothing to candle for them; [`backward`] then puts them in the store. The fused
//! encoder layer ([`super::encoder`]) can hand its parameters' gradients over no other way, so
//! it refuses a plain `loss.backward()` that would need them; nothing is deferred outside this
//! function.

use std::cell::RefCell;

use candle_core::Tensor;
use candle_core::backprop::GradStore;

use super::tensor;

/// Parameters and their summed gradients.
type Deferred = Vec<(Tensor, Vec<f32>)>;

thread_local! {
    /// The gradients deferred by the running [`backward`] on this thread, if one is running.
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// Gradients of `loss` with respect to every variable it depends on, as `loss.backward()`
/// computes them.
pub fn backward(loss: &Tensor) -> candle_core::Result<GradStore> {
    if super::in_inference() {
        // Inside it the kernels keep nothing and skip every parameter's gradient.
        candle_core::bail!("a backward pass inside kernels::inference, which differentiates nothing");
    }
    /// Ends the deferral however the backward pass ends.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFERRED.with(|d| d.borrow_mut().take());
        }
    }
    DEFERRED.with(|d| *d.borrow_mut() = Some(Vec::new()));
    let _reset = Reset;
    let mut grads = loss.backward()?;
    let deferred = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
    for (param, values) in deferred {
        let grad = tensor(values, param.shape());
        // A parameter also used by generic ops has a share of its gradient in the store.
        let grad = match grads.remove(&param) {
            Some(share) => (share + grad)?,
            None => grad,
        };
        grads.insert(&param, grad);
    }
    Ok(grads)
}

/// A kernel's gradient for `param`: taken over by the running [`backward`] when `param` is a
/// variable (`None` then goes back to candle), else returned as a tensor for candle to add.
pub(super) fn deliver(param: &Tensor, values: Vec<f32>) -> Option<Tensor> {
    if !param.is_variable() {
        return Some(tensor(values, param.shape()));
    }
    let left = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        let Some(list) = d.as_mut() else { return Some(values) };
        match list.iter_mut().find(|(p, _)| p.id() == param.id()) {
            // A parameter used more than once (a recurrent weight) sums its uses in the order
            // candle visits them, which is fixed.
            Some((_, sum)) => sum.iter_mut().zip(&values).for_each(|(s, v)| *s += v),
            None => list.push((param.clone(), values)),
        }
        None
    });
    left.map(|values| tensor(values, param.shape()))
}
