//! `vigil runs --watch DIR`: the external runs under the directories, read once, as the
//! console would show them: a table (with each warning after it, on stderr), or with `--json`
//! one object per run after Vigil's own (`external` holds the folder, files, tags, writers
//! and warnings; `--points` adds every point of every tag).

use std::path::PathBuf;

use serde_json::json;

use crate::error::Result;
use crate::external::source::{Change, read_once};
use crate::external::{ExternalRun, discover, process};

/// One external run read whole.
pub struct Listed {
    pub change: Change,
    pub run: ExternalRun,
    pub writers: Vec<u32>,
}

/// Reads every run under the directories once.
pub fn read_all(dirs: &[PathBuf]) -> Vec<Listed> {
    let found = discover::run_folders(dirs);
    let folders: Vec<PathBuf> = found.iter().map(|f| f.dir.clone()).collect();
    let writers = process::writers(&folders);
    found
        .into_iter()
        .zip(writers)
        .filter_map(|(f, pids)| {
            let change = read_once(f.id, &f.dir, pids.clone())?;
            let mut run = ExternalRun::default();
            run.apply(change.feed.clone());
            Some(Listed { change, run, writers: pids })
        })
        .collect()
}

/// The `external` object of a run in `vigil runs --json`.
pub fn external_json(l: &Listed, points: bool) -> serde_json::Value {
    let tags: serde_json::Map<String, serde_json::Value> = l
        .run
        .tags
        .iter()
        .map(|(tag, s)| {
            let last =
                s.last().map(|p| json!({"step": p.step, "wall_time": finite(p.wall), "value": p.value}));
            let mut v = json!({"points": s.points.len(), "last": last});
            if points {
                v["values"] = s.points.iter().map(|p| json!([p.step, finite(p.wall), p.value])).collect();
            }
            (tag.clone(), v)
        })
        .collect();
    json!({
        "dir": l.run.dir,
        "format": l.run.format(),
        "files": l.run.files.iter().map(|(p, f)| json!({"path": p, "format": f})).collect::<Vec<_>>(),
        "tags": tags,
        "writers": l.writers,
        "warnings": l.change.warnings.iter().map(|w| json!({"file": w.file, "at": w.at, "message": w.msg})).collect::<Vec<_>>(),
    })
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Prints the external runs: a table, then each warning on stderr.
pub fn print(listed: &[Listed]) {
    let mut t =
        super::output::table(&["id", "format", "status", "tags", "points", "step", "train loss", "writer"]);
    for l in listed {
        let i = &l.change.info;
        let points: usize = l.run.tags.values().map(|s| s.points.len()).sum();
        t.add_row(vec![
            i.id.to_string(),
            l.run.format(),
            i.status.to_string(),
            l.run.tags.len().to_string(),
            points.to_string(),
            i.step.to_string(),
            i.train_loss.map_or("-".into(), |v| format!("{v:.4}")),
            l.writers.first().map_or("-".into(), |p| p.to_string()),
        ]);
    }
    super::output::right(&mut t, 3);
    println!("{t}");
    for l in listed {
        for w in &l.change.warnings {
            eprintln!("warning: {w}");
        }
    }
}

/// `vigil runs` with `--watch`: the store's runs, then the external ones.
pub fn runs(store: &crate::store::RunStore, json: bool, dirs: &[PathBuf], points: bool) -> Result<()> {
    crate::sweep::jobs::JobFollower::new().refresh(store);
    let own = super::output::with_jobs(store, store.list());
    let listed = read_all(dirs);
    if json {
        let mut rows: Vec<serde_json::Value> =
            own.iter().map(|(r, job)| super::output::run_json(r, job.as_ref())).collect();
        for l in &listed {
            let mut v = super::output::run_json(&l.change.info, None);
            v["external"] = external_json(l, points);
            rows.push(v);
        }
        println!("{}", serde_json::to_string_pretty(&rows).expect("serialises"));
        return Ok(());
    }
    if !own.is_empty() {
        super::output::print_runs(&own);
    }
    if listed.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        println!("no TensorBoard event files, CSV or JSON-lines metric logs under {}", shown.join(", "));
    } else {
        print(&listed);
    }
    Ok(())
}

/// `vigil bench --events FILE`: reads the file `repeats` times and prints the median time, the
/// rate and what was read.
pub fn bench_events(path: &std::path::Path, repeats: usize, json: bool) -> Result<()> {
    let size = std::fs::metadata(path).map_err(|e| crate::error::Error::io(path, e))?.len();
    let mut times = Vec::new();
    let mut counts = (0usize, 0usize, 0usize);
    for _ in 0..repeats {
        let t = std::time::Instant::now();
        let (scalars, warnings) =
            crate::external::event::read_file(path).map_err(|e| crate::error::Error::io(path, e))?;
        times.push(t.elapsed().as_secs_f64());
        counts = (scalars.len(), scalars.values().map(Vec::len).sum(), warnings.len());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mb = size as f64 / 1e6;
    if json {
        let v = json!({
            "file": path, "bytes": size, "repeats": repeats, "median_s": median,
            "min_s": times[0], "max_s": times[times.len() - 1], "mb_per_s": mb / median,
            "tags": counts.0, "scalars": counts.1, "warnings": counts.2,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    } else {
        println!(
            "{}: {mb:.1} MB, {} scalars in {} tags, {} warnings: median {median:.3} s over {repeats} reads ({:.0} MB/s)",
            path.display(),
            counts.1,
            counts.0,
            counts.2,
            mb / median
        );
    }
    Ok(())
}
