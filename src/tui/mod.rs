//! The interactive console. [`Engines::start`] starts every engine in one place (the runner
//! training on blocking threads, the store follower and the access-log follower on threads of
//! their own, the system sampler, the explanation engine and the service control), each sending
//! plain messages into one channel; [`run`]'s loop feeds every queued message to
//! [`app::App::update`], carries out the effects ([`carry_out`]), and draws once when something
//! changed, at most 30 times a second. When the terminal goes away (SSH drop, SIGHUP), the loop
//! stops drawing and lets the runs it started finish headless before the process exits.
//! [`Headless`] is the same wiring without a terminal, for tests and scripts.

pub mod app;
pub mod export;
pub mod filter;
pub mod form;
pub mod keymap;
pub mod state;
pub mod theme;
pub mod views;
pub mod widgets;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use self::app::{App, Effect, Level, Msg};
use self::keymap::{Action, Keymap};
use self::theme::{ColorDepth, Theme};
use crate::engine::explain::ExplainCommand;
use crate::engine::runner::{RunnerCommand, RunnerDeps, default_concurrency};
use crate::engine::service::{LogDeps, ServiceCommand, ServiceDeps};
use crate::engine::system::SystemDeps;
use crate::engine::{Handle, Sink, explain, follow, runner, service, system};
use crate::error::{Error, Result};
use crate::ml::spec;
use crate::store::RunStore;
use crate::store::system_log::SystemLog;

/// Lays the machine's history from earlier sessions under the System view's charts.
fn load_system_history(opts: &ConsoleOptions, app: &mut App) {
    let since = system::unix_now() - state::system::PAST_WINDOW_S;
    app.system_points.load(SystemLog::new(opts.store.root()).load(since));
}

/// How the console is started.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// The run store, with the sealing key the command line resolved.
    pub store: RunStore,
    pub models_dir: PathBuf,
    /// Theme name or file.
    pub theme: Option<String>,
    /// Keymap file laid over the defaults.
    pub keymap: Option<PathBuf>,
    /// Runs trained at once.
    pub concurrency: Option<usize>,
    /// Start the default experiment when the store is empty.
    pub start_default: bool,
    /// How often the system is sampled.
    pub sample_every: Duration,
    /// The service started from the console logs raw inputs, not only their hashes.
    pub serve_log_raw_inputs: bool,
    /// Directories whose runs, trained by other programs, are followed too (`--watch`).
    pub watch: Vec<PathBuf>,
    /// A language model to load into the Playground at start (`--llm`).
    pub llm: Option<PathBuf>,
    /// The chat template for `llm` (`--chat-template`), instead of the file's own.
    pub chat_template: Option<String>,
}

/// The shortest time between two frames (30 frames a second at most).
const FRAME: Duration = Duration::from_millis(33);
/// How often the store is looked at.
const POLL: Duration = Duration::from_millis(250);
/// How often the sweeps' state files are read (they change at most once per trial event).
const SWEEPS_POLL: Duration = Duration::from_millis(500);
/// How often the console asks Slurm about runs whose job is not final: squeue is a request to
/// the cluster's controller, which a console left open all day should not flood.
const SLURM_POLL: Duration = Duration::from_secs(5);

/// Opens the console and runs until the user quits (or, without a terminal, until the runs it
/// started have finished).
pub fn run(opts: ConsoleOptions) -> Result<()> {
    // Everything that can fail on bad input fails here, before the terminal is touched.
    let depth = ColorDepth::detect();
    let theme = Theme::find(opts.theme.as_deref().unwrap_or("dark"), depth)?;
    let keymap_path = opts.keymap.clone().or_else(keymap::user_keymap_path);
    let keymap = Keymap::load(keymap_path.as_deref())?;
    let specs: Vec<_> = spec::list(&opts.models_dir).into_iter().filter_map(|e| e.spec.ok()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vigil-console")
        .enable_all()
        .build()
        .map_err(|e| Error::startup("the async runtime", e))?;
    runtime.block_on(console(opts, App::new(theme, keymap, specs)))
}

/// A sink that wraps an engine's events into the console's messages.
fn into_msgs<E: 'static>(tx: &mpsc::UnboundedSender<Msg>, wrap: fn(E) -> Msg) -> impl Sink<E> {
    let tx = tx.clone();
    move |e| tx.send(wrap(e)).is_ok()
}

/// The engines the console runs.
pub struct Engines {
    store: RunStore,
    runner: Handle<RunnerCommand>,
    explain: Handle<ExplainCommand>,
    service: Handle<ServiceCommand>,
    follow: Handle<()>,
    system: Handle<()>,
    service_log: Handle<()>,
    sweeps: Handle<()>,
    llm: Handle<crate::engine::llm::LlmCommand>,
}

impl Engines {
    /// Starts every engine on the current runtime; their events arrive on `msgs`.
    pub fn start(opts: &ConsoleOptions, msgs: &mpsc::UnboundedSender<Msg>) -> Result<Self> {
        let store = opts.store.clone();
        let concurrency = opts.concurrency.unwrap_or_else(default_concurrency);
        // The follower finds the processes writing external runs; the sampler shows them.
        let (writers_tx, writers_rx) = tokio::sync::watch::channel(Default::default());
        let external = !opts.watch.is_empty();
        Ok(Engines {
            runner: runner::spawn(
                RunnerDeps { store: store.clone(), concurrency },
                into_msgs(msgs, Msg::Runner),
            )?,
            follow: follow::spawn(
                follow::FollowDeps {
                    store: store.clone(),
                    poll: POLL,
                    watch: opts.watch.clone(),
                    writers: external.then_some(writers_tx),
                },
                into_msgs(msgs, Msg::Store),
            )?,
            system: system::spawn(
                SystemDeps {
                    period: opts.sample_every,
                    store: Some(store.clone()),
                    writers: external.then_some(writers_rx),
                    history: Some(SystemLog::new(store.root())),
                },
                into_msgs(msgs, Msg::System),
            )?,
            explain: explain::spawn(store.clone(), into_msgs(msgs, Msg::Explain))?,
            service_log: service::spawn_log(
                LogDeps { store: store.clone(), poll: POLL },
                into_msgs(msgs, |f| Msg::ServiceFeed(Box::new(f))),
            )?,
            sweeps: crate::engine::sweeps::spawn(
                store.clone(),
                SWEEPS_POLL,
                SLURM_POLL,
                into_msgs(msgs, Msg::Sweeps),
            )?,
            llm: {
                let llm = crate::engine::llm::spawn(into_msgs(msgs, Msg::Llm))?;
                if let Some(path) = &opts.llm {
                    llm.send(crate::engine::llm::LlmCommand::Load {
                        path: path.clone(),
                        chat_template: opts.chat_template.clone(),
                    });
                }
                llm
            },
            service: service::spawn(
                ServiceDeps { store: store.clone(), log_raw_inputs: opts.serve_log_raw_inputs },
                into_msgs(msgs, Msg::Service),
            )?,
            store,
        })
    }

    /// Starts the default experiment when the store is empty and the options ask for it.
    fn start_default(&self, opts: &ConsoleOptions, app: &mut App) -> Result<()> {
        if opts.start_default && self.store.list().is_empty() {
            let (spec, _) = spec::resolve(spec::DEFAULT_SPEC, &opts.models_dir)?;
            self.runner.send(RunnerCommand::Start(Box::new(spec)));
            app.say(
                Level::Info,
                format!("the store was empty: starting the default experiment {}", spec::DEFAULT_SPEC),
            );
        }
        Ok(())
    }

    /// Stops what the console started: the runs too when `stop_runs` (their checkpoints are
    /// kept), the service it serves (letting requests finish); then waits for the runner, which
    /// ends when every run it started has stopped.
    pub async fn shutdown(self, stop_runs: bool) {
        if stop_runs {
            self.runner.send(RunnerCommand::StopAll);
        }
        // The followers, the sampler and the explanation engine stop when their commands close.
        drop((self.follow, self.system, self.service_log, self.explain, self.sweeps, self.llm));
        self.service.finish().await;
        self.runner.finish().await;
    }
}

/// Carries out one effect of [`App::update`]; `Some(stop_runs)` when it is time to leave.
pub fn carry_out(app: &mut App, engines: &Engines, effect: Effect) -> Option<bool> {
    match effect {
        Effect::Runner(c) => engines.runner.send(c),
        Effect::Explain(c) => engines.explain.send(c),
        Effect::Service(c) => engines.service.send(c),
        Effect::Llm(c) => engines.llm.send(c),
        Effect::ExportCsv => match export::csv(app, engines.store.root()) {
            Ok(p) => app.say(Level::Info, format!("wrote {}", p.display())),
            Err(err) => app.say(Level::Error, err.to_string()),
        },
        Effect::ExportPng => match export::png(app, engines.store.root()) {
            Ok(p) => app.say(Level::Info, format!("wrote {}", p.display())),
            Err(err) => app.say(Level::Error, err.to_string()),
        },
        Effect::LoadTheme(name) => {
            let theme = Theme::find(&name, app.theme.depth).map(Box::new).map_err(|e| e.to_string());
            let more = app.update(Msg::Theme(theme));
            debug_assert!(more.is_empty(), "a theme change asks for nothing");
        }
        Effect::StopTrial(run) => {
            match crate::sweep::driver::stop_trial(&engines.store, &engines.store.dir(&run)) {
                Ok(done) => app.say(Level::Info, done),
                Err(e) => app.say(Level::Error, e.to_string()),
            }
        }
        Effect::SaveNotes(id, notes) => {
            if let Err(err) = notes.save(&engines.store.dir(&id)) {
                app.say(Level::Error, err.to_string());
            }
        }
        Effect::Keys(c) => {
            let e = keys_io(&engines.store, c);
            let more = app.update(Msg::Keys(e));
            debug_assert!(more.is_empty(), "a key file answer asks for nothing");
        }
        Effect::Quit { stop_runs } => return Some(stop_runs),
    }
    None
}

/// Carries out a key-file command with the key store `vigil keys` uses (small files: done in
/// place, as the exports are).
fn keys_io(store: &RunStore, c: state::keys::KeyCommand) -> state::keys::KeysEvent {
    use crate::serve::keys::KeyStore;
    use state::keys::{KeyCommand, KeysEvent};
    let keys = KeyStore::of(store);
    let text = |e: Error| e.to_string();
    match c {
        KeyCommand::List => KeysEvent::Listed(keys.list().map_err(text)),
        KeyCommand::Create(spec) => KeysEvent::Created(keys.create(spec.into_new_key()).map_err(text)),
        KeyCommand::Revoke(name) => KeysEvent::Revoked(keys.revoke(&name).map(|c| (name, c)).map_err(text)),
        KeyCommand::Sample { run, model, url } => KeysEvent::Sample((|| {
            let pipeline = store.dir(&run).pipeline().map_err(text)?;
            let mut sample = state::try_it::sample(&pipeline, &model, &url);
            // Written beside the store so that `curl -d @FILE` reads it.
            let dir = store.root().join("try-it");
            let file = dir.join(format!("{model}.json"));
            std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(&file, &sample.body))
                .map_err(|e| Error::io(&file, e).to_string())?;
            sample.file = Some(file);
            Ok(sample)
        })()),
    }
}

/// The console without a terminal, in the manner of television's `run_headless`: the real
/// engines and effects, driven by [`Msg`]s and [`Action`]s, so that tests can run the whole
/// wiring. Runs on the current tokio runtime.
pub struct Headless {
    pub app: App,
    engines: Engines,
    msgs: mpsc::UnboundedReceiver<Msg>,
    stop_runs: bool,
}

impl Headless {
    /// Starts the engines for `opts` (the default experiment too, if asked for).
    pub fn start(opts: &ConsoleOptions, mut app: App) -> Result<Self> {
        let (tx, msgs) = mpsc::unbounded_channel();
        let engines = Engines::start(opts, &tx)?;
        engines.start_default(opts, &mut app)?;
        load_system_history(opts, &mut app);
        Ok(Headless { app, engines, msgs, stop_runs: false })
    }

    /// Feeds one message to the app and carries out what it asks.
    pub fn update(&mut self, msg: Msg) {
        for e in self.app.update(msg) {
            if let Some(stop) = carry_out(&mut self.app, &self.engines, e) {
                self.stop_runs = stop;
            }
        }
    }

    /// Carries out an action as its key would.
    pub fn act(&mut self, action: Action) {
        for e in self.app.act(action) {
            if let Some(stop) = carry_out(&mut self.app, &self.engines, e) {
                self.stop_runs = stop;
            }
        }
    }

    /// Feeds the engines' messages to the app until `done` holds or `timeout` passes; says
    /// whether `done` held.
    pub async fn run_until(&mut self, timeout: Duration, done: impl Fn(&App) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&self.app) {
            match tokio::time::timeout_at(deadline, self.msgs.recv()).await {
                Ok(Some(msg)) => self.update(msg),
                _ => return done(&self.app),
            }
        }
        true
    }

    /// Stops the engines as quitting the console does.
    pub async fn finish(self) {
        self.engines.shutdown(self.stop_runs).await;
    }
}

async fn console(opts: ConsoleOptions, mut app: App) -> Result<()> {
    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel::<Msg>();
    let engines = Engines::start(&opts, &msg_tx)?;
    engines.start_default(&opts, &mut app)?;
    load_system_history(&opts, &mut app);

    let mut terminal = ratatui::try_init().map_err(|e| Error::startup("the terminal", e))?;
    if let Ok(size) = terminal.size() {
        app.size = (size.width, size.height);
    }
    let mut events = EventStream::new();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Error::startup("the SIGHUP handler", e))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::startup("the SIGTERM handler", e))?;
    let mut tick = tokio::time::interval(POLL);
    let mut last_draw = Instant::now() - FRAME;
    let mut headless = false;
    let mut stop_runs = false;

    loop {
        let next_frame = tokio::time::Instant::from_std(last_draw + FRAME);
        let mut effects = Vec::new();
        tokio::select! {
            ev = events.next(), if !headless => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => effects = app.update(Msg::Key(k)),
                Some(Ok(Event::Resize(w, h))) => effects = app.update(Msg::Resize(w, h)),
                Some(Ok(_)) => {}
                // The terminal is gone: keep the runs going without it.
                Some(Err(_)) | None => headless = true,
            },
            Some(msg) = msg_rx.recv() => {
                effects = app.update(msg);
                // Drain what else is queued so a burst of updates draws once.
                while let Ok(m) = msg_rx.try_recv() {
                    effects.extend(app.update(m));
                }
            }
            _ = tick.tick() => effects = app.update(Msg::Tick),
            _ = hangup.recv() => headless = true,
            // Only reaches us once the terminal is restored (raw mode reads Ctrl-C as a key):
            // stop the runs this process trains, keeping their checkpoints.
            _ = tokio::signal::ctrl_c(), if headless => {
                stop_runs = true;
                break;
            }
            _ = terminate.recv() => {
                stop_runs = true;
                break;
            }
            _ = tokio::time::sleep_until(next_frame), if app.dirty && !headless => {}
        }
        for e in effects {
            if let Some(stop) = carry_out(&mut app, &engines, e) {
                stop_runs = stop;
            }
        }
        if app.quit {
            let (active, queued) = app.runner_load;
            if stop_runs || active + queued == 0 || headless {
                break;
            }
            // "Leave them training": what an SSH drop does, asked for. The terminal is given
            // back and this process trains on, headless, until its runs end; Ctrl-C or SIGTERM
            // then stops them with their checkpoints kept.
            ratatui::restore();
            headless = true;
            app.quit = false;
            eprintln!(
                "vigil: {} training or queued in process {} until {}; you may close this terminal. \
                 `vigil` in another shows them; Ctrl-C or `kill {}` stops them (checkpoints kept).",
                if active + queued == 1 {
                    "1 run is".to_string()
                } else {
                    format!("{} runs are", active + queued)
                },
                std::process::id(),
                if active + queued == 1 { "it ends" } else { "they end" },
                std::process::id()
            );
            continue;
        }
        if headless {
            // Nobody is watching: finish what this process is training, then leave.
            let (active, queued) = app.runner_load;
            if active == 0 && queued == 0 {
                break;
            }
            continue;
        }
        if app.dirty && last_draw.elapsed() >= FRAME {
            if terminal.draw(|f| views::draw(f, &app)).is_err() {
                headless = true;
                continue;
            }
            app.dirty = false;
            last_draw = Instant::now();
        }
    }
    if !headless {
        ratatui::restore();
    }
    engines.shutdown(stop_runs).await;
    Ok(())
}
