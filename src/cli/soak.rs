//! `vigil soak`: mixed and hostile traffic against a service it starts, for minutes, then a
//! report of what must hold (see [`crate::serve::soak`]); exits 1 when something did not.

use std::time::Duration;

use super::invalid;
use crate::error::{Error, Result};
use crate::serve::soak::{self, SoakConfig, SoakReport};
use crate::store::RunStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run to serve: an id, a unique prefix or suffix, or `latest`.
    #[arg(default_value = "latest", value_name = "RUN")]
    pub run: String,
    /// How long to run, in minutes (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Valid predictions per second (the rest of the mix comes on top).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Keep the scratch run store (its access log and keys) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(store: &RunStore, args: Args) -> Result<()> {
    if !(args.minutes > 0.0 && args.minutes.is_finite()) {
        return Err(invalid("--minutes must be more than 0"));
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(invalid("--rate must be more than 0"));
    }
    let exe = std::env::current_exe().map_err(|e| Error::startup("the soak (finding this program)", e))?;
    let config = SoakConfig {
        store: store.clone(),
        run: args.run,
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        rate: args.rate,
        exe,
        keep: args.keep,
    };
    let report = soak::run(config, |note| eprintln!("soak: {note}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("reports serialise"));
    } else {
        print_report(&report);
    }
    let failures = report.failures();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::refused(format!("the soak failed: {}", failures.join("; "))))
    }
}

fn print_report(r: &SoakReport) {
    println!("soak: {:.0} s", r.seconds);
    // slow-headers never get an answer: the service drops them at its header timeout.
    println!("{:<18} {:>8} {:>9}  statuses", "traffic", "sent", "no answer");
    for (name, k) in &r.kinds {
        let statuses: Vec<String> = k.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!("{name:<18} {:>8} {:>9}  {}", k.sent, k.no_answer, statuses.join(", "));
    }
    println!(
        "crashes            {}{}",
        r.crashes,
        if r.crash_notes.is_empty() { String::new() } else { format!(" ({})", r.crash_notes.join("; ")) }
    );
    let mem: Vec<String> = r
        .rss_mib
        .iter()
        .step_by((r.rss_mib.len() / 12).max(1))
        .map(|(t, m)| format!("{t:.0}s {m:.1}"))
        .collect();
    println!("service memory     {} MiB", mem.join(", "));
    match r.rss_growth_pct {
        Some(g) => println!(
            "memory growth      {g:+.1}% from the second quarter to the last ({})",
            if g <= SoakReport::FLAT_PCT { "flat" } else { "GROWING" }
        ),
        None => println!("memory growth      not measured (too short, or not Linux)"),
    }
    println!(
        "log lines          {} for {} routed requests{}",
        r.log_lines,
        r.routed,
        if r.log_lines == r.routed { " (equal)" } else { " (DIFFERENT)" }
    );
    println!(
        "hash chain         {}",
        if r.chain_intact {
            "intact".to_string()
        } else {
            format!("BROKEN: {}", r.chain_problem.clone().unwrap_or_default())
        }
    );
    match r.revoked_refused_after_ms {
        Some(ms) => println!(
            "revoked key        refused {ms:.0} ms after the revocation; served {} times after 1 s",
            r.revoked_served_late
        ),
        None => println!("revoked key        NEVER refused"),
    }
    if let Some(dir) = &r.store {
        println!("scratch store      {}", dir.display());
    }
}
