//! The system sampler: CPU (per core and total), load average, memory and swap, sampled on a
//! fixed period into a bounded history. Only the latest sample matters to a view, so samples are
//! published on a `watch` channel.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// One sample of the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SystemSample {
    /// Per-core utilisation in percent.
    pub cpus: Vec<f32>,
    /// Mean utilisation over all cores, in percent.
    pub cpu_total: f32,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub memory_used: u64,
    pub memory_total: u64,
    pub swap_used: u64,
    pub swap_total: u64,
}

/// How many samples of history the sampler keeps (ten minutes at 1 Hz).
pub const HISTORY: usize = 600;

/// Reads the machine's state with sysinfo.
pub struct Sampler {
    sys: Option<sysinfo::System>,
    pub history: VecDeque<SystemSample>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Self {
        let mut sys = sysinfo::System::new().ok();
        if let Some(s) = sys.as_mut() {
            // CPU usage is a difference between two readings: take the first one now.
            s.refresh_cpu_usage();
        }
        Sampler { sys, history: VecDeque::with_capacity(HISTORY) }
    }

    /// Takes a sample and appends it to the history.
    pub fn sample(&mut self) -> SystemSample {
        let mut out = SystemSample::default();
        if let Some(sys) = self.sys.as_mut() {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            out.cpus = sys.cpus().iter().map(|c| c.usage()).collect();
            out.cpu_total = sys.global_cpu_usage();
            out.memory_used = sys.used_memory();
            out.memory_total = sys.total_memory();
            out.swap_used = sys.used_swap();
            out.swap_total = sys.total_swap();
        }
        if let Ok(l) = sysinfo::System::load_average() {
            out.load = [l.one, l.five, l.fifteen];
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(out.clone());
        out
    }
}

/// Samples every `period` until the receiver side is gone.
pub async fn run(period: Duration, tx: tokio::sync::watch::Sender<SystemSample>) {
    let mut sampler = Sampler::new();
    let mut tick = tokio::time::interval(period.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL));
    loop {
        tick.tick().await;
        let s = sampler.sample();
        if tx.send(s).is_err() {
            break;
        }
    }
}
