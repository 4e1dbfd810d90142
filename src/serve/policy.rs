//! Output policies: how much a caller learns from a prediction. Full probabilities make model
//! extraction and membership inference cheap; a key can instead see only the top k classes, only
//! the label, or probabilities rounded to a few decimals. The policy is a property of the key
//! (see [`super::keys`]) and is applied to every input of a batch alike.
//!
//! Pure functions on probability vectors: no HTTP, no model.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which classes a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Every class's probability.
    #[default]
    Full,
    /// The k most probable classes, most probable first.
    TopK(usize),
    /// The label alone, no probabilities.
    Label,
}

/// A key's output policy: a view, optionally with probabilities rounded to `decimals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputPolicy {
    pub view: View,
    pub decimals: Option<u8>,
}

impl fmt::Display for OutputPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.view {
            View::Full => f.write_str("full")?,
            View::TopK(k) => write!(f, "top-k:{k}")?,
            View::Label => f.write_str("label")?,
        }
        match (self.view, self.decimals) {
            (View::Label, _) | (_, None) => Ok(()),
            (_, Some(d)) => write!(f, ",round:{d}"),
        }
    }
}

impl FromStr for OutputPolicy {
    type Err = String;
    /// `full`, `label`, `top-k:K`, `round:D`, or a view and a rounding joined by a comma
    /// (`top-k:3,round:2`).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut policy = OutputPolicy::default();
        let mut view_set = false;
        for part in s.split(',').map(str::trim) {
            let (name, arg) = match part.split_once(':') {
                Some((n, a)) => (n.trim(), Some(a.trim())),
                None => (part, None),
            };
            let number = |what: &str| -> Result<usize, String> {
                arg.ok_or_else(|| format!("output policy {part:?} needs a number: {what}"))?
                    .parse::<usize>()
                    .map_err(|_| format!("output policy {part:?}: expected a whole number"))
            };
            match name {
                "full" | "label" | "top-k" | "topk" => {
                    if view_set {
                        return Err(format!(
                            "output policy {s:?} names two views; pick one of full, label, top-k:K"
                        ));
                    }
                    view_set = true;
                    policy.view = match name {
                        "full" => View::Full,
                        "label" => View::Label,
                        _ => {
                            let k = number("top-k:3")?;
                            if k == 0 {
                                return Err("top-k needs k of at least 1 (or use `label`)".into());
                            }
                            View::TopK(k)
                        }
                    };
                }
                "round" => {
                    let d = number("round:2")?;
                    if d > 6 {
                        return Err(format!("round:{d}: at most 6 decimals (f32 holds about 7 digits)"));
                    }
                    policy.decimals = Some(d as u8);
                }
                _ => {
                    return Err(format!(
                        "unknown output policy {part:?}: use full, label, top-k:K or round:D (e.g. top-k:3,round:2)"
                    ));
                }
            }
        }
        if policy.view == View::Label && policy.decimals.is_some() {
            return Err("`label` shows no probabilities, so there is nothing to round".into());
        }
        Ok(policy)
    }
}

impl Serialize for OutputPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OutputPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What one input's answer shows under a policy: the label's index and the (class index,
/// probability) pairs to report, in the order to report them.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub label: usize,
    /// `None` under `label`; class order under `full`; most probable first under `top-k`.
    pub probabilities: Option<Vec<(usize, f32)>>,
}

/// Index of the largest value (the first one on ties, as `argmax` does).
pub fn argmax(probs: &[f32]) -> usize {
    let mut best = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > probs[best] {
            best = i;
        }
    }
    best
}

fn round_to(p: f32, decimals: u8) -> f32 {
    let scale = 10f64.powi(decimals as i32);
    ((p as f64 * scale).round() / scale) as f32
}

impl OutputPolicy {
    /// Applies the policy to one input's class probabilities.
    pub fn apply(&self, probs: &[f32]) -> Shown {
        let label = argmax(probs);
        let round = |p: f32| self.decimals.map_or(p, |d| round_to(p, d));
        let probabilities = match self.view {
            View::Label => None,
            View::Full => Some(probs.iter().enumerate().map(|(i, p)| (i, round(*p))).collect()),
            View::TopK(k) => {
                let mut order: Vec<usize> = (0..probs.len()).collect();
                // Stable sort: equal probabilities keep class order, so answers are repeatable.
                order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
                Some(order.into_iter().take(k).map(|i| (i, round(probs[i]))).collect())
            }
        };
        Shown { label, probabilities }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_print_and_refuse_nonsense() {
        for text in ["full", "label", "top-k:3", "round:2", "top-k:2,round:1"] {
            let p: OutputPolicy = text.parse().unwrap();
            let printed = p.to_string();
            let expected = if text == "round:2" { "full,round:2" } else { text };
            assert_eq!(printed, expected);
            assert_eq!(printed.parse::<OutputPolicy>().unwrap(), p);
        }
        assert!("top-k".parse::<OutputPolicy>().unwrap_err().contains("needs a number"));
        assert!("top-k:0".parse::<OutputPolicy>().is_err());
        assert!("label,round:2".parse::<OutputPolicy>().is_err());
        assert!("full,label".parse::<OutputPolicy>().unwrap_err().contains("two views"));
        assert!("round:9".parse::<OutputPolicy>().is_err());
        assert!("everything".parse::<OutputPolicy>().unwrap_err().contains("unknown output policy"));
    }

    #[test]
    fn each_policy_shows_what_it_promises() {
        let probs = [0.1, 0.6123456, 0.05, 0.2376544];
        let full: OutputPolicy = "full".parse().unwrap();
        assert_eq!(
            full.apply(&probs),
            Shown {
                label: 1,
                probabilities: Some(vec![(0, 0.1), (1, 0.6123456), (2, 0.05), (3, 0.2376544)])
            }
        );
        let top2: OutputPolicy = "top-k:2".parse().unwrap();
        assert_eq!(top2.apply(&probs).probabilities.unwrap(), vec![(1, 0.6123456), (3, 0.2376544)]);
        let top9: OutputPolicy = "top-k:9".parse().unwrap();
        assert_eq!(top9.apply(&probs).probabilities.unwrap().len(), 4, "k larger than the classes");
        let label: OutputPolicy = "label".parse().unwrap();
        assert_eq!(label.apply(&probs), Shown { label: 1, probabilities: None });
        let rounded: OutputPolicy = "round:2".parse().unwrap();
        assert_eq!(
            rounded.apply(&probs).probabilities.unwrap(),
            vec![(0, 0.1), (1, 0.61), (2, 0.05), (3, 0.24)]
        );
        let both: OutputPolicy = "top-k:1,round:1".parse().unwrap();
        assert_eq!(both.apply(&probs).probabilities.unwrap(), vec![(1, 0.6)]);
    }

    #[test]
    fn ties_keep_class_order() {
        let p: OutputPolicy = "top-k:2".parse().unwrap();
        assert_eq!(p.apply(&[0.25, 0.25, 0.25, 0.25]).probabilities.unwrap(), vec![(0, 0.25), (1, 0.25)]);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
    }
}
