//! The system sampler: CPU (per core and total), load average, memory and swap, disk and
//! network throughput, the CPU and memory of each process that trains a run, and NVIDIA GPUs
//! through NVML (utilisation, memory, temperature, power, clocks, and GPU memory per process,
//! mapped to the runs those processes train). [`spawn`] sends a sample into its sink once a
//! period; only the latest matters to a view, and the console keeps the history.
//!
//! NVML is loaded at run time (`nvml-wrapper`), so the binary runs on machines without an
//! NVIDIA driver: there the GPU list is empty and `gpu_note` says in a plain sentence why
//! ("no NVIDIA driver found (libnvidia-ml.so not loadable): GPU readings off").
//!
//! Given a [`SystemLog`], [`spawn`] also records one point per [`RECORD_EVERY`] into the run
//! store, so the console's history charts survive a restart.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::store::RunStore;
use crate::store::system_log::{GpuPoint, RECORD_EVERY, SystemLog, SystemPoint};

/// One GPU at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    /// Percent of time a kernel ran over the last sample period.
    pub utilization: u32,
    pub memory_used: u64,
    pub memory_total: u64,
    /// Degrees Celsius.
    pub temperature: Option<u32>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    /// Processes using the GPU and their GPU memory.
    pub processes: Vec<GpuProcess>,
}

/// A process's use of one GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub memory: u64,
}

/// A process that trains runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessSample {
    pub pid: u32,
    /// The runs it trains (a console process can train several).
    pub runs: Vec<String>,
    /// Percent of one core.
    pub cpu: f32,
    /// Resident memory in bytes.
    pub rss: u64,
    /// GPU memory over all GPUs, in bytes.
    pub gpu_memory: u64,
}

/// One sample of the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SystemSample {
    /// When it was taken, in Unix seconds (0 when not known).
    pub time: f64,
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
    /// Bytes per second over the last period, all disks.
    pub disk_read_bps: f64,
    pub disk_write_bps: f64,
    /// Bytes per second over the last period, all interfaces.
    pub net_rx_bps: f64,
    pub net_tx_bps: f64,
    pub gpus: Vec<GpuSample>,
    /// Why there are no GPUs, when there are none.
    pub gpu_note: Option<String>,
    pub processes: Vec<ProcessSample>,
}

/// Where GPU readings come from: NVML on a real machine, a fake in tests.
pub trait GpuSource: Send {
    fn sample(&mut self) -> Result<Vec<GpuSample>, String>;
}

/// GPUs read through the NVIDIA Management Library.
pub struct NvmlGpus(nvml_wrapper::Nvml);

impl NvmlGpus {
    /// Loads NVML; fails fast (no waiting) where the driver library is absent.
    pub fn open() -> Result<Self, String> {
        nvml_wrapper::Nvml::init().map(NvmlGpus).map_err(|e| gpu_off_sentence(&e))
    }
}

/// Why NVML did not start, as a sentence for someone who may not know what NVML is: what is
/// missing, the technical reason in brackets, and what it means.
pub fn gpu_off_sentence(e: &nvml_wrapper::error::NvmlError) -> String {
    use nvml_wrapper::error::NvmlError as E;
    let what = match e {
        E::LibloadingError(_) | E::FailedToLoadSymbol(_) => {
            "no NVIDIA driver found (libnvidia-ml.so not loadable)".to_string()
        }
        E::DriverNotLoaded => "the NVIDIA driver is installed but not loaded (nvidia-smi tells more)".into(),
        E::NoPermission => "no permission to read the GPUs (NVML: no permission)".into(),
        E::LibRmVersionMismatch => {
            "the NVIDIA driver and its library differ in version (a reboot usually fixes it)".into()
        }
        other => format!("the NVIDIA driver did not answer (NVML: {other})"),
    };
    format!("{what}: GPU readings off")
}

impl SystemSample {
    /// What the history keeps of a sample taken at `t` (Unix seconds).
    pub fn point(&self, t: f64) -> SystemPoint {
        SystemPoint {
            t,
            cpu: self.cpu_total,
            mem_used: self.memory_used,
            mem_total: self.memory_total,
            gpus: self
                .gpus
                .iter()
                .map(|g| GpuPoint {
                    index: g.index,
                    util: g.utilization,
                    mem_used: g.memory_used,
                    mem_total: g.memory_total,
                })
                .collect(),
        }
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl GpuSource for NvmlGpus {
    fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
        use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
        use nvml_wrapper::enums::device::UsedGpuMemory;
        let n = self.0.device_count().map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let d = self.0.device_by_index(i).map_err(|e| e.to_string())?;
            let mem = d.memory_info().ok();
            let mut processes: Vec<GpuProcess> = d
                .running_compute_processes()
                .unwrap_or_default()
                .into_iter()
                .chain(d.running_graphics_processes().unwrap_or_default())
                .map(|p| GpuProcess {
                    pid: p.pid,
                    memory: match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => b,
                        UsedGpuMemory::Unavailable => 0,
                    },
                })
                .collect();
            processes.sort_by_key(|p| p.pid);
            processes.dedup_by_key(|p| p.pid);
            out.push(GpuSample {
                index: i,
                name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                utilization: d.utilization_rates().map(|u| u.gpu).unwrap_or(0),
                memory_used: mem.as_ref().map_or(0, |m| m.used),
                memory_total: mem.as_ref().map_or(0, |m| m.total),
                temperature: d.temperature(TemperatureSensor::Gpu).ok(),
                // NVML reports milliwatts.
                power_watts: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
                power_limit_watts: d.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0),
                sm_clock_mhz: d.clock_info(Clock::SM).ok(),
                memory_clock_mhz: d.clock_info(Clock::Memory).ok(),
                processes,
            });
        }
        Ok(out)
    }
}

/// How many samples of history the console keeps (ten minutes at 1 Hz).
pub const HISTORY: usize = 600;

/// How often the run store is read to learn which processes train runs.
const PID_SCAN: Duration = Duration::from_secs(3);

/// Reads the machine's state.
pub struct Sampler {
    sys: Option<sysinfo::System>,
    disks: Option<sysinfo::Disks>,
    networks: Option<sysinfo::Networks>,
    gpus: Option<Box<dyn GpuSource>>,
    gpu_note: Option<String>,
    last: Instant,
    store: Option<RunStore>,
    run_pids: BTreeMap<u32, Vec<String>>,
    next_scan: Instant,
    /// The processes writing external runs, as the store follower finds them.
    writers: Option<tokio::sync::watch::Receiver<crate::external::watch::Writers>>,
}

impl Sampler {
    /// A sampler reading NVML when it is there; `store` maps processes to runs.
    pub fn new(store: Option<RunStore>) -> Self {
        let (gpus, note): (Option<Box<dyn GpuSource>>, Option<String>) = match NvmlGpus::open() {
            Ok(n) => (Some(Box::new(n)), None),
            Err(e) => (None, Some(e)),
        };
        Self::with_gpus(store, gpus, note)
    }

    /// A sampler with a given GPU source (tests use a fake one).
    pub fn with_gpus(
        store: Option<RunStore>,
        gpus: Option<Box<dyn GpuSource>>,
        gpu_note: Option<String>,
    ) -> Self {
        let mut sys = sysinfo::System::new().ok();
        if let Some(s) = sys.as_mut() {
            // Usage is a difference of two readings: take the first one now.
            s.refresh_cpu_usage();
        }
        Sampler {
            sys,
            disks: sysinfo::Disks::new_with_refreshed_list().ok(),
            networks: sysinfo::Networks::new_with_refreshed_list().ok(),
            gpus,
            gpu_note,
            last: Instant::now(),
            store,
            run_pids: BTreeMap::new(),
            next_scan: Instant::now(),
            writers: None,
        }
    }

    /// Also shows the processes writing external runs, as published on `rx`.
    pub fn with_writers(mut self, rx: tokio::sync::watch::Receiver<crate::external::watch::Writers>) -> Self {
        self.writers = Some(rx);
        self
    }

    /// Takes a sample.
    pub fn sample(&mut self) -> SystemSample {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        self.last = now;
        let mut out = SystemSample { time: unix_now(), ..SystemSample::default() };
        if now >= self.next_scan {
            self.next_scan = now + PID_SCAN;
            self.scan_runs();
        }
        let pids: Vec<sysinfo::Pid> = self.run_pids.keys().map(|p| sysinfo::Pid::from_u32(*p)).collect();
        if let Some(sys) = self.sys.as_mut() {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            if !pids.is_empty() {
                sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&pids), true);
            }
            out.cpus = sys.cpus().iter().map(|c| c.usage()).collect();
            out.cpu_total = sys.global_cpu_usage();
            out.memory_used = sys.used_memory();
            out.memory_total = sys.total_memory();
            out.swap_used = sys.used_swap();
            out.swap_total = sys.total_swap();
            for (pid, runs) in &self.run_pids {
                if let Some(p) = sys.process(sysinfo::Pid::from_u32(*pid)) {
                    out.processes.push(ProcessSample {
                        pid: *pid,
                        runs: runs.clone(),
                        cpu: p.cpu_usage(),
                        rss: p.memory(),
                        gpu_memory: 0,
                    });
                }
            }
        }
        if let Ok(l) = sysinfo::System::load_average() {
            out.load = [l.one, l.five, l.fifteen];
        }
        if let Some(d) = self.disks.as_mut() {
            d.refresh(true);
            let (r, w) = d.iter().fold((0u64, 0u64), |(r, w), d| {
                let u = d.usage();
                (r + u.read_bytes, w + u.written_bytes)
            });
            out.disk_read_bps = r as f64 / secs;
            out.disk_write_bps = w as f64 / secs;
        }
        if let Some(n) = self.networks.as_mut() {
            n.refresh(true);
            let (rx, tx) =
                n.values().fold((0u64, 0u64), |(rx, tx), n| (rx + n.received(), tx + n.transmitted()));
            out.net_rx_bps = rx as f64 / secs;
            out.net_tx_bps = tx as f64 / secs;
        }
        match self.gpus.as_mut().map(|g| g.sample()) {
            Some(Ok(g)) if !g.is_empty() => out.gpus = g,
            Some(Ok(_)) => {
                out.gpu_note =
                    Some("no GPU found (the NVIDIA driver lists no device): GPU readings off".into())
            }
            Some(Err(e)) => out.gpu_note = Some(format!("GPU readings failed this time (NVML: {e})")),
            None => out.gpu_note = self.gpu_note.clone(),
        }
        // GPU memory per process, and processes on a GPU that train runs but were not seen yet.
        let mut gpu_mem: HashMap<u32, u64> = HashMap::new();
        for g in &out.gpus {
            for p in &g.processes {
                *gpu_mem.entry(p.pid).or_default() += p.memory;
            }
        }
        for p in &mut out.processes {
            p.gpu_memory = gpu_mem.get(&p.pid).copied().unwrap_or(0);
        }
        out
    }

    /// Learns which processes train runs from the active runs' `run.json`.
    fn scan_runs(&mut self) {
        let Some(store) = &self.store else { return };
        let mut map: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for r in store.list() {
            if let (true, Some(pid)) = (r.status.is_active(), r.pid) {
                map.entry(pid).or_default().push(r.id.into());
            }
        }
        if let Some(rx) = &self.writers {
            for (pid, runs) in rx.borrow().iter() {
                map.entry(*pid).or_default().extend(runs.iter().cloned());
            }
        }
        self.run_pids = map;
    }
}

/// What the system sampler needs.
pub struct SystemDeps {
    pub period: Duration,
    /// The store, to map GPU processes to the runs they train.
    pub store: Option<RunStore>,
    /// The processes writing external runs (`--watch`), shown beside them.
    pub writers: Option<tokio::sync::watch::Receiver<crate::external::watch::Writers>>,
    /// Where to record one point per [`RECORD_EVERY`]; `None` records nothing.
    pub history: Option<SystemLog>,
}

/// Starts the sampler on the current runtime: a sample every `period` until the sink or the
/// command channel closes. The first sample comes after one period, since CPU usage needs two
/// readings.
pub fn spawn(
    deps: SystemDeps,
    sink: impl super::Sink<SystemSample>,
) -> crate::error::Result<super::Handle<()>> {
    let (commands, mut stop) = super::channel::<()>();
    let task = tokio::spawn(async move {
        let (store, writers) = (deps.store, deps.writers);
        // NVML's first load and the first reading touch the disk: off the async workers.
        let Ok(mut sampler) = tokio::task::spawn_blocking(move || Sampler::new(store)).await else { return };
        if let Some(rx) = writers {
            sampler = sampler.with_writers(rx);
        }
        let mut tick = tokio::time::interval(deps.period.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL));
        tick.tick().await;
        let mut next_record = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let sample = sampler.sample();
                    if let Some(log) = deps.history.as_ref().filter(|_| Instant::now() >= next_record) {
                        next_record = Instant::now() + RECORD_EVERY;
                        // The history is a courtesy: a full disk must not stop the live view.
                        let _ = log.append(&sample.point(sample.time));
                    }
                    if !sink(sample) {
                        break;
                    }
                }
                // Only a closed channel ends this: the sampler takes no commands.
                None = stop.recv() => break,
            }
        }
    });
    Ok(super::Handle { commands, join: super::Join::Task(task) })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TwoGpus;
    impl GpuSource for TwoGpus {
        fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
            Ok(vec![
                GpuSample {
                    index: 0,
                    name: "A".into(),
                    processes: vec![GpuProcess { pid: std::process::id(), memory: 100 }],
                    ..Default::default()
                },
                GpuSample {
                    index: 1,
                    name: "B".into(),
                    processes: vec![GpuProcess { pid: std::process::id(), memory: 50 }],
                    ..Default::default()
                },
            ])
        }
    }

    #[test]
    fn gpu_memory_of_a_run_process_adds_up_over_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path());
        let spec = crate::ml::spec::resolve("digits-logreg", std::path::Path::new("models")).unwrap().0;
        let run = store.create(&spec).unwrap();
        run.update_info(|i| {
            i.status = crate::store::RunStatus::Running;
            i.pid = Some(std::process::id());
        })
        .unwrap();
        let mut s = Sampler::with_gpus(Some(store), Some(Box::new(TwoGpus)), None);
        std::thread::sleep(Duration::from_millis(250));
        let sample = s.sample();
        assert_eq!(sample.gpus.len(), 2);
        assert_eq!(sample.processes.len(), 1);
        assert_eq!(sample.processes[0].runs, vec![run.id]);
        assert_eq!(sample.processes[0].gpu_memory, 150);
        assert!(sample.processes[0].rss > 0);
        assert!(!sample.cpus.is_empty());
    }

    #[test]
    fn a_missing_driver_reads_as_a_plain_sentence() {
        use nvml_wrapper::error::NvmlError;
        let s = gpu_off_sentence(&NvmlError::FailedToLoadSymbol("nvmlInit_v2".into()));
        assert_eq!(s, "no NVIDIA driver found (libnvidia-ml.so not loadable): GPU readings off");
        assert!(gpu_off_sentence(&NvmlError::DriverNotLoaded).contains("not loaded"));
        // On this machine, whatever it has, the sampler says something a person can read.
        let note = Sampler::new(None).sample().gpu_note;
        assert!(note.is_none_or(|n| n.ends_with("GPU readings off") || n.contains("NVML")));
    }

    #[tokio::test]
    async fn the_sampler_records_points_into_the_store_at_a_low_rate() {
        let dir = tempfile::tempdir().unwrap();
        let log = SystemLog::new(dir.path());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let deps = SystemDeps {
            period: Duration::from_millis(250),
            store: None,
            history: Some(log.clone()),
            writers: None,
        };
        let handle = spawn(deps, move |s: SystemSample| tx.send(s).is_ok()).unwrap();
        for _ in 0..4 {
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        }
        drop(handle);
        // Four samples in a second make one point: the first is recorded, the rest wait 10 s.
        let points = log.load(0.0);
        assert_eq!(points.len(), 1, "{points:?}");
        assert!(points[0].mem_total > 0 && (unix_now() - points[0].t).abs() < 60.0);
    }

    #[test]
    fn no_driver_means_an_empty_gpu_list_and_a_note() {
        let mut s = Sampler::with_gpus(None, None, Some("no GPU found (NVML: library not found)".into()));
        let sample = s.sample();
        assert!(sample.gpus.is_empty());
        assert!(sample.gpu_note.unwrap().starts_with("no GPU found"));
    }
}
