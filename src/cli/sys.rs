//! `vigil sys`: one sample of the machine (or a stream of them with `--follow`), as a table for
//! people or JSON for scripts, with the processes that train runs in this store.

use std::io::Write;
use std::time::Duration;

use crate::engine::system::{Sampler, SystemSample};
use crate::error::Result;
use crate::store::RunStore;

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn mib_s(b: f64) -> f64 {
    b / (1u64 << 20) as f64
}

/// The JSON form: the sample as it is, plus `memory` and `swap` objects scripts expect.
fn json(s: &SystemSample) -> serde_json::Value {
    serde_json::json!({
        "cpus": s.cpus,
        "cpu_total": s.cpu_total,
        "load": s.load,
        "memory": {"used": s.memory_used, "total": s.memory_total},
        "swap": {"used": s.swap_used, "total": s.swap_total},
        "disk": {"read_bytes_per_sec": s.disk_read_bps, "write_bytes_per_sec": s.disk_write_bps},
        "network": {"rx_bytes_per_sec": s.net_rx_bps, "tx_bytes_per_sec": s.net_tx_bps},
        "gpus": s.gpus,
        "gpu_note": s.gpu_note,
        "processes": s.processes,
    })
}

fn print_table(s: &SystemSample) {
    let cores: Vec<String> = s.cpus.iter().map(|c| format!("{c:.0}%")).collect();
    println!("cpu      {:.1}% ({} cores: {})", s.cpu_total, s.cpus.len(), cores.join(" "));
    println!("load     {:.2} {:.2} {:.2}", s.load[0], s.load[1], s.load[2]);
    println!("memory   {:.2} / {:.2} GiB", gib(s.memory_used), gib(s.memory_total));
    println!("swap     {:.2} / {:.2} GiB", gib(s.swap_used), gib(s.swap_total));
    println!("disk     read {:.2} MiB/s, write {:.2} MiB/s", mib_s(s.disk_read_bps), mib_s(s.disk_write_bps));
    println!("network  rx {:.2} MiB/s, tx {:.2} MiB/s", mib_s(s.net_rx_bps), mib_s(s.net_tx_bps));
    if s.gpus.is_empty() {
        println!("gpu      {}", s.gpu_note.as_deref().unwrap_or("no GPU found"));
    }
    for g in &s.gpus {
        println!(
            "gpu {}    {} · util {}% · mem {:.1}/{:.1} GiB · {} · {} · sm {} MHz",
            g.index,
            g.name,
            g.utilization,
            gib(g.memory_used),
            gib(g.memory_total),
            g.temperature.map_or("-".into(), |t| format!("{t}°C")),
            match (g.power_watts, g.power_limit_watts) {
                (Some(p), Some(l)) => format!("{p:.0}/{l:.0} W"),
                (Some(p), None) => format!("{p:.0} W"),
                _ => "- W".into(),
            },
            g.sm_clock_mhz.map_or("-".into(), |c| c.to_string()),
        );
    }
    if s.processes.is_empty() {
        println!("runs     no process is training a run in this store");
    }
    for p in &s.processes {
        println!(
            "pid {:<8} cpu {:>5.1}%  rss {:>8.1} MiB  gpu {:>8.1} MiB  runs {}",
            p.pid,
            p.cpu,
            p.rss as f64 / (1u64 << 20) as f64,
            p.gpu_memory as f64 / (1u64 << 20) as f64,
            p.runs.join(", ")
        );
    }
}

fn line(s: &SystemSample) -> String {
    let gpu = match s.gpus.first() {
        Some(g) => format!("gpu0 {:>3}% {:>6.1}G", g.utilization, gib(g.memory_used)),
        None => "gpu -".into(),
    };
    format!(
        "cpu {:>5.1}%  mem {:>5.2}G  load {:>5.2}  disk r/w {:>7.2}/{:>7.2} MiB/s  net rx/tx {:>7.2}/{:>7.2} MiB/s  {gpu}  runs {}",
        s.cpu_total,
        gib(s.memory_used),
        s.load[0],
        mib_s(s.disk_read_bps),
        mib_s(s.disk_write_bps),
        mib_s(s.net_rx_bps),
        mib_s(s.net_tx_bps),
        s.processes.iter().map(|p| p.runs.len()).sum::<usize>()
    )
}

pub(super) fn run(
    store: &RunStore,
    as_json: bool,
    follow: bool,
    every: Duration,
    count: Option<u64>,
) -> Result<()> {
    let mut sampler = Sampler::new(Some(store.clone()));
    // Usage is a difference between two readings: the first sample after a short wait.
    std::thread::sleep(if follow { every } else { Duration::from_millis(300) });
    if !follow {
        let s = sampler.sample();
        if as_json {
            println!("{}", serde_json::to_string_pretty(&json(&s)).expect("serialises"));
        } else {
            print_table(&s);
        }
        return Ok(());
    }
    let mut n = 0u64;
    loop {
        let s = sampler.sample();
        let text = if as_json { json(&s).to_string() } else { line(&s) };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the stream quietly.
        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}
