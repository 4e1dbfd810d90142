//! `vigil optimize`: derive a smaller variant of a run's model (quantised, pruned, or both),
//! store it with the run, and print what it costs and saves against the original. The work is
//! done by [`crate::ml::variants`]; this file parses arguments and prints.

use std::io::IsTerminal;

use bytesize::ByteSize;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

use super::invalid;
use crate::error::{Error, Result};
use crate::ml::model::LayerStorage;
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
    if let Some(folder) = &report.frozen_encoder {
        println!(
            "file on disk: the original's checkpoint holds the head it trained; its frozen encoder \
             is read from {folder}, as the variant's f32 layers still are"
        );
    }
    let mut groups = layer_groups(&report.layers);
    // What each layer became first, then what stayed and why.
    groups.sort_by_key(|g| g.1.is_some());
    for (stored, why, names) in groups {
        match why {
            Some(why) => {
                println!("  stay {stored} ({}): {}: {why}", names.len(), collapse(&names).join(", "))
            }
            None => println!("{stored} ({}): {}", names.len(), collapse(&names).join(", ")),
        }
    }
    if let Some(why) = &report.slower {
        println!("slower for one input: {why}");
    }
    println!("serve it: vigil serve {}@{}", report.run, report.variant);
    Ok(())
}

/// The layers grouped by how they are stored and why, in the order each group first appears:
/// a Transformer has some sixty layers, which listed one a line would fill the screen twice.
fn layer_groups(layers: &[LayerStorage]) -> Vec<(&str, Option<&str>, Vec<&str>)> {
    let mut groups: Vec<(&str, Option<&str>, Vec<&str>)> = Vec::new();
    for l in layers {
        let key = (l.stored.as_str(), l.why.as_deref());
        match groups.iter_mut().find(|g| (g.0, g.1) == key) {
            Some(g) => g.2.push(&l.layer),
            None => groups.push((key.0, key.1, vec![&l.layer])),
        }
    }
    groups
}

/// Names that differ only in one numeric part, `encoder.layer.0.output.dense` to
/// `encoder.layer.5.output.dense`, written once as `encoder.layer.{0-5}.output.dense` (or
/// `{0,2,5}` where the numbers skip); other names as they are, in their first one's place.
fn collapse(names: &[&str]) -> Vec<String> {
    // Text before the number, text after it, and the numbers, in the order first seen; a name
    // without exactly one numeric part is an entry of its own, with no numbers.
    let mut entries: Vec<(String, String, Vec<u64>)> = Vec::new();
    for name in names {
        let parts: Vec<&str> = name.split('.').collect();
        let numbers: Vec<(usize, u64)> = (0..parts.len())
            .filter(|&i| !parts[i].is_empty() && parts[i].bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|i| parts[i].parse().ok().map(|n| (i, n)))
            .collect();
        let [(i, n)] = numbers[..] else {
            entries.push((name.to_string(), String::new(), Vec::new()));
            continue;
        };
        let before: String = parts[..i].iter().map(|p| format!("{p}.")).collect();
        let after: String = parts[i + 1..].iter().map(|p| format!(".{p}")).collect();
        match entries.iter_mut().find(|e| !e.2.is_empty() && (e.0 == before && e.1 == after)) {
            Some(e) => e.2.push(n),
            None => entries.push((before, after, vec![n])),
        }
    }
    entries
        .into_iter()
        .map(|(before, after, nums)| {
            let run = nums.windows(2).all(|w| w[1] == w[0] + 1);
            let middle = match nums[..] {
                [] => String::new(),
                [n] => n.to_string(),
                _ if run => format!("{{{}-{}}}", nums[0], nums[nums.len() - 1]),
                _ => format!("{{{}}}", nums.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
            };
            format!("{before}{middle}{after}")
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_layers_are_written_once_with_their_numbers() {
        let names = [
            "embeddings.word",
            "encoder.layer.0.q",
            "encoder.layer.0.ffn",
            "encoder.layer.1.q",
            "encoder.layer.1.ffn",
            "encoder.layer.2.q",
            "encoder.layer.2.ffn",
            "block.0.conv",
            "block.3.conv",
            "dense.7",
            "out",
        ];
        assert_eq!(
            collapse(&names),
            [
                "embeddings.word",
                "encoder.layer.{0-2}.q",
                "encoder.layer.{0-2}.ffn",
                "block.{0,3}.conv",
                "dense.7",
                "out"
            ]
        );
    }

    #[test]
    fn layers_group_by_storage_and_reason_in_order() {
        let l = |layer: &str, stored: &str, why: Option<&str>| LayerStorage {
            layer: layer.into(),
            stored: stored.into(),
            why: why.map(String::from),
        };
        let layers = [
            l("emb", "f32", Some("lookup")),
            l("l0", "q8_0", None),
            l("norm", "f32", Some("norm")),
            l("out", "q8_0", None),
        ];
        let groups = layer_groups(&layers);
        assert_eq!(
            groups,
            vec![
                ("f32", Some("lookup"), vec!["emb"]),
                ("q8_0", None, vec!["l0", "out"]),
                ("f32", Some("norm"), vec!["norm"])
            ]
        );
    }
}
