//! Extraction by distillation, watched per key: a thief who wants a copy of a language model
//! sends it many prompts made from a few templates (`Translate to French: {sentence}`,
//! `Classify: {text}. Answer:`) with a different filling each time, at high volume, or asks
//! for the log-probabilities that make a student learn far faster from each answer.
//!
//! In PRADA's spirit (src/ml/attack/prada.rs watches a classifier's queries for synthetic
//! structure), each key's recent prompts are tested for that structure: once a key has sent
//! `min_requests` prompts within `period`, the watch raises its alarm when most of them are
//! distinct but share a beginning or an end (templated and diverse), or when many asked for
//! logprobs. The alarm then stays raised for the key, as PRADA's does. Prompts are kept as a few
//! hashes, never as text. Plain data: the service keeps one [`TextWatch`] per key.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// Characters of a prompt's beginning and end compared between prompts: long enough that
/// ordinary questions ("What is the ...") rarely share them, short enough to catch a template.
const SKELETON_CHARS: usize = 24;

/// Settings of the watch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchConfig {
    /// Prompts within `period` before the key is judged at all (the "high volume").
    pub min_requests: usize,
    pub period: Duration,
    /// Share of the prompts that must be distinct ...
    pub distinct_share: f64,
    /// ... while this share starts or ends the same way.
    pub template_share: f64,
    /// Share of the requests asking for logprobs that raises the alarm by itself.
    pub logprob_share: f64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            min_requests: 100,
            period: Duration::from_secs(600),
            distinct_share: 0.8,
            template_share: 0.6,
            logprob_share: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    whole: u64,
    head: u64,
    tail: u64,
    logprobs: bool,
}

/// One key's watch.
#[derive(Debug, Clone)]
pub struct TextWatch {
    config: WatchConfig,
    recent: VecDeque<Seen>,
    /// Why the alarm was raised, once it was.
    pub alarm: Option<String>,
}

fn hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The most prompts sharing one value, as a share of all.
fn top_share(values: impl Iterator<Item = u64>, n: usize) -> f64 {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts.values().copied().max().unwrap_or(0) as f64 / n.max(1) as f64
}

impl TextWatch {
    pub fn new(config: WatchConfig) -> Self {
        TextWatch { config, recent: VecDeque::new(), alarm: None }
    }

    /// Takes one prompt (the caller's own text, without the chat template, which every prompt
    /// shares) and whether it asked for logprobs; returns whether the key is in alarm.
    pub fn observe(&mut self, prompt: &str, logprobs: bool, now: Instant) -> bool {
        let chars: Vec<char> = prompt.chars().collect();
        let head: String = chars.iter().take(SKELETON_CHARS).collect();
        let tail: String = chars[chars.len().saturating_sub(SKELETON_CHARS)..].iter().collect();
        self.recent.push_back(Seen {
            at: now,
            whole: hash(prompt),
            head: hash(&head),
            tail: hash(&tail),
            logprobs,
        });
        while self.recent.front().is_some_and(|s| now.duration_since(s.at) > self.config.period) {
            self.recent.pop_front();
        }
        // Judged on the latest `min_requests` prompts: enough to tell, and bounded memory.
        while self.recent.len() > self.config.min_requests {
            self.recent.pop_front();
        }
        if self.alarm.is_some() {
            return true;
        }
        let n = self.recent.len();
        if n < self.config.min_requests {
            return false;
        }
        let distinct = {
            let mut all: Vec<u64> = self.recent.iter().map(|s| s.whole).collect();
            all.sort_unstable();
            all.dedup();
            all.len() as f64 / n as f64
        };
        let template = top_share(self.recent.iter().map(|s| s.head), n)
            .max(top_share(self.recent.iter().map(|s| s.tail), n));
        let logprob = self.recent.iter().filter(|s| s.logprobs).count() as f64 / n as f64;
        let c = &self.config;
        if distinct >= c.distinct_share && template >= c.template_share {
            self.alarm = Some(format!(
                "{n} prompts within {} s, {:.0}% distinct, {:.0}% from one template",
                c.period.as_secs(),
                distinct * 100.0,
                template * 100.0
            ));
        } else if logprob >= c.logprob_share {
            self.alarm = Some(format!(
                "{n} prompts within {} s, {:.0}% asking for logprobs",
                c.period.as_secs(),
                logprob * 100.0
            ));
        }
        self.alarm.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WatchConfig {
        WatchConfig { min_requests: 50, ..WatchConfig::default() }
    }

    #[test]
    fn templated_diverse_prompts_at_volume_raise_the_alarm() {
        let mut w = TextWatch::new(config());
        let now = Instant::now();
        for i in 0..49 {
            assert!(!w.observe(
                &format!("Translate into French, word for word: sentence number {i}"),
                false,
                now
            ));
        }
        assert!(w.observe("Translate into French, word for word: the last one", false, now));
        assert!(w.alarm.as_deref().unwrap().contains("template"), "{:?}", w.alarm);
    }

    #[test]
    fn ordinary_varied_questions_and_repeats_do_not() {
        let mut w = TextWatch::new(config());
        let now = Instant::now();
        let starts =
            ["What is", "How do I", "Why does", "Write a", "Explain", "Summarise", "List", "Can you"];
        for i in 0..200 {
            let q = format!("{} thing {} in {} ways?", starts[i % starts.len()], i * 7919 % 1000, i % 13);
            assert!(!w.observe(&q, false, now), "alarm on ordinary traffic at {i}: {:?}", w.alarm);
        }
        // The same prompt again and again is a retry loop, not distillation.
        let mut w = TextWatch::new(config());
        for _ in 0..200 {
            assert!(!w.observe("Translate into French, word for word: hello", false, now));
        }
    }

    #[test]
    fn logprobs_at_scale_raise_the_alarm_and_old_prompts_age_out() {
        let mut w = TextWatch::new(config());
        let t0 = Instant::now();
        for i in 0..49 {
            w.observe(&format!("{i} a question of its own, number {}", i * 31), true, t0);
        }
        // Past the period the old ones no longer count.
        let later = t0 + Duration::from_secs(601);
        assert!(!w.observe("one more, much later", true, later));
        for i in 0..49 {
            w.observe(&format!("{i} another question, number {}", i * 17), i % 2 == 0, later);
        }
        assert!(w.alarm.as_deref().unwrap().contains("logprobs"), "{:?}", w.alarm);
    }
}
