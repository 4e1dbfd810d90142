//! Data parallelism on candle's own worker pool (`candle_core::utils::barrier_pool`), the pool
//! candle's element-wise ops already use. Running the kernels' loops and matrix products there
//! too, rather than on a second pool, keeps one team of threads busy: with two pools on two
//! cores, candle's worker spun for a core right when the kernels' threads needed it.
//!
//! Items are handed out through a shared cursor, so a thread that falls behind (a core taken by
//! another process) leaves its share to the others. Nothing here may be called from inside a
//! task: the pool does not nest.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use candle_core::utils::barrier_pool;

/// Threads a parallel loop runs on: the pool's workers and the calling thread.
pub fn threads() -> usize {
    barrier_pool().n_workers() + 1
}

/// Runs `f(i, item)` once for every item, spread over the pool.
pub fn for_each<I: Send>(items: Vec<I>, f: impl Fn(usize, I) + Sync) {
    if items.len() <= 1 || threads() == 1 {
        items.into_iter().enumerate().for_each(|(i, item)| f(i, item));
        return;
    }
    let slots: Vec<Mutex<Option<I>>> = items.into_iter().map(|item| Mutex::new(Some(item))).collect();
    barrier_pool().execute_chunked(slots.len(), |range: Range<usize>| {
        for i in range {
            let item = slots[i].lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(item) = item {
                f(i, item);
            }
        }
    });
}

/// `f(i, item)` for every item, spread over the pool, with the results in item order.
pub fn map<I: Send, R: Send>(items: Vec<I>, f: impl Fn(usize, I) -> R + Sync) -> Vec<R> {
    let results: Vec<Mutex<Option<R>>> = (0..items.len()).map(|_| Mutex::new(None)).collect();
    for_each(items, |i, item| {
        let r = f(i, item);
        *results[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
    });
    results
        .into_iter()
        .map(|r| r.into_inner().unwrap_or_else(PoisonError::into_inner).expect("every item ran"))
        .collect()
}

/// Runs `f(i, chunk)` for every `size`-long chunk of `data` (the last may be shorter).
pub fn chunks_mut<T: Send>(data: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if data.is_empty() || size == 0 {
        return;
    }
    for_each(data.chunks_mut(size).collect(), f);
}
