//! The System view's history: CPU, memory and GPU points with their time, the ones the store
//! kept from earlier sessions ([`crate::store::system_log`], loaded at start) followed by the
//! live samples, so the charts show the last hours after a restart and not only the minutes
//! since. Live points are kept at full rate for [`crate::engine::system::HISTORY`] samples;
//! the stored ones are at one per 10 s.

use std::collections::VecDeque;

use crate::engine::system::{HISTORY, SystemSample};
use crate::store::system_log::SystemPoint;

/// How far back the console loads the stored history (seconds).
pub const PAST_WINDOW_S: f64 = 6.0 * 3600.0;
/// The most stored points kept (six hours at one per 10 s).
pub const PAST_POINTS: usize = 2160;

/// Points for the history charts, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemHistory {
    /// Points from the store (earlier sessions), oldest first.
    pub past: Vec<SystemPoint>,
    /// This session's samples as points, oldest first, at most [`HISTORY`].
    pub live: VecDeque<SystemPoint>,
}

impl SystemHistory {
    /// Lays the stored history under the live points (at start).
    pub fn load(&mut self, mut past: Vec<SystemPoint>) {
        // Points this session recorded itself are live already.
        let first_live = self.live.front().map_or(f64::INFINITY, |p| p.t);
        past.retain(|p| p.t < first_live);
        let skip = past.len().saturating_sub(PAST_POINTS);
        self.past = past.split_off(skip);
    }

    /// A live sample taken at `t` (Unix seconds).
    pub fn push(&mut self, s: &SystemSample, t: f64) {
        if self.live.len() >= HISTORY {
            self.live.pop_front();
        }
        self.live.push_back(s.point(t));
    }

    /// Every point, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &SystemPoint> + '_ {
        self.past.iter().chain(self.live.iter())
    }

    pub fn is_empty(&self) -> bool {
        self.past.is_empty() && self.live.is_empty()
    }

    /// Seconds from the oldest point to the newest.
    pub fn span_s(&self) -> f64 {
        match (self.points().next(), self.live.back().or(self.past.last())) {
            (Some(a), Some(b)) => b.t - a.t,
            _ => 0.0,
        }
    }

    /// The x axis' unit: seconds for the first minutes, then minutes.
    pub fn unit(&self) -> (&'static str, f64) {
        if self.span_s() < 180.0 { ("s", 1.0) } else { ("min", 60.0) }
    }

    /// A series for the charts: (time before the newest point in [`Self::unit`]s, value).
    pub fn series(&self, value: impl Fn(&SystemPoint) -> Option<f64>) -> Vec<(f64, f64)> {
        let Some(end) = self.live.back().or(self.past.last()).map(|p| p.t) else { return vec![] };
        let (_, per) = self.unit();
        self.points().filter_map(|p| Some(((p.t - end) / per, value(p)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, cpu: f32) -> SystemPoint {
        SystemPoint { t, cpu, mem_used: 1, mem_total: 2, gpus: vec![] }
    }

    #[test]
    fn the_stored_history_comes_before_the_live_points_on_one_time_axis() {
        let mut h = SystemHistory::default();
        let s = SystemSample { cpu_total: 50.0, memory_total: 4, ..Default::default() };
        h.push(&s, 1000.0);
        h.push(&s, 1001.0);
        // The store has older points and, from this session, one at 1000 already live.
        h.load(vec![point(400.0, 10.0), point(700.0, 20.0), point(1000.0, 50.0)]);
        let cpu = h.series(|p| Some(p.cpu as f64));
        assert_eq!(cpu.len(), 4, "the point this session recorded is not shown twice");
        assert_eq!(h.unit(), ("min", 60.0), "ten minutes read in minutes");
        assert_eq!(cpu[0], (-601.0 / 60.0, 10.0));
        assert_eq!(*cpu.last().unwrap(), (0.0, 50.0));
        assert_eq!(h.span_s(), 601.0);
    }

    #[test]
    fn both_parts_stay_bounded() {
        let mut h = SystemHistory::default();
        h.load((0..PAST_POINTS + 50).map(|i| point(i as f64, 1.0)).collect());
        assert_eq!(h.past.len(), PAST_POINTS);
        assert_eq!(h.past[0].t, 50.0, "the newest are kept");
        for i in 0..HISTORY + 5 {
            h.push(&SystemSample::default(), 1e6 + i as f64);
        }
        assert_eq!(h.live.len(), HISTORY);
    }
}
