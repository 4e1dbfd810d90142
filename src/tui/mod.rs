//! The interactive console. [`run`] wires the engines to the app: the runner (training on
//! blocking threads), the store watcher (a thread that follows `runs/` on disk) and the system
//! sampler send plain messages into one channel; the loop feeds every queued message to
//! [`app::App::update`], carries out the effects, and draws once when something changed, at most
//! 30 times a second. When the terminal goes away (SSH drop, SIGHUP), the loop stops drawing and
//! lets the runs it started finish headless before the process exits.

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
use self::keymap::Keymap;
use self::theme::{ColorDepth, Theme};
use crate::engine::runner::{Runner, RunnerCommand, RunnerEvent, default_concurrency};
use crate::engine::watch::StoreWatcher;
use crate::error::{Error, Result};
use crate::ml::spec;
use crate::store::RunStore;

/// How the console is started.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    pub runs_dir: PathBuf,
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
}

/// The shortest time between two frames (30 frames a second at most).
const FRAME: Duration = Duration::from_millis(33);
/// How often the store is looked at.
const POLL: Duration = Duration::from_millis(250);

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

async fn console(opts: ConsoleOptions, mut app: App) -> Result<()> {
    let store = RunStore::new(&opts.runs_dir);
    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel::<Msg>();

    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<RunnerCommand>();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<RunnerEvent>();
    let runner = Runner::new(store.clone(), opts.concurrency.unwrap_or_else(default_concurrency), ev_tx);
    let runner_task = tokio::spawn(runner.run(cmd_rx));
    {
        let tx = msg_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = ev_rx.recv().await {
                if tx.send(Msg::Runner(e)).is_err() {
                    break;
                }
            }
        });
    }
    // The watcher reads files: a thread of its own keeps that off the async workers.
    {
        let tx = msg_tx.clone();
        let store = store.clone();
        std::thread::Builder::new()
            .name("vigil-watch".into())
            .spawn(move || {
                let mut watcher = StoreWatcher::new(store);
                loop {
                    for u in watcher.poll() {
                        if tx.send(Msg::Store(u)).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(POLL);
                    if tx.is_closed() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::startup("the store watcher", e))?;
    }
    {
        let (sys_tx, mut sys_rx) = tokio::sync::watch::channel(Default::default());
        tokio::spawn(crate::engine::system::run(opts.sample_every, Some(store.clone()), sys_tx));
        let tx = msg_tx.clone();
        tokio::spawn(async move {
            while sys_rx.changed().await.is_ok() {
                let s = sys_rx.borrow_and_update().clone();
                if tx.send(Msg::System(s)).is_err() {
                    break;
                }
            }
        });
    }
    // Explanations are CPU work on a model held in memory: a thread of their own.
    let (explain_tx, explain_rx) = std::sync::mpsc::channel();
    {
        let tx = msg_tx.clone();
        let store = store.clone();
        std::thread::Builder::new()
            .name("vigil-explain".into())
            .spawn(move || {
                crate::engine::explain::serve(store, explain_rx, |e| tx.send(Msg::Explain(e)).is_ok())
            })
            .map_err(|e| Error::startup("the explanation engine", e))?;
    }
    // The access log is followed on a thread of its own (file reads); the server the console
    // starts lives on this runtime, owned by the service control task.
    {
        let tx = msg_tx.clone();
        let dir = store.root().to_path_buf();
        std::thread::Builder::new()
            .name("vigil-service-log".into())
            .spawn(move || {
                crate::engine::service::follow(dir, POLL, |feed| {
                    tx.send(Msg::ServiceFeed(Box::new(feed))).is_ok()
                })
            })
            .map_err(|e| Error::startup("the access-log follower", e))?;
    }
    let (service_tx, service_rx) = mpsc::unbounded_channel();
    let service_task = {
        let tx = msg_tx.clone();
        tokio::spawn(crate::engine::service::control(
            store.root().to_path_buf(),
            opts.serve_log_raw_inputs,
            service_rx,
            move |e| tx.send(Msg::Service(e)).is_ok(),
        ))
    };
    if opts.start_default && store.list().is_empty() {
        let (spec, _) = spec::resolve(spec::DEFAULT_SPEC, &opts.models_dir)?;
        let _ = cmd_tx.send(RunnerCommand::Start(Box::new(spec)));
        app.say(
            Level::Info,
            format!("the store was empty: starting the default experiment {}", spec::DEFAULT_SPEC),
        );
    }

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
            _ = terminate.recv() => {
                stop_runs = true;
                break;
            }
            _ = tokio::time::sleep_until(next_frame), if app.dirty && !headless => {}
        }
        for e in effects {
            match e {
                Effect::Runner(c) => {
                    let _ = cmd_tx.send(c);
                }
                Effect::Explain(c) => {
                    let _ = explain_tx.send(c);
                }
                Effect::Service(c) => {
                    let _ = service_tx.send(c);
                }
                Effect::ExportCsv => match export::csv(&app, store.root()) {
                    Ok(p) => app.say(Level::Info, format!("wrote {}", p.display())),
                    Err(err) => app.say(Level::Error, err.to_string()),
                },
                Effect::ExportPng => match export::png(&app, store.root()) {
                    Ok(p) => app.say(Level::Info, format!("wrote {}", p.display())),
                    Err(err) => app.say(Level::Error, err.to_string()),
                },
                Effect::LoadTheme(name) => {
                    let theme = Theme::find(&name, app.theme.depth).map(Box::new).map_err(|e| e.to_string());
                    app.update(Msg::Theme(theme));
                }
                Effect::Quit { stop_runs: s } => stop_runs = s,
            }
        }
        if app.quit {
            break;
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
    if stop_runs {
        let _ = cmd_tx.send(RunnerCommand::StopAll);
    }
    drop(cmd_tx);
    // Closing the channel stops the service the console started, letting requests finish.
    drop(service_tx);
    let _ = service_task.await;
    // The runner ends when every run it started has stopped (checkpoints written).
    let _ = runner_task.await;
    Ok(())
}
