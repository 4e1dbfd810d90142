//! The console's Sweeps view: its state (selection, sort by objective and by parameter, the
//! stop and compare keys) fed with fixture sweeps, and snapshots at 80x24 and 160x48, in colour
//! and under NO_COLOR.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{app_with, bare_feed, info, render, text};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::json;
use vigil::engine::follow::StoreUpdate;
use vigil::engine::sweeps::SweepFeed;
use vigil::store::{RunId, RunStatus};
use vigil::sweep::file::{Goal, Metric};
use vigil::sweep::{Backend, JobState, SweepState, TrialRecord, TrialStatus};
use vigil::tui::app::{App, Effect, Msg, View};
use vigil::tui::state::sweeps::TrialSort;
use vigil::tui::theme::ColorDepth;

fn trial(
    n: usize,
    status: TrialStatus,
    lr: f64,
    hidden: serde_json::Value,
    obj: Option<f64>,
    epoch: usize,
) -> TrialRecord {
    TrialRecord {
        number: n,
        run: RunId::from(format!("digits-mlp-t{n:05}")),
        params: BTreeMap::from([
            ("model.hidden".to_string(), hidden),
            ("optimizer.lr".to_string(), json!(lr)),
        ]),
        status,
        pid: None,
        job: Some(format!("41_{n}")),
        epoch,
        objective: obj,
        rungs: vec![],
        note: (status == TrialStatus::Pruned)
            .then(|| "pruned at epoch 2: val_accuracy 0.71 is not in the best 1/3 of 4 trials there".into()),
        duration_s: 3.0,
    }
}

/// A Slurm sweep with trials in every state, and a finished local one before it.
fn feeds() -> Vec<SweepFeed> {
    let trials = vec![
        trial(0, TrialStatus::Completed, 0.002, json!([256, 128]), Some(0.9851), 24),
        trial(1, TrialStatus::Pruned, 0.0003, json!([64]), Some(0.7104), 2),
        trial(2, TrialStatus::Running, 0.008, json!([128]), Some(0.9554), 9),
        trial(3, TrialStatus::Failed, 0.025, json!([64]), None, 0),
        trial(4, TrialStatus::Pending, 0.0011, json!([512, 256]), None, 0),
        trial(5, TrialStatus::Cancelled, 0.0051, json!([128]), Some(0.9182), 3),
    ];
    let state = |id: &str, backend, trials: Vec<TrialRecord>, finished| SweepState {
        id: id.into(),
        name: "digits-mlp".into(),
        spec: "digits-mlp".into(),
        created: format!("2026-01-0{}T10:00:00Z", if finished { 1 } else { 2 }),
        updated: "2026-01-02T10:05:00Z".into(),
        backend,
        method: "random".into(),
        metric: Metric::ValAccuracy,
        goal: Goal::Max,
        budget: 8,
        jobs: 2,
        parameters: vec!["model.hidden".into(), "optimizer.lr".into()],
        driver_pid: None,
        finished,
        trials,
    };
    let mut jobs = BTreeMap::new();
    let job = |n: usize, s: &str, reason: Option<&str>, node: Option<&str>| JobState {
        job: format!("41_{n}"),
        state: s.into(),
        reason: reason.map(String::from),
        node: node.map(String::from),
        updated: "2026-01-02T10:05:00Z".into(),
    };
    jobs.insert(RunId::from("digits-mlp-t00002"), job(2, "RUNNING", None, Some("gpu-node-07")));
    jobs.insert(RunId::from("digits-mlp-t00004"), job(4, "PENDING", Some("Resources"), None));
    jobs.insert(RunId::from("digits-mlp-t00003"), job(3, "OUT_OF_MEMORY", None, Some("gpu-node-07")));
    let mut local = trials[..2].to_vec();
    for t in &mut local {
        t.job = None;
    }
    vec![
        SweepFeed { state: state("digits-mlp-aaaaaa", Backend::Local, local, true), jobs: BTreeMap::new() },
        SweepFeed { state: state("digits-mlp-bbbbbb", Backend::Slurm, trials, false), jobs },
    ]
}

fn app(depth: ColorDepth) -> App {
    let mut app = app_with(depth);
    // The trials' runs, so that Compare and Detail find them.
    for n in 0..6 {
        let id = format!("digits-mlp-t{n:05}");
        app.update(Msg::Store(StoreUpdate::Run(Box::new(bare_feed(info(
            &id,
            RunStatus::Completed,
            3,
            3,
            90,
        ))))));
    }
    app.update(Msg::Sweeps(feeds()));
    app
}

fn press(app: &mut App, c: char) -> Vec<Effect> {
    app.update(Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)))
}

#[test]
fn key_0_opens_sweeps_on_the_newest_and_sorts_by_objective_then_each_parameter() {
    let mut app = app(ColorDepth::TrueColor);
    press(&mut app, '0');
    assert_eq!(app.view, View::Sweeps);
    let s = &app.sweeps;
    assert_eq!(s.current().unwrap().state.id, "digits-mlp-bbbbbb", "the newest sweep is selected");
    let order: Vec<usize> = s.rows().iter().map(|t| t.number).collect();
    assert_eq!(order, vec![0, 2, 5, 1, 3, 4], "best first, trials without a value last");
    press(&mut app, 'o');
    assert_eq!(app.sweeps.sort, TrialSort::Number);
    press(&mut app, 'o');
    assert_eq!(app.sweeps.sort, TrialSort::Param(0));
    press(&mut app, 'o');
    assert_eq!(app.sweeps.sort, TrialSort::Param(1));
    let by_lr: Vec<usize> = app.sweeps.rows().iter().map(|t| t.number).collect();
    assert_eq!(by_lr, vec![1, 4, 0, 5, 2, 3], "by learning rate, as numbers");
    press(&mut app, 'O');
    assert_eq!(app.sweeps.rows()[0].number, 3);
    press(&mut app, 'o');
    assert_eq!(app.sweeps.sort, TrialSort::Objective, "the sort cycles back");
    // ← selects the other sweep and keeps it while the follower reports again.
    app.update(Msg::Key(KeyEvent::new(KeyCode::Left, KeyModifiers::NONE)));
    assert_eq!(app.sweeps.current().unwrap().state.id, "digits-mlp-aaaaaa");
    app.update(Msg::Sweeps(feeds()));
    assert_eq!(app.sweeps.current().unwrap().state.id, "digits-mlp-aaaaaa");
}

#[test]
fn stop_asks_the_event_loop_for_an_active_trial_only_and_4_compares_the_trials() {
    let mut app = app(ColorDepth::TrueColor);
    press(&mut app, '0');
    // Row 1 by objective is trial 2, running on Slurm.
    press(&mut app, 'j');
    let effects = press(&mut app, 'x');
    assert_eq!(effects, vec![Effect::StopTrial(RunId::from("digits-mlp-t00002"))]);
    press(&mut app, 'g');
    assert!(press(&mut app, 'x').is_empty(), "a completed trial is not stopped again");
    assert!(app.status.as_ref().unwrap().text.contains("already ended"));
    press(&mut app, '4');
    assert_eq!(app.view, View::Compare);
    let want: BTreeSet<RunId> = (0..6).map(|n| RunId::from(format!("digits-mlp-t{n:05}"))).collect();
    assert_eq!(app.marked, want, "the sweep's trials are overlaid");
    // Enter on a trial opens its run's detail.
    press(&mut app, '0');
    app.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    assert_eq!(app.view, View::Detail);
    assert_eq!(app.selected_id().unwrap(), RunId::from("digits-mlp-t00000"));
}

#[test]
fn sweeps_view_snapshots() {
    for (depth, suffix) in [(ColorDepth::TrueColor, ""), (ColorDepth::None, "_no_color")] {
        for (w, h) in [(80, 24), (160, 48)] {
            let mut app = app(depth);
            press(&mut app, '0');
            let buf = render(&mut app, w, h);
            let screen = text(&buf);
            // What an operator looks for, whatever the layout: the job states and the best.
            assert!(screen.contains("pending (Resources)"), "{screen}");
            assert!(screen.contains("running on gpu-node-07"), "{screen}");
            assert!(screen.contains("98.51% (trial 0)"), "{screen}");
            insta::assert_snapshot!(format!("sweeps_{w}x{h}{suffix}"), screen);
        }
    }
}

#[test]
fn an_empty_store_says_how_to_start_a_sweep() {
    let mut app = app_with(ColorDepth::TrueColor);
    press(&mut app, '0');
    let screen = text(&render(&mut app, 80, 24));
    assert!(screen.contains("vigil sweep models/digits-mlp.sweep.ron"), "{screen}");
}

/// A run `vigil train --on slurm` submitted, whose job waits: the Runs view says pending and why,
/// the Detail header says it beside the status, and stopping it from the console is scancel
/// (the event loop's StopTrial), not a control file no trainer reads.
#[test]
fn a_waiting_slurm_run_says_why_and_stop_cancels_its_job() {
    let mut app = app_with(ColorDepth::TrueColor);
    let id = RunId::from("digits-mlp-s00001");
    let job = JobState {
        job: "77".into(),
        state: "PENDING".into(),
        reason: Some("BeginTime".into()),
        node: None,
        updated: "2026-01-02T10:05:00Z".into(),
    };
    app.update(Msg::Store(StoreUpdate::Run(Box::new(vigil::engine::follow::RunFeed {
        job: Some(Some(job)),
        ..bare_feed(info(id.as_str(), RunStatus::Queued, 0, 3, 0))
    }))));
    press(&mut app, '2');
    app.cursor = app.visible().iter().position(|r| r.info.id == id).unwrap();
    let screen = text(&render(&mut app, 80, 24));
    let row = screen.lines().find(|l| l.contains("digits-mlp-s00001")).unwrap();
    assert!(row.contains("pending"), "{screen}");
    assert!(screen.contains("Slurm job 77: pending (BeginTime)"), "{screen}");
    app.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)));
    assert_eq!(app.view, View::Detail);
    let screen = text(&render(&mut app, 80, 24));
    assert!(screen.lines().nth(1).unwrap().contains("queued  slurm pending (BeginTime)"), "{screen}");
    press(&mut app, '2');
    assert!(press(&mut app, 'x').is_empty());
    assert_eq!(press(&mut app, 'y'), vec![Effect::StopTrial(id)]);
}
