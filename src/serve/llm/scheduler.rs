//! The generation scheduler: named threads, off the async runtime, that decode every active
//! generation in turn, one token each per round (round-robin), so sixteen concurrent requests
//! interleave instead of queueing behind one another. A request hands in a [`Job`] and reads
//! [`Event`]s from its channel; when it stops reading (the client hung up, the request timed out,
//! the handler was dropped), the channel closes and the generation is dropped before its next
//! token is computed: cancellation costs at most the token being decoded.
//!
//! Owns the threads and the round-robin; knows nothing of HTTP, keys or the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::error::{Error, Result};
use crate::llm::{FinishReason, GeneratedToken, Generation, LanguageModel, SamplingParams, Step};
use crate::serve::metrics::Metrics;

/// What a generation reports to the request that asked for it, in this order: `Started` (or
/// `Failed`), the tokens, then `Finished` (or `Failed`).
#[derive(Debug, Clone)]
pub enum Event {
    /// The prompt was processed; `prompt` is how long that took.
    Started {
        prompt: Duration,
    },
    Token(GeneratedToken),
    /// `generated` counts the tokens decoded (a token whose text was held back for a stop
    /// string counts; the flush of held text at the end does not).
    Finished {
        reason: FinishReason,
        generated: usize,
    },
    /// The model refused the prompt (`input`: the caller's fault, 400) or failed.
    Failed {
        input: bool,
        message: String,
    },
}

/// One request's generation.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub events: UnboundedSender<Event>,
}

struct Active {
    generation: Box<dyn Generation>,
    events: UnboundedSender<Event>,
}

/// The scheduler's threads and their queues.
pub struct Scheduler {
    queues: Vec<(Sender<Job>, Arc<AtomicUsize>)>,
}

impl Scheduler {
    /// Starts `workers` threads decoding with `model`. One is right for a model whose matrix
    /// products already use every core (candle's); more help a model that does not.
    pub fn start(model: Arc<dyn LanguageModel>, workers: usize, metrics: &Metrics) -> Result<Self> {
        let mut queues = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx) = std::sync::mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let worker = Worker {
                model: model.clone(),
                rx,
                load: load.clone(),
                active_gauge: metrics.llm_active.clone(),
                tokens: metrics.llm_tokens.clone(),
                cancelled: metrics.llm_cancelled.clone(),
            };
            std::thread::Builder::new()
                .name(format!("vigil-llm-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| Error::startup("the generation scheduler", e))?;
            queues.push((tx, load));
        }
        Ok(Scheduler { queues })
    }

    /// Hands a job to the least busy thread. Fails only when the threads are gone.
    pub fn submit(&self, job: Job) -> std::result::Result<(), String> {
        let (tx, load) = self
            .queues
            .iter()
            .min_by_key(|(_, load)| load.load(Ordering::Relaxed))
            .expect("at least one worker");
        load.fetch_add(1, Ordering::Relaxed);
        tx.send(job).map_err(|_| "the generation scheduler has stopped".to_string())
    }

    /// Generations queued or being decoded now.
    pub fn active(&self) -> usize {
        self.queues.iter().map(|(_, l)| l.load(Ordering::Relaxed)).sum()
    }
}

struct Worker {
    model: Arc<dyn LanguageModel>,
    rx: Receiver<Job>,
    load: Arc<AtomicUsize>,
    active_gauge: prometheus_client::metrics::gauge::Gauge,
    tokens: prometheus_client::metrics::counter::Counter,
    cancelled: prometheus_client::metrics::counter::Counter,
}

impl Worker {
    /// Runs until every [`Scheduler`] handle is gone and nothing is left to decode.
    fn run(self) {
        let mut active: Vec<Active> = Vec::new();
        loop {
            // Idle: wait for work. Busy: take what arrived, without waiting.
            if active.is_empty() {
                match self.rx.recv() {
                    Ok(job) => self.admit(job, &mut active),
                    Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(job) => self.admit(job, &mut active),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if active.is_empty() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            // One round: a token for each generation, in the order they arrived.
            active.retain_mut(|a| {
                let keep = self.step(a);
                if !keep {
                    self.done();
                }
                keep
            });
        }
    }

    fn done(&self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
        self.active_gauge.dec();
    }

    fn admit(&self, job: Job, active: &mut Vec<Active>) {
        self.active_gauge.inc();
        if job.events.is_closed() {
            self.cancelled.inc();
            self.done();
            return;
        }
        let t0 = Instant::now();
        match self.model.start(&job.prompt, &job.params) {
            Ok(generation) => {
                if job.events.send(Event::Started { prompt: t0.elapsed() }).is_err() {
                    self.cancelled.inc();
                    self.done();
                    return;
                }
                // Its first token comes from the prompt's own logits (no forward pass), so it is
                // sent now: a request's time to first token is its own prompt processing, not
                // also that of every request admitted in the same breath (16 clients arriving
                // together all waited for the 16th prompt before).
                let mut a = Active { generation, events: job.events };
                if self.step(&mut a) {
                    active.push(a);
                } else {
                    self.done();
                }
            }
            Err(e) => {
                let input = e.exit_code() == crate::error::EXIT_BAD_INPUT;
                let _ = job.events.send(Event::Failed { input, message: e.to_string() });
                self.done();
            }
        }
    }

    /// Decodes one token of `a`; false when it is over (finished, failed or cancelled).
    fn step(&self, a: &mut Active) -> bool {
        // The client stopped listening: drop the generation before spending a token on it.
        if a.events.is_closed() {
            self.cancelled.inc();
            return false;
        }
        match a.generation.step() {
            Ok(Step::Token(token)) => {
                self.tokens.inc();
                if a.events.send(Event::Token(token)).is_err() {
                    self.cancelled.inc();
                    return false;
                }
                true
            }
            Ok(Step::Finished(reason)) => {
                let generated = a.generation.generated();
                let _ = a.events.send(Event::Finished { reason, generated });
                false
            }
            Err(e) => {
                let _ = a.events.send(Event::Failed { input: false, message: e.to_string() });
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::scripted::ScriptedModel;

    fn job(max_tokens: usize) -> (Job, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let params = SamplingParams { max_tokens, ..Default::default() };
        (Job { prompt: vec![1, 70, 71], params, events: tx }, rx)
    }

    #[test]
    fn two_generations_interleave_token_by_token() {
        let model = ScriptedModel { step_delay: Duration::from_millis(5), ..Default::default() };
        let metrics = Metrics::new();
        let scheduler = Scheduler::start(Arc::new(model), 1, &metrics).unwrap();
        let (a, mut ra) = job(20);
        let (b, mut rb) = job(20);
        scheduler.submit(a).unwrap();
        scheduler.submit(b).unwrap();
        // Read both as the tokens come, numbering them in the order they arrive.
        let (mut order, mut finished) = (Vec::new(), 0);
        let t0 = Instant::now();
        while finished < 2 {
            assert!(t0.elapsed() < Duration::from_secs(5), "the generations did not finish");
            for (rx, name) in [(&mut ra, 'a'), (&mut rb, 'b')] {
                while let Ok(ev) = rx.try_recv() {
                    match ev {
                        Event::Token(_) => order.push(name),
                        Event::Finished { generated, .. } => {
                            assert_eq!(generated, 20);
                            finished += 1;
                        }
                        Event::Started { .. } => {}
                        Event::Failed { message, .. } => panic!("{message}"),
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Both were under way at once: b's first token came before a's last.
        let a_last = order.iter().rposition(|n| *n == 'a').unwrap();
        let b_first = order.iter().position(|n| *n == 'b').unwrap();
        assert!(
            b_first < a_last,
            "b waited for a to finish: the scheduler queued instead of interleaving: {order:?}"
        );
    }

    #[test]
    fn a_closed_channel_cancels_the_generation_within_a_token() {
        let model = ScriptedModel { step_delay: Duration::from_millis(5), ..Default::default() };
        let metrics = Metrics::new();
        let scheduler = Scheduler::start(Arc::new(model), 1, &metrics).unwrap();
        let (a, mut ra) = job(100_000);
        scheduler.submit(a).unwrap();
        for _ in 0..4 {
            ra.blocking_recv().unwrap();
        }
        drop(ra);
        let t0 = Instant::now();
        while scheduler.active() > 0 {
            assert!(t0.elapsed() < Duration::from_secs(2), "the generation went on after its client left");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(metrics.llm_cancelled.get(), 1);
        assert!(metrics.llm_tokens.get() < 10, "{} tokens decoded", metrics.llm_tokens.get());
    }
}
