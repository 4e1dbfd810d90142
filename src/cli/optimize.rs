//! `vigil optimize`: derive a smaller variant of a run's model (quantised, pruned, or both),
//! store it with the run, and print what it costs and saves against the original. The work is
//! done by [`crate::ml::variants`]; this file parses arguments and prints.

use std::io::IsTerminal;

use bytesize::ByteSize;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

use super::invalid;
use crate::error::{Error, Result};
use crate::ml::variants::{Precision, Prune, Report, VariantSpec, optimize, variant_dir};
use crate::store::RunStore;

/// Arguments of `vigil optimize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id, a unique prefix or suffix of one, or `latest`.
    pub run: String,
    /// Store the dense layers' weights as f16, q8_0 or q4_0 (none: keep f32, with --prune).
    #[arg(long, default_value = "none")]
    pub quantize: String,
    /// Zero this fraction of the weights, smallest magnitude first (e.g. 0.5).
    #[arg(long, allow_negative_numbers = true)]
    pub prune: Option<f64>,
    /// With --prune: the fraction within each layer rather than one threshold over all layers.
    #[arg(long)]
    pub per_layer: bool,
    /// With --prune: epochs of fine-tuning afterwards, pruned weights held at zero.
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Timing rounds for latency and throughput (more is steadier and slower).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vigil optimize`.
pub fn run(store: &RunStore, args: Args) -> Result<()> {
    let precision = Precision::parse(&args.quantize)?;
    if args.prune.is_none() {
        for (flag, set) in
            [("--per-layer", args.per_layer), ("--finetune-epochs", args.finetune_epochs.is_some())]
        {
            if set {
                return Err(invalid(format!("{flag} needs --prune R: it says how to prune")));
            }
        }
    }
    if args.rounds == 0 {
        return Err(invalid("--rounds must be at least 1"));
    }
    let spec = VariantSpec {
        precision,
        prune: args.prune.map(|ratio| Prune {
            ratio,
            per_layer: args.per_layer,
            finetune_epochs: args.finetune_epochs.unwrap_or(0),
        }),
    };
    spec.check()?;
    let dir = store.resolve(&args.run)?;
    if !args.json && std::io::stderr().is_terminal() {
        eprintln!("making variant {} of {} and timing it against the original ...", spec.name(), dir.id);
    }
    let report = optimize(&dir, &spec, args.rounds)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::internal(e.to_string()))?);
        return Ok(());
    }
    println!(
        "{} → variant {} ({})",
        report.run,
        report.variant,
        variant_dir(&dir, &report.variant).display()
    );
    println!("{}", table(&report));
    let layers: Vec<String> = report.layers.iter().map(|l| format!("{} {}", l.layer, l.stored)).collect();
    println!("layers: {}", layers.join(", "));
    for l in report.layers.iter().filter(|l| l.why.is_some()) {
        println!("  {} stays f32: {}", l.layer, l.why.as_deref().unwrap_or_default());
    }
    if let Some(why) = &report.slower {
        println!("slower for one input: {why}");
    }
    println!("serve it: vigil serve {}@{}", report.run, report.variant);
    Ok(())
}

fn table(r: &Report) -> Table {
    let (o, v) = (&r.original, &r.measured);
    let times = |a: f64, b: f64, smaller: &str, larger: &str| {
        if b <= a {
            format!("{:.2}x {smaller}", a / b.max(1e-12))
        } else {
            format!("{:.2}x {larger}", b / a.max(1e-12))
        }
    };
    let bytes = |b: u64| ByteSize(b).display().iec().to_string();
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(vec!["", "original", r.variant.as_str(), "change"]);
    let mut row = |name: &str, a: String, b: String, change: String| {
        t.add_row(vec![
            Cell::new(name),
            Cell::new(a).set_alignment(CellAlignment::Right),
            Cell::new(b).set_alignment(CellAlignment::Right),
            Cell::new(change),
        ]);
    };
    row(
        "dense weights",
        bytes(o.dense_weight_bytes),
        bytes(v.dense_weight_bytes),
        times(o.dense_weight_bytes as f64, v.dense_weight_bytes as f64, "smaller", "larger"),
    );
    row(
        "file on disk",
        bytes(o.disk_bytes),
        bytes(v.disk_bytes),
        times(o.disk_bytes as f64, v.disk_bytes as f64, "smaller", "larger"),
    );
    row(
        "in memory",
        bytes(o.memory_bytes),
        bytes(v.memory_bytes),
        times(o.memory_bytes as f64, v.memory_bytes as f64, "smaller", "larger"),
    );
    row(
        "test accuracy",
        format!("{:.2}%", 100.0 * o.test_accuracy),
        format!("{:.2}%", 100.0 * v.test_accuracy),
        format!("{:+.2} pt", r.accuracy_delta_points()),
    );
    row("agreement", String::new(), format!("{:.2}%", 100.0 * r.agreement), "same test predictions".into());
    if let Some(s) = r.sparsity {
        row("zero weights", String::new(), format!("{:.1}%", 100.0 * s), String::new());
    }
    row(
        "latency, 1 input",
        format!("{:.3} ms", o.latency_ms),
        format!("{:.3} ms", v.latency_ms),
        times(o.latency_ms, v.latency_ms, "faster", "slower"),
    );
    row(
        "throughput, b256",
        format!("{:.0}/s", o.throughput),
        format!("{:.0}/s", v.throughput),
        times(1.0 / o.throughput, 1.0 / v.throughput, "faster", "slower"),
    );
    t
}
