//! Sweeps on a real Slurm: a one-node cluster on the loopback (munged with a generated key,
//! slurmctld and slurmd as root, every file in a temporary folder, stopped by their pid files),
//! started by [`Cluster::start`]. On it: 8 trials as one array job, which all show in what the
//! console reads soon after their first epoch, one of them cancelled with `scancel` (the
//! console's stop) and one that fails; then a sweep whose driver is killed with SIGKILL and
//! resumed, without losing or repeating a trial; and job states that follow their jobs with no
//! driver (a waiting single run's reason, a killed driver's trial that completes). Without Slurm (or not as root) the test says it
//! was skipped and why.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cli::vigil;
use common::sweep::{assert_each_trial_once, kill_and_resume, state_of};
use vigil::store::RunStore;

/// A running single-node cluster; dropping it stops the daemons.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Why the cluster cannot run here, if it cannot.
    fn unavailable() -> Option<String> {
        for p in ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Some(format!("`{p}` is not installed (apt-get install slurm-wlm munge)"));
            }
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if uid.ok().as_deref() != Some("0") {
            return Some("the loopback cluster runs its daemons as root".into());
        }
        None
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["state", "spool", "log", "munge"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = d.join("munge/munge.key");
        let mut bytes = vec![0u8; 1024];
        getrandom_fill(&mut bytes);
        std::fs::write(&key, &bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        let socket = d.join("munge/munge.sock");
        run(Command::new("munged").args([
            &format!("--key-file={}", key.display()),
            &format!("--socket={}", socket.display()),
            &format!("--pid-file={}", d.join("munge/munged.pid").display()),
            &format!("--log-file={}", d.join("munge/munged.log").display()),
            &format!("--seed-file={}", d.join("munge/seed").display()),
            "--force",
        ]));
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        // Ports from the process id: two test runs at once get two clusters.
        let port = 20000 + (std::process::id() % 20000) as u16 * 2;
        let conf = format!(
            "ClusterName=vigiltest\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={port}\nSlurmdPort={}\n\
             SlurmUser=root\nSlurmdUser=root\nAuthType=auth/munge\nAuthInfo=socket={sock}\nCredType=cred/munge\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\nSlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.pid\nSlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\nJobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\nJobCompType=jobcomp/none\nMpiDefault=none\n\
             ReturnToService=2\nMinJobAge=600\nSchedulerType=sched/backfill\nSchedulerParameters=sched_interval=1\n\
             NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN\n\
             PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
            port + 1,
            sock = socket.display(),
            d = d.display(),
        );
        std::fs::write(d.join("slurm.conf"), conf).unwrap();
        let c = Cluster { dir };
        run(Command::new("slurmctld").arg("-f").arg(c.conf()));
        run(Command::new("slurmd").arg("-f").arg(c.conf()).args(["-N", "localhost"]));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out =
                Command::new("sinfo").env("SLURM_CONF", c.conf()).args(["-h", "-o", "%t"]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "idle" {
                return c;
            }
            assert!(Instant::now() < deadline, "the node never became idle: {}", c.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        ["log/slurmctld.log", "log/slurmd.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `vigil` with this cluster's configuration.
    fn vigil(&self, runs: &Path) -> assert_cmd::Command {
        let mut c = vigil(runs);
        c.env("SLURM_CONF", self.conf());
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pid_file in ["slurmd.pid", "slurmctld.pid", "munge/munged.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(pid_file)) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A driver process killed if the test fails before it ends (it would hold the test's output open).
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A munge key: random bytes from the kernel.
fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(buf).unwrap();
}

fn sweep_file(dir: &Path, name: &str, trials: usize, jobs: usize, array: bool) -> PathBuf {
    let path = dir.join(format!("{name}.sweep.ron"));
    std::fs::write(
        &path,
        format!(
            "(\n    spec: \"digits-mlp\",\n    fixed: {{ \"epochs\": 3, \"early_stopping\": None }},\n    parameters: {{\n        \
             \"optimizer.lr\": LogUniform(low: 0.001, high: 0.01),\n        \"model.hidden\": List([[32], [64]]),\n    }},\n    \
             method: Random(seed: 5),\n    objective: (metric: ValAccuracy),\n    trials: {trials},\n    jobs: {jobs},\n    \
             slurm: (cpus: 1, time: \"00:05:00\", array: {array}),\n)\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn sweeps_on_a_loopback_slurm_cluster() {
    if let Some(why) = Cluster::unavailable() {
        eprintln!("skipped: the Slurm sweep tests need a local Slurm: {why}");
        return;
    }
    let cluster = Cluster::start();
    array_of_eight_with_a_cancelled_and_a_failed_trial(&cluster);
    job_states_follow_their_jobs(&cluster);
    killed_driver_resumes(&cluster);
}

fn array_of_eight_with_a_cancelled_and_a_failed_trial(cluster: &Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let store = RunStore::new(&runs);
    // Two at a time, so that trials 6 and 7 are still pending when the test reaches them.
    let f = sweep_file(dir.path(), "array", 8, 2, true);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("vigil"));
    cmd.env("SLURM_CONF", cluster.conf()).arg("--runs-dir").arg(&runs).args([
        "sweep",
        f.to_str().unwrap(),
        "--on",
        "slurm",
        "--json",
    ]);
    let mut driver = Reaped(Some(cmd.stdout(std::process::Stdio::piped()).spawn().unwrap()));
    // All 8 trials are one array job, planned at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        if let Some(s) =
            state_of(&runs).filter(|s| s["trials"].as_array().unwrap().iter().all(|t| t["job"].is_string()))
            && s["trials"].as_array().unwrap().len() == 8
        {
            break s;
        }
        assert!(Instant::now() < deadline, "the array was never submitted");
        std::thread::sleep(Duration::from_millis(20));
    };
    let trials = state["trials"].as_array().unwrap().clone();
    let array_id = trials[0]["job"].as_str().unwrap().split('_').next().unwrap().to_string();
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["job"].as_str().unwrap(), format!("{array_id}_{i}"), "one array job, a task per trial");
    }
    let run_of = |i: usize| store.dir(trials[i]["run"].as_str().unwrap());
    // Trial 6 will fail: its stored spec is damaged before its task starts. Trial 7 is
    // cancelled from "the console" (the Sweeps view's stop: scancel of its array task).
    std::fs::write(run_of(6).file("spec.ron"), "(name: \"broken\"").unwrap();
    let out = cluster.vigil(&runs).args(["sweep", "--stop", run_of(7).id.as_str()]).assert().success();
    let said = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(said.contains(&format!("scancel {array_id}_7")), "{said}");
    // Each trial shows in what the console reads (the sweep follower's list) soon after its
    // first epoch is written.
    let mut first_epoch: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut shown: BTreeMap<usize, Instant> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while shown.len() < 6 {
        assert!(Instant::now() < deadline, "trials never showed: {shown:?} {}", cluster.logs());
        for i in 0..6 {
            let has_epoch = std::fs::read_to_string(run_of(i).file("metrics.jsonl"))
                .is_ok_and(|m| m.contains("\"kind\":\"epoch\""));
            if has_epoch {
                first_epoch.entry(i).or_insert_with(Instant::now);
            }
        }
        let feeds = vigil::engine::sweeps::read_all(&store);
        for t in &feeds[0].state.trials {
            if t.epoch >= 1 && t.number < 6 {
                shown.entry(t.number).or_insert_with(Instant::now);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let worst = shown.iter().map(|(i, at)| at.saturating_duration_since(first_epoch[i])).max().unwrap();
    eprintln!(
        "slowest trial to show in the console after its first epoch: {:.0} ms",
        worst.as_secs_f64() * 1000.0
    );
    assert!(worst < Duration::from_secs(2), "a trial took {worst:?} to show after its first epoch");
    let out = driver.0.take().unwrap().wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |i: usize| report["trials"][i]["status"].as_str().unwrap().to_string();
    for i in 0..6 {
        assert_eq!(status(i), "completed", "{:#}", report["trials"][i]);
        let job = vigil::sweep::JobState::read(&run_of(i).path).unwrap();
        // The job ran on the node; the driver may finish before squeue says COMPLETED.
        assert_eq!(job.node.as_deref(), Some("localhost"), "{job:?}");
        assert!(["RUNNING", "COMPLETING", "COMPLETED"].contains(&job.state.as_str()), "{job:?}");
    }
    assert_eq!(status(6), "failed", "{:#}", report["trials"][6]);
    assert_eq!(status(7), "cancelled", "{:#}", report["trials"][7]);
    // The runs say so too, for the Runs view: a cancelled job's run is not left queued.
    assert_eq!(run_of(7).info().unwrap().status, vigil::store::RunStatus::Cancelled);
    assert_eq!(run_of(6).info().unwrap().status, vigil::store::RunStatus::Failed);
    assert_eq!(vigil::sweep::JobState::read(&run_of(7).path).unwrap().state, "CANCELLED");
    assert!(report["best"]["objective"].as_f64().unwrap() > 0.5);
    // `vigil train --on slurm` submits one run the same way, and the node trains it.
    let out = cluster
        .vigil(&runs)
        .args(["train", "digits-mlp", "--epochs", "1", "--on", "slurm"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let id = text.lines().find_map(|l| l.strip_prefix("run id: ")).unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.dir(&id).info().unwrap().status != vigil::store::RunStatus::Completed {
        assert!(Instant::now() < deadline, "the submitted run never completed: {}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        vigil::sweep::JobState::read(&store.dir(&id).path).unwrap().node.as_deref(),
        Some("localhost")
    );
    // The node wrote RUNNING and no driver follows this job: `vigil runs` asks Slurm and
    // records that it completed.
    assert_completed_in_runs(cluster, &runs, &id);
}

/// Names the run (`RUNS|ID`) for [`console_follower_on_the_cluster`], which the cluster test
/// runs as a child process so that its Slurm commands see the cluster's `SLURM_CONF`.
const FOLLOWER_RUN: &str = "VIGIL_TEST_FOLLOWER_RUN";

/// The console's followers on a waiting job whose `slurm.json` says nothing of why: the sweep
/// follower's thread asks Slurm and writes the reason, and the store follower's feed carries it
/// to the views. Without [`FOLLOWER_RUN`] (a plain `cargo test`) it has nothing to do.
#[test]
fn console_follower_on_the_cluster() {
    let Ok(named) = std::env::var(FOLLOWER_RUN) else { return };
    let (runs, id) = named.split_once('|').unwrap();
    let store = RunStore::new(runs);
    let path = store.dir(id).path;
    let stale = vigil::sweep::JobState { reason: None, ..vigil::sweep::JobState::read(&path).unwrap() };
    stale.write(&path).unwrap();
    let handle = vigil::engine::sweeps::spawn(
        store.clone(),
        Duration::from_millis(50),
        Duration::from_millis(200),
        |_| true,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while vigil::sweep::JobState::read(&path).unwrap().reason.as_deref() != Some("BeginTime") {
        assert!(Instant::now() < deadline, "the console never refreshed the job's state");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(handle);
    let mut follower = vigil::engine::follow::StoreFollower::new(store.clone());
    let feed = follower
        .poll()
        .into_iter()
        .find_map(|u| match u {
            vigil::engine::follow::StoreUpdate::Run(f) if f.id == id => Some(f),
            _ => None,
        })
        .unwrap();
    let job = feed.job.clone().flatten().expect("the feed carries the job");
    assert_eq!(job.describe(), "pending (BeginTime)");
    // A live job's trainer runs on a node: the run is not taken as interrupted.
    assert!(!feed.interrupted);
    println!("followed: {}", job.describe());
}

/// `vigil runs --json`'s row for one run.
fn run_row(cluster: &Cluster, runs: &Path, id: &str) -> serde_json::Value {
    let all = common::cli::json(cluster.vigil(runs).args(["runs", "--json"]));
    all.as_array().unwrap().iter().find(|r| r["id"] == id).cloned().expect("the run is listed")
}

/// Job states follow their jobs without a sweep's driver: a single `train --on slurm` run that
/// waits shows `pending (BeginTime)` (in `vigil runs`, and through the console's follower), and a
/// trial whose driver was killed while its job ran shows completed once it has.
fn job_states_follow_their_jobs(cluster: &Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let store = RunStore::new(&runs);
    let out = cluster
        .vigil(&runs)
        .args(["train", "digits-mlp", "--epochs", "1", "--on", "slurm", "--sbatch-arg=--begin=now+1hour"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let id = text.lines().find_map(|l| l.strip_prefix("run id: ")).unwrap().to_string();
    let row = run_row(cluster, &runs, &id);
    assert_eq!(row["status"], "queued", "{row:#}");
    assert_eq!(row["slurm"]["state"], "PENDING", "{row:#}");
    assert_eq!(row["slurm"]["reason"], "BeginTime", "{row:#}");
    let table = cluster.vigil(&runs).arg("runs").assert().success();
    let table = String::from_utf8_lossy(&table.get_output().stdout).into_owned();
    assert!(table.contains("slurm pending (BeginTime)"), "{table}");
    // The console: its sweep follower asks Slurm on its own thread and writes slurm.json, and
    // the store follower carries that to the views. Start from a state that says nothing.
    let path = store.dir(&id).path;
    let stale = vigil::sweep::JobState { reason: None, ..vigil::sweep::JobState::read(&path).unwrap() };
    stale.write(&path).unwrap();
    let conf = cluster.conf();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "console_follower_on_the_cluster", "--nocapture"])
        .env("SLURM_CONF", &conf)
        .env(FOLLOWER_RUN, format!("{}|{id}", runs.display()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("1 passed"), "{said}");
    assert!(said.contains("followed:"), "the helper ran: {said}");
    // Stopping it from the console (or `vigil sweep --stop`) cancels the waiting job.
    cluster.vigil(&runs).args(["sweep", "--stop", &id]).assert().success();
    assert_eq!(store.dir(&id).info().unwrap().status, vigil::store::RunStatus::Cancelled);

    // A trial whose driver is killed while its job runs: nobody follows the job, which
    // completes; `vigil runs` then records it as completed, not left RUNNING.
    let f = sweep_file(dir.path(), "orphan", 1, 1, false);
    let mut driver = Reaped(Some(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("vigil"))
            .env("SLURM_CONF", &conf)
            .arg("--runs-dir")
            .arg(&runs)
            .args(["sweep", f.to_str().unwrap(), "--on", "slurm", "-q"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    let trial = loop {
        let run = state_of(&runs).and_then(|s| s["trials"][0]["run"].as_str().map(str::to_string));
        if let Some(run) = run
            && vigil::sweep::JobState::read(&store.dir(&run).path).is_some_and(|j| j.state == "RUNNING")
        {
            break run;
        }
        assert!(Instant::now() < deadline, "the trial's job never ran: {}", cluster.logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut child = driver.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.dir(&trial).info().unwrap().status != vigil::store::RunStatus::Completed {
        assert!(Instant::now() < deadline, "the orphaned trial never completed: {}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_completed_in_runs(cluster, &runs, &trial);
}

/// `vigil runs` says the run's job completed, once Slurm has noticed its process ended (it can
/// say RUNNING or COMPLETING for a moment after the run wrote that it completed).
fn assert_completed_in_runs(cluster: &Cluster, runs: &Path, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = run_row(cluster, runs, id);
        assert_eq!(row["status"], "completed", "{row:#}");
        if row["slurm"]["state"] == "COMPLETED" {
            assert_eq!(row["slurm"]["node"], "localhost", "{row:#}");
            return;
        }
        assert!(Instant::now() < deadline, "the job never read completed: {row:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn killed_driver_resumes(cluster: &Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let f = sweep_file(dir.path(), "resume", 6, 2, false);
    let driver = std::process::Command::new(assert_cmd::cargo::cargo_bin("vigil"))
        .env("SLURM_CONF", cluster.conf())
        .arg("--runs-dir")
        .arg(&runs)
        .args(["sweep", f.to_str().unwrap(), "--on", "slurm", "-q"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once two jobs are out and before the sweep is done.
    let out = kill_and_resume(
        &runs,
        driver,
        |s| {
            let t = s["trials"].as_array().unwrap();
            t.iter().filter(|t| t["job"].is_string()).count() >= 2
                && t.iter().any(|t| t["status"] != "completed")
        },
        cluster.vigil(&runs),
    );
    assert_each_trial_once(&runs, &out, 6);
    assert_eq!(out["backend"], "slurm");
    let jobs: Vec<&str> =
        out["trials"].as_array().unwrap().iter().map(|t| t["job"].as_str().unwrap()).collect();
    let mut unique = jobs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "each trial was submitted once: {jobs:?}");
}
