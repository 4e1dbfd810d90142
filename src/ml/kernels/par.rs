//! Data parallelism for the kernels, on rayon's global pool. Items are handed out by work
//! stealing, so a thread that falls behind (its core taken by another process) leaves its share
//! to the others, and a waiting thread sleeps rather than spins: on a shared two-core machine,
//! a spinning barrier (candle's own pool, tried first) made steps three to ten times slower
//! whenever other jobs were running.

use rayon::prelude::*;

/// Threads a parallel loop runs on.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f(i, item)` once for every item, spread over the pool.
pub fn for_each<I: Send>(items: Vec<I>, f: impl Fn(usize, I) + Sync + Send) {
    if items.len() <= 1 || threads() == 1 {
        items.into_iter().enumerate().for_each(|(i, item)| f(i, item));
        return;
    }
    items.into_par_iter().enumerate().for_each(|(i, item)| f(i, item));
}

/// `f(i, item)` for every item, spread over the pool, with the results in item order.
pub fn map<I: Send, R: Send>(items: Vec<I>, f: impl Fn(usize, I) -> R + Sync + Send) -> Vec<R> {
    if items.len() <= 1 || threads() == 1 {
        return items.into_iter().enumerate().map(|(i, item)| f(i, item)).collect();
    }
    items.into_par_iter().enumerate().map(|(i, item)| f(i, item)).collect()
}

/// Runs `f(i, chunk)` for every `size`-long chunk of `data` (the last may be shorter).
pub fn chunks_mut<T: Send>(data: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if data.is_empty() || size == 0 {
        return;
    }
    data.par_chunks_mut(size).enumerate().for_each(|(i, chunk)| f(i, chunk));
}
