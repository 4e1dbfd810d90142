//! External runs (`vigil --watch`): the fixtures written by PyTorch's SummaryWriter,
//! tensorboardX, TensorFlow's scalar encoding, a Lightning-style CSV and JSON lines
//! (tests/fixtures/external/make_fixtures.py) read back scalar for scalar; a run followed while
//! its writer appends; each kind of bad input named by file and position in the run's log, the
//! rest of the run still shown; the console's keys refusing to change an external run.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use vigil::engine::follow::StoreFollower;
use vigil::external::event::{scalar_record, version_record};
use vigil::external::watch::Watcher;
use vigil::store::{EventKind, RunStore};
use vigil::tui::app::{App, Msg, View};
use vigil::tui::keymap::{Action, Keymap};
use vigil::tui::state::chart::series_for;
use vigil::tui::theme::ColorDepth;

const FIXTURES: &str = "tests/fixtures/external";

fn app() -> App {
    App::new(common::theme(ColorDepth::TrueColor), Keymap::defaults(), vec![])
}

/// A follower of an empty store watching `dirs`.
fn follower(store: &Path, dirs: &[PathBuf]) -> StoreFollower {
    StoreFollower::new(RunStore::new(store)).with_watcher(Watcher::new(dirs.to_vec()))
}

/// Polls the follower into the app once.
fn poll(f: &mut StoreFollower, app: &mut App) {
    for u in f.poll() {
        app.update(Msg::Store(u));
    }
}

/// Makes a file look untouched for ten minutes: its writer is gone.
fn age(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(600);
    std::fs::File::options().append(true).open(path).unwrap().set_modified(old).unwrap();
}

/// The warnings in a run's log.
fn warnings(app: &App, id: &str) -> Vec<String> {
    app.runs[id].events.iter().filter(|e| e.kind == EventKind::Warning).map(|e| e.message.clone()).collect()
}

#[test]
fn every_scalar_the_real_writers_wrote_is_read_back() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/expected.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut f = follower(tmp.path(), &[PathBuf::from(format!("{FIXTURES}/logs"))]);
    let mut app = app();
    poll(&mut f, &mut app);
    let runs = expected.as_object().unwrap();
    assert_eq!(runs.len(), 5);
    for (run, tags) in runs {
        let id = format!("ext:logs/{run}");
        let r = app.runs.get(id.as_str()).unwrap_or_else(|| panic!("{id} not found"));
        let x = r.external.as_ref().unwrap();
        let tags = tags.as_object().unwrap();
        let mut got: Vec<&String> = x.tags.keys().collect();
        got.sort();
        let mut want: Vec<&String> = tags.keys().collect();
        want.sort();
        assert_eq!(got, want, "{id}: the scalar tags (histograms and text are not scalars)");
        for (tag, points) in tags {
            let points = points.as_array().unwrap();
            let read = &x.tags[tag].points;
            assert_eq!(read.len(), points.len(), "{id} {tag}");
            for (p, w) in read.iter().zip(points) {
                assert_eq!(p.step, w[0].as_i64().unwrap(), "{id} {tag}");
                match w[1].as_f64() {
                    Some(wall) => assert_eq!(p.wall, wall, "{id} {tag} step {}", p.step),
                    None => assert!(p.wall.is_nan(), "{id} {tag}: the CSV has no time column"),
                }
                // The JSON holds each value as the file holds it (float32 in event files); one
                // ulp of slack, as serde_json's float parsing is not always correctly rounded.
                let want = w[2].as_f64().unwrap();
                assert!(
                    (p.value - want).abs() <= f64::EPSILON * want.abs(),
                    "{id} {tag} step {}: {} vs {want}",
                    p.step,
                    p.value
                );
            }
        }
        assert!(warnings(&app, &id).is_empty(), "{id}: {:?}", warnings(&app, &id));
    }
    // The tables' headline numbers come from the tags.
    let torch = &app.runs["ext:logs/torch"];
    assert_eq!(torch.info.step, 39);
    assert_eq!(torch.info.spec, "tensorboard");
    assert_eq!(torch.info.best_val_accuracy.map(|v| v as f32), Some(0.89));
}

#[test]
fn a_followed_run_grows_on_the_chart_as_its_writer_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let run = logs.join("exp1");
    std::fs::create_dir_all(&run).unwrap();
    let path = run.join("events.out.tfevents.1700000000.host");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&version_record(1.7e9)).unwrap();
    for step in 0..5 {
        file.write_all(&scalar_record("train/loss", step, 1.7e9 + step as f64, 1.0 / (1.0 + step as f32)))
            .unwrap();
    }
    file.flush().unwrap();
    let mut f = follower(&tmp.path().join("runs"), &[logs]);
    let mut app = app();
    poll(&mut f, &mut app);
    let id = "ext:logs/exp1";
    let shown = |app: &App| series_for(&app.runs[id], &app.chart).first().map_or(0, |s| s.points.len());
    assert_eq!(shown(&app), 5, "the loss chart shows the train/loss tag");
    assert!(app.runs[id].is_active(), "a file just written is a live run");
    // The writer goes on, one record split over two writes as a flush can leave it.
    for step in 5..8 {
        let rec = scalar_record("train/loss", step, 1.7e9 + step as f64, 0.1);
        let (a, b) = rec.split_at(7);
        file.write_all(a).unwrap();
        file.flush().unwrap();
        poll(&mut f, &mut app);
        assert_eq!(shown(&app), step as usize, "a torn record is not read yet");
        file.write_all(b).unwrap();
        file.flush().unwrap();
        poll(&mut f, &mut app);
        assert_eq!(shown(&app), step as usize + 1);
    }
    assert!(warnings(&app, id).is_empty(), "{:?}", warnings(&app, id));
}

/// One run folder with one bad log beside a good one; returns the app after a poll.
fn with_bad(name: &str, bad: &[u8], good: bool) -> (tempfile::TempDir, App) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("logs/run");
    std::fs::create_dir_all(&run).unwrap();
    if good {
        let mut bytes = version_record(1.7e9);
        for step in 0..3 {
            bytes.extend(scalar_record("acc", step, 1.7e9, 0.5));
        }
        let p = run.join("events.out.tfevents.1.good");
        std::fs::write(&p, bytes).unwrap();
        age(&p);
    }
    let p = run.join(name);
    std::fs::write(&p, bad).unwrap();
    age(&p);
    let mut f = follower(&tmp.path().join("runs"), &[tmp.path().join("logs")]);
    let mut app = app();
    poll(&mut f, &mut app);
    (tmp, app)
}

fn loss_records(n: i64) -> Vec<u8> {
    let mut bytes = version_record(1.7e9);
    for step in 0..n {
        bytes.extend(scalar_record("loss", step, 1.7e9 + step as f64, 1.0));
    }
    bytes
}

#[test]
fn a_truncated_event_file_is_read_to_its_last_whole_record_and_said() {
    let mut bytes = loss_records(4);
    let whole = bytes.len();
    bytes.extend(&scalar_record("loss", 4, 1.7e9, 1.0)[..9]);
    let (_t, app) = with_bad("events.out.tfevents.2.cut", &bytes, true);
    let r = &app.runs["ext:logs/run"];
    assert_eq!(r.external.as_ref().unwrap().tags["loss"].points.len(), 4);
    assert_eq!(r.external.as_ref().unwrap().tags["acc"].points.len(), 3, "the other file is shown");
    let w = warnings(&app, "ext:logs/run");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("events.out.tfevents.2.cut") && w[0].contains(&format!("offset {whole}")),
        "{}",
        w[0]
    );
    assert!(w[0].contains("partial record"), "{}", w[0]);
    assert!(!r.is_active(), "no writer and old files: finished");
}

#[test]
fn a_record_with_a_bad_crc_is_skipped_with_its_file_and_offset() {
    let mut bytes = loss_records(2);
    let at = bytes.len();
    let mut bad = scalar_record("loss", 2, 1.7e9, 1.0);
    let n = bad.len();
    bad[n - 5] ^= 0x55;
    bytes.extend(bad);
    bytes.extend(scalar_record("loss", 3, 1.7e9, 1.0));
    let (_t, app) = with_bad("events.out.tfevents.3.crc", &bytes, true);
    let r = &app.runs["ext:logs/run"];
    let steps: Vec<i64> = r.external.as_ref().unwrap().tags["loss"].points.iter().map(|p| p.step).collect();
    assert_eq!(steps, vec![0, 1, 3], "the records after the bad one are read");
    let w = warnings(&app, "ext:logs/run");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("events.out.tfevents.3.crc") && w[0].contains(&format!("offset {at}")), "{}", w[0]);
    assert!(w[0].contains("CRC"), "{}", w[0]);
}

#[test]
fn a_file_named_like_an_event_file_that_is_not_one_is_said_and_the_run_still_shown() {
    let text = b"this is a text file that someone named events.out.tfevents.x\n".repeat(20);
    let (_t, app) = with_bad("events.out.tfevents.4.text", &text, true);
    let r = &app.runs["ext:logs/run"];
    assert_eq!(r.external.as_ref().unwrap().tags["acc"].points.len(), 3);
    let w = warnings(&app, "ext:logs/run");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("events.out.tfevents.4.text") && w[0].contains("offset 0"), "{}", w[0]);
    assert!(w[0].contains("not an event file"), "{}", w[0]);
}

#[test]
fn a_ragged_csv_row_is_named_by_its_line_and_the_other_rows_are_read() {
    let csv = b"step,loss,acc\n1,0.9,0.1\n2,0.8\n3,0.7,0.3\n";
    let (_t, app) = with_bad("metrics.csv", csv, false);
    let r = &app.runs["ext:logs/run"];
    let x = r.external.as_ref().unwrap();
    assert_eq!(x.tags["loss"].points.iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 3]);
    let w = warnings(&app, "ext:logs/run");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("metrics.csv: line 3: 2 cells where the header has 3"), "{}", w[0]);
}

#[test]
fn a_json_line_that_does_not_parse_is_named_by_its_line_and_the_others_are_read() {
    let jsonl = b"{\"step\": 1, \"loss\": 0.5}\n{\"step\": 2, \"loss\": \n{\"step\": 3, \"loss\": 0.3}\n";
    let (_t, app) = with_bad("train.jsonl", jsonl, false);
    let r = &app.runs["ext:logs/run"];
    let x = r.external.as_ref().unwrap();
    assert_eq!(x.tags["loss"].points.iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 3]);
    let w = warnings(&app, "ext:logs/run");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("train.jsonl: line 2: not JSON"), "{}", w[0]);
}

#[test]
fn keys_that_would_change_an_external_run_say_it_is_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = follower(tmp.path(), &[PathBuf::from(format!("{FIXTURES}/logs"))]);
    let mut app = app();
    poll(&mut f, &mut app);
    app.show(View::Runs);
    for action in
        [Action::StopRun, Action::DeleteRun, Action::PauseResume, Action::Evaluate, Action::CloneRun]
    {
        app.status = None;
        let effects = app.act(action);
        assert!(effects.is_empty(), "{action:?} asks for nothing");
        assert_eq!(app.mode, vigil::tui::app::Mode::Normal, "{action:?} opens no confirmation");
        let said = app.status.as_ref().map(|s| s.text.clone()).unwrap_or_default();
        assert!(said.contains("is an external run, read-only"), "{action:?}: {said}");
    }
}

#[test]
fn the_metric_key_cycles_through_an_external_runs_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = follower(tmp.path(), &[PathBuf::from(format!("{FIXTURES}/logs/torch"))]);
    let mut app = app();
    poll(&mut f, &mut app);
    app.show(View::Detail);
    let mut seen = vec![app.chart.label()];
    for _ in 0..6 {
        app.act(Action::NextMetric);
        seen.push(app.chart.label());
    }
    assert_eq!(
        seen,
        ["loss", "accuracy", "learning rate", "train/loss", "train/lr", "val/acc", "loss"].map(String::from)
    );
    // Each shows that tag's curve.
    app.act(Action::NextMetric);
    app.act(Action::NextMetric);
    app.act(Action::NextMetric);
    let s = series_for(&app.runs["ext:torch"], &app.chart);
    assert_eq!((s.len(), s[0].name.as_ref(), s[0].points.len()), (1, "train/loss", 40));
}

#[test]
fn vigil_runs_watch_lists_the_external_runs_as_json_and_refuses_a_missing_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let v = common::cli::json(common::cli::vigil(tmp.path()).args([
        "runs",
        "--watch",
        &format!("{FIXTURES}/logs"),
        "--json",
        "--points",
    ]));
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let torch = rows.iter().find(|r| r["id"] == "ext:logs/torch").unwrap();
    assert_eq!(torch["external"]["tags"]["train/loss"]["points"], 40);
    assert_eq!(torch["external"]["tags"]["train/loss"]["values"][0][0], 0);
    common::cli::vigil(tmp.path())
        .args(["runs", "--watch", "no/such/dir"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--watch no/such/dir: not a directory"));
}

#[test]
#[cfg(target_os = "linux")]
fn the_process_writing_a_run_is_found_and_shown_in_the_system_view_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("logs/exp");
    std::fs::create_dir_all(&run).unwrap();
    let path = run.join("events.out.tfevents.1.host");
    std::fs::write(&path, loss_records(3)).unwrap();
    // A writer that holds the event file open, as SummaryWriter does.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .stdin(std::fs::File::open(&path).unwrap())
        .spawn()
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(vigil::external::watch::Writers::new());
    let mut f = StoreFollower::new(RunStore::new(tmp.path().join("runs")))
        .with_watcher(Watcher::new(vec![tmp.path().join("logs")]).with_writers(tx));
    let mut app = app();
    poll(&mut f, &mut app);
    let store = RunStore::new(tmp.path().join("runs"));
    let mut sampler = vigil::engine::system::Sampler::with_gpus(Some(store), None, None).with_writers(rx);
    let sample = sampler.sample();
    let pid = child.id();
    assert!(app.runs["ext:logs/exp"].is_active());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(app.runs["ext:logs/exp"].info.pid, Some(pid));
    let p = sample.processes.iter().find(|p| p.pid == pid).expect("the writer is in the process table");
    assert_eq!(p.runs, vec!["ext:logs/exp".to_string()]);
    // The writer exits: the run is finished at once, though its file is fresh.
    poll(&mut f, &mut app);
    let r = &app.runs["ext:logs/exp"];
    assert!(!r.is_active() && r.info.pid.is_none(), "{:?}", r.info.status);
}
