//! The model service as the console sees and drives it.
//!
//! Two pieces, both free of UI code:
//! - [`spawn_log`] runs on a thread of its own and follows the store's access log with
//!   [`LogFollower`], folding the new lines into [`ServiceStats`]; it emits a [`ServiceFeed`]
//!   (the new lines and the numbers over the last minute) whenever lines arrive, and once a
//!   second otherwise so that rates decay when traffic stops. The log is the only input, so a
//!   service started by `vigil serve` in another process shows just like one started here.
//! - [`spawn`] starts an async task that owns the [`Server`] the console started (`s` on a run):
//!   it takes [`ServiceCommand`]s and reports [`ServiceEvent`]s. Dropping its command sender
//!   stops the server gracefully, so quitting the console never leaves a port bound.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TryRecvError;

use super::{Commands, Handle, Join, Sink};

use crate::serve::access_log::AccessRecord;
use crate::serve::monitor::{LogFollower, ServiceStats, Snapshot, key_budgets};
use crate::serve::server::Health;
use crate::serve::{ServeConfig, Server};
use crate::store::{RunId, RunStore};

/// The statistics window, as the service issue asks: the last minute.
pub const WINDOW_S: u64 = 60;
/// Lines of the log read back when the console starts, so the view is not empty.
const BACKLOG_BYTES: u64 = 256 * 1024;

/// What the follower found since its last feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceFeed {
    /// Lines appended to the access log, oldest first.
    pub records: Vec<AccessRecord>,
    pub snapshot: Snapshot,
}

/// What the console asks of its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceCommand {
    /// Serve this run (stopping the one served before, if any).
    Start(RunId),
    Stop,
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    Started {
        url: String,
        run: RunId,
        /// Model names served, with the version.
        models: Vec<String>,
        warnings: Vec<String>,
    },
    Stopped,
    Failed(String),
    /// Once a second while serving: the log's state and what the edge turned away, which the
    /// access log cannot show.
    Health(Health),
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// What the access-log follower needs.
pub struct LogDeps {
    /// The run store (with its sealing key, for a sealed key file).
    pub store: RunStore,
    pub poll: Duration,
}

/// Starts the access-log follower on a thread of its own (file reads). It stops when the sink
/// or the command channel closes.
pub fn spawn_log(deps: LogDeps, sink: impl Sink<ServiceFeed>) -> crate::error::Result<Handle<()>> {
    let (commands, stop) = super::channel::<()>();
    let join = super::thread("vigil-service-log", "the access-log follower", move || {
        follow(deps.store, deps.poll, stop, sink)
    })?;
    Ok(Handle { commands, join })
}

/// What the service control needs.
pub struct ServiceDeps {
    /// The run store the service serves from, with its sealing key.
    pub store: RunStore,
    /// Log raw inputs too (the operator's choice at start, as `vigil serve --log-raw-inputs`).
    pub log_raw_inputs: bool,
}

/// Starts the service control on the current runtime: it owns the server the console starts and
/// stops it when the command sender is dropped.
pub fn spawn(
    deps: ServiceDeps,
    sink: impl Sink<ServiceEvent>,
) -> crate::error::Result<Handle<ServiceCommand>> {
    let (commands, rx) = super::channel();
    let task = tokio::spawn(control(deps.store, deps.log_raw_inputs, rx, sink));
    Ok(Handle { commands, join: Join::Task(task) })
}

/// Follows the store's access log until `send` returns false (the console is gone) or `stop`
/// closes.
fn follow(store: RunStore, poll: Duration, mut stop: Commands<()>, send: impl Fn(ServiceFeed) -> bool) {
    let mut follower = LogFollower::tail(store.root(), BACKLOG_BYTES);
    let mut stats = ServiceStats::new(WINDOW_S);
    if let Ok(b) = key_budgets(&store, now_s().max(0) as u64) {
        stats.seed_budgets(b);
    }
    let mut last_sent = Instant::now() - Duration::from_secs(1);
    loop {
        // A read error (the log rotated under us, a torn line) is retried on the next poll.
        let records = follower.poll().unwrap_or_default();
        if !records.is_empty() || last_sent.elapsed() >= Duration::from_secs(1) {
            stats.extend(records.iter().cloned());
            if !send(ServiceFeed { records, snapshot: stats.snapshot(now_s()) }) {
                return;
            }
            last_sent = Instant::now();
        }
        std::thread::sleep(poll);
        if matches!(stop.try_recv(), Err(TryRecvError::Disconnected)) {
            return;
        }
    }
}

/// Owns the service the console started; ends (stopping it) when the command channel closes.
/// `log_raw_inputs` makes it log raw inputs too (the operator's choice at start, as with
/// `vigil serve --log-raw-inputs`), so that the Explain view can explain its requests.
async fn control(
    store: RunStore,
    log_raw_inputs: bool,
    mut commands: Commands<ServiceCommand>,
    emit: impl Fn(ServiceEvent) -> bool,
) {
    let mut server: Option<Server> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_health = None;
    loop {
        let cmd = tokio::select! {
            cmd = commands.recv() => cmd,
            _ = tick.tick() => {
                let health = server.as_ref().map(Server::health);
                if health.is_some() && health != last_health && !emit(ServiceEvent::Health(health.clone().unwrap_or_default())) {
                    break;
                }
                last_health = health;
                continue;
            }
        };
        let Some(cmd) = cmd else { break };
        if let Some(s) = server.take() {
            let _ = s.shutdown().await;
            if cmd == ServiceCommand::Stop && !emit(ServiceEvent::Stopped) {
                return;
            }
        }
        if let ServiceCommand::Start(run) = cmd {
            let config =
                ServeConfig { log_raw_inputs, ..ServeConfig::new(store.clone(), vec![run.to_string()]) };
            match Server::start(config).await {
                Ok(s) => {
                    let event = ServiceEvent::Started {
                        url: s.url(),
                        run,
                        models: s.models().iter().map(|m| format!("{} {}", m.name, m.version)).collect(),
                        warnings: s.warnings().to_vec(),
                    };
                    server = Some(s);
                    if !emit(event) {
                        break;
                    }
                }
                Err(e) => {
                    if !emit(ServiceEvent::Failed(e.to_string())) {
                        break;
                    }
                }
            }
        }
    }
    if let Some(s) = server {
        let _ = s.shutdown().await;
    }
}
