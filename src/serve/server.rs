//! Starting and stopping the service: loads the runs' models, the keys and the access log, binds
//! the address (refusing a non-loopback one without TLS), serves until told to stop, then stops
//! gracefully: no new connections, in-flight requests finish, budgets are saved and every
//! access-log line is on disk before [`Server::shutdown`] returns.
//!
//! [`Server::start`] runs on the caller's tokio runtime (the console's); [`ServerThread`] brings
//! its own runtime for callers that have none. Neither prints anything: the CLI does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::access_log::{self, LogOptions, LogStats, LogWriter, WriteFault};
use super::auth::Keyring;
use super::edge::{self, Edge, EdgeLimits, EdgeStats};
use super::keys::{KeyStatus, Scope, key_file_path, permission_warning};
use super::limits::UsageFile;
use super::llm::{LlmConfig, LlmService};
use super::metrics::Metrics;
use super::model::{ModelInfo, ServedModel};
use super::router::{AppState, RequestLimits, router};
use crate::error::{Error, Result};
use crate::store::RunStore;

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything `vigil serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The run store (with its sealing key): runs, the key file, the usage file and the access
    /// log live there.
    pub store: RunStore,
    /// Run ids (or unique prefixes/suffixes, or `latest`) to serve.
    pub runs: Vec<String>,
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub limits: RequestLimits,
    /// Size at which the access log is rotated.
    pub log_max_bytes: u64,
    /// Log raw inputs, not only their hashes.
    pub log_raw_inputs: bool,
    /// Keep serving while the access log cannot be written (the outage is logged when it can
    /// again) instead of refusing requests with 503.
    pub log_fail_open: bool,
    /// Makes the access log's writes fail on demand (tests, drills of a full disk).
    pub log_fault: Option<Arc<WriteFault>>,
    /// Connection caps and the header timeout.
    pub edge: EdgeLimits,
    /// How long in-flight requests get to finish at shutdown.
    pub grace: Duration,
    /// Serve only runs whose manifest is signed and whose files match it.
    pub require_signed: bool,
    /// With `require_signed`: the one public key whose signatures are accepted.
    pub trusted_key: Option<ed25519_dalek::VerifyingKey>,
    /// A language model to serve on the OpenAI-compatible routes (`--llm`).
    pub llm: Option<LlmConfig>,
}

impl ServeConfig {
    /// The defaults for a run store and runs: 127.0.0.1:7878, 1 MiB bodies, 256 inputs per
    /// request, a 10 s timeout, 64 MiB log files.
    pub fn new(store: impl Into<RunStore>, runs: Vec<String>) -> Self {
        ServeConfig {
            store: store.into(),
            runs,
            addr: SocketAddr::from(([127, 0, 0, 1], 7878)),
            tls: None,
            limits: RequestLimits::default(),
            log_max_bytes: 64 * 1024 * 1024,
            log_raw_inputs: false,
            log_fail_open: false,
            log_fault: None,
            edge: EdgeLimits::default(),
            grace: Duration::from_secs(10),
            require_signed: false,
            trusted_key: None,
            llm: None,
        }
    }
}

/// What the console's Service view shows about a running service beyond its access log: whether
/// the log can be written, and what was turned away before routing (which no log line shows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Why the access log cannot be written, while it cannot.
    pub log_error: Option<String>,
    /// Whether requests are served anyway meanwhile.
    pub log_fail_open: bool,
    /// Requests refused because the log could not be written, since start.
    pub log_refused: u64,
    /// Requests rejected before routing (400, 414, 431, slow headers, TLS), since start.
    pub rejected: u64,
    /// Connections refused by the caps, since start.
    pub refused_connections: u64,
    /// Connections open now.
    pub connections: u64,
}

/// Things an operator should know at start (printed by the CLI, shown by the console).
pub type Warnings = Vec<String>;

/// A running service.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    models: Vec<ModelInfo>,
    llm: Option<crate::llm::ModelInfo>,
    warnings: Warnings,
    state: Arc<AppState>,
    stop_serving: watch::Sender<bool>,
    serving: JoinHandle<()>,
    stop_background: watch::Sender<bool>,
    background: JoinHandle<()>,
    writer: LogWriter,
    usage_path: PathBuf,
    log_path: PathBuf,
}

/// Installs ring as rustls's crypto provider once per process (the default, aws-lc-rs, is not
/// built in).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads the runs' best checkpoints; two runs under one spec name are refused.
pub fn load_models(store: &RunStore, runs: &[String]) -> Result<Vec<Arc<ServedModel>>> {
    load_models_checked(store, runs, None)
}

/// [`load_models`], and with `signed` set, each run must first pass [`crate::store::sign::verify`]
/// (against the trusted key when one is given): a model whose provenance cannot be shown is not
/// served, and the error names the run and why.
pub fn load_models_checked(
    store: &RunStore,
    runs: &[String],
    signed: Option<Option<&ed25519_dalek::VerifyingKey>>,
) -> Result<Vec<Arc<ServedModel>>> {
    if runs.is_empty() {
        return Err(Error::argument("name at least one run to serve (`vigil runs` lists them)"));
    }
    let mut models: Vec<Arc<ServedModel>> = Vec::new();
    for query in runs {
        // `RUN@VARIANT` serves a variant made by `vigil optimize` (run ids have no `@`).
        let (query, variant) = match query.rsplit_once('@') {
            Some((run, v)) => (run, Some(v)),
            None => (query.as_str(), None),
        };
        let dir = store.resolve(query)?;
        if let Some(trusted) = signed {
            crate::store::sign::verify(&dir, trusted).map_err(|e| {
                Error::refused(format!("refusing to serve run {} (--require-signed): {e}", dir.id))
            })?;
        }
        let model = ServedModel::load_variant(&dir, variant)?;
        if let Some(other) = models.iter().find(|m| m.info.name == model.info.name) {
            return Err(Error::refused(format!(
                "runs {} and {} would both be served as {:?} (models are served under their spec's name); \
                 serve one of them",
                other.info.run, model.info.run, model.info.name
            )));
        }
        models.push(Arc::new(model));
    }
    Ok(models)
}

impl Server {
    /// Starts serving on the current tokio runtime.
    pub async fn start(config: ServeConfig) -> Result<Server> {
        install_crypto();
        if !config.addr.ip().is_loopback() && config.tls.is_none() {
            return Err(Error::refused(format!(
                "refusing to serve on {} without TLS: keys and inputs would cross the network in clear \
                 text. Pass --tls-cert and --tls-key, or bind a loopback address such as 127.0.0.1",
                config.addr
            )));
        }
        let store = &config.store;
        let signed = config.require_signed.then_some(config.trusted_key.as_ref());
        // A language model may be served alone; classifiers need naming otherwise.
        let models = if config.runs.is_empty() && config.llm.is_some() {
            Vec::new()
        } else {
            load_models_checked(store, &config.runs, signed)?
        };
        let mut warnings = Vec::new();

        let metrics = Metrics::new();
        let llm = match &config.llm {
            Some(c) => Some(Arc::new(LlmService::start(c.clone(), &metrics)?)),
            None => None,
        };
        let key_path = key_file_path(store.root());
        let usage_path = UsageFile::path(store.root());
        let usage = UsageFile::load(&usage_path)?;
        let keyring = Keyring::load(&key_path, &usage, None, &metrics, store.key())?;
        if let Some(w) = permission_warning(&key_path) {
            warnings.push(w);
        }
        let now = time::OffsetDateTime::now_utc();
        let usable = keyring
            .callers()
            .iter()
            .filter(|c| c.record.status(now) == KeyStatus::Active && c.has(Scope::Predict))
            .count();
        let generating = keyring
            .callers()
            .iter()
            .filter(|c| c.record.status(now) == KeyStatus::Active && c.has(Scope::Generate))
            .count();
        if llm.is_some() && generating == 0 {
            warnings.push(format!(
                "no active key with the generate scope in {}: every completion will be refused; \
                 `vigil keys create --name NAME --scope generate` makes one",
                key_path.display()
            ));
        }
        if usable == 0 && !models.is_empty() {
            warnings.push(format!(
                "no active key with the predict scope in {}: every prediction will be refused; \
                 `vigil keys create --name NAME --scope predict` makes one",
                key_path.display()
            ));
        }

        let tls_config = match &config.tls {
            Some(files) => Some(RustlsConfig::from_pem_file(&files.cert, &files.key).await.map_err(|e| {
                Error::unsuitable(format!(
                    "cannot use the TLS certificate {} and key {}: {e}",
                    files.cert.display(),
                    files.key.display()
                ))
            })?),
            None => None,
        };
        let listener = std::net::TcpListener::bind(config.addr).map_err(|e| Error::bind(config.addr, e))?;
        let addr = listener.local_addr().map_err(|e| Error::service_failed(format!("cannot listen: {e}")))?;

        let (log, writer) = access_log::start(LogOptions {
            dir: store.root().to_path_buf(),
            max_bytes: config.log_max_bytes,
            raw_inputs: config.log_raw_inputs,
            fail_open: config.log_fail_open,
            fault: config.log_fault.clone(),
        })?;
        let log_path = log.path.clone();
        let infos = models.iter().map(|m| m.info.clone()).collect();
        let llm_info = llm.as_ref().map(|l| l.info.clone());
        let state = Arc::new(
            AppState::new(models, keyring, key_path, store.shared_key(), log, metrics, config.limits)
                .with_llm(llm),
        );
        listener.set_nonblocking(true).map_err(|e| Error::bind(addr, e))?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| Error::bind(addr, e))?;
        let edge = Edge {
            listener,
            app: router(state.clone()),
            tls: tls_config.map(RustlsAcceptor::new),
            limits: config.edge,
            stats: state.metrics.edge.clone(),
            grace: config.grace,
        };
        let (stop_serving, stop_rx) = watch::channel(false);
        let serving = tokio::spawn(edge::serve(edge, stop_rx));
        let (stop_background, stop_rx) = watch::channel(false);
        let background = tokio::spawn(background(state.clone(), usage_path.clone(), stop_rx));
        Ok(Server {
            addr,
            tls: config.tls.is_some(),
            models: infos,
            llm: llm_info,
            warnings,
            state,
            stop_serving,
            serving,
            stop_background,
            background,
            writer,
            usage_path,
            log_path,
        })
    }

    /// The address it listens on (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// The models served.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// The language model served, when there is one.
    pub fn llm(&self) -> Option<&crate::llm::ModelInfo> {
        self.llm.as_ref()
    }

    /// Things the operator should know.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The access log being written.
    pub fn access_log(&self) -> &std::path::Path {
        &self.log_path
    }

    /// The access log's counters (lines handed over and written).
    pub fn log_stats(&self) -> Arc<LogStats> {
        self.state.log.stats.clone()
    }

    /// What the edge turned away and how many connections are open.
    pub fn edge_stats(&self) -> Arc<EdgeStats> {
        self.state.metrics.edge.clone()
    }

    /// The service's health as the console shows it.
    pub fn health(&self) -> Health {
        let log = &self.state.log.stats;
        let edge = &self.state.metrics.edge;
        Health {
            log_error: if log.writable() { None } else { Some(log.error().unwrap_or_default()) },
            log_fail_open: self.state.log.fail_open,
            log_refused: log.refused.load(std::sync::atomic::Ordering::Relaxed),
            rejected: edge.rejected_requests(),
            refused_connections: edge.refused_connections(),
            connections: edge.open() as u64,
        }
    }

    /// Whether the server is still accepting connections.
    pub fn is_running(&self) -> bool {
        !self.serving.is_finished()
    }

    /// Stops gracefully: no new connections, in-flight requests get the grace period, budgets
    /// are saved and every access-log line is written before this returns.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop_serving.send(true);
        let served = self.serving.await;
        let _ = self.stop_background.send(true);
        let _ = self.background.await;
        let usage = self.state.keyring().usage();
        let saved = usage.save(&self.usage_path);
        // The last handle on the log's sender goes with the state; the writer then drains the
        // queue and stops.
        drop(self.state);
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        saved?;
        served.map_err(|e| Error::service_failed(format!("the server task failed: {e}")))
    }
}

/// Four times a second: reloads the key file when `vigil keys` changed it (so a revoked key
/// stops working without a restart, within a quarter of a second) and saves budget counts when
/// they changed. A look at an unchanged key file is one `stat`.
async fn background(state: Arc<AppState>, usage_path: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut last_usage = state.keyring().usage();
    let mut saved_at = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        state.reload_keys_if_changed(Duration::ZERO);
        // Budget counts are saved (with an fsync) at most once a second, and at shutdown.
        if saved_at.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let usage = state.keyring().usage();
        if usage != last_usage {
            saved_at = std::time::Instant::now();
            match usage.save(&usage_path) {
                Ok(()) => last_usage = usage,
                Err(e) => eprintln!("keys: cannot save budget counts: {e}"),
            }
        }
    }
}

/// A service on its own runtime thread, for callers without a tokio runtime.
pub struct ServerThread {
    runtime: tokio::runtime::Runtime,
    server: Server,
}

impl ServerThread {
    /// Starts a service with its own multi-threaded runtime.
    pub fn spawn(config: ServeConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("vigil-serve")
            .build()
            .map_err(|e| Error::startup("the server's runtime", e))?;
        let server = runtime.block_on(Server::start(config))?;
        Ok(ServerThread { runtime, server })
    }

    /// The running server (address, models, warnings).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Stops gracefully (see [`Server::shutdown`]) and ends the runtime.
    pub fn shutdown(self) -> Result<()> {
        let ServerThread { runtime, server } = self;
        let result = runtime.block_on(server.shutdown());
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

/// Makes sure `RAYON_NUM_THREADS` is set, re-executing the process once with it set if not.
///
/// candle asks how many threads to use on every matrix product, and when the variable is unset
/// it works that out by parsing `/proc/cpuinfo` each time (`candle_core::utils::get_num_threads`
/// calls `num_cpus::get_physical`). For a single-input prediction that costs more than the
/// prediction itself: profiles of `vigil serve` showed a quarter of the CPU in the kernel's
/// `show_cpuinfo`, and setting the variable took throughput from 4,000 to 15,000 requests/s.
/// Setting an environment variable inside a running process needs `unsafe` (forbidden in this
/// crate), so the process replaces itself (same pid, same arguments) with the variable set to the
/// number of CPUs it may use. Call it first thing, before any thread starts. Returns when the
/// variable is set, or after warning when the re-exec failed (everything still works, slower).
pub fn ensure_thread_count_env() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        let err = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env("RAYON_NUM_THREADS", n.to_string())
            .exec();
        eprintln!(
            "warning: could not restart with RAYON_NUM_THREADS set ({err}); predictions will be slower"
        );
    }
}
