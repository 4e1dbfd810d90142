//! The runs filter typed after `/`: words that must all match. `status:running`, `spec:digits`,
//! `key=value` / `key!=value` / `key<value` / `key>value` on the spec's parameters (a key matches
//! the full dotted name or its last part, so `lr<0.01` finds `optimizer.lr`), and any other word
//! matches the run id, spec name or a tag; `tag:NAME` keeps the runs tagged NAME.

use std::collections::BTreeMap;

/// One word of a filter.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Status(String),
    Spec(String),
    Tag(String),
    Param { key: String, op: Op, value: String },
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
}

/// A parsed filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    terms: Vec<Term>,
}

/// What a filter looks at in a run.
pub struct Candidate<'a> {
    pub id: &'a str,
    pub spec: &'a str,
    pub status: &'a str,
    pub params: &'a BTreeMap<String, String>,
    /// The run's tags (`vigil tag`, `:tag`).
    pub tags: &'a [String],
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        let terms = text
            .split_whitespace()
            .map(|w| {
                if let Some(s) = w.strip_prefix("status:") {
                    return Term::Status(s.to_lowercase());
                }
                if let Some(s) = w.strip_prefix("spec:") {
                    return Term::Spec(s.to_lowercase());
                }
                if let Some(s) = w.strip_prefix("tag:").or_else(|| w.strip_prefix('#')) {
                    return Term::Tag(s.to_lowercase());
                }
                for (sym, op) in [("!=", Op::Ne), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt)] {
                    if let Some((k, v)) = w.split_once(sym).filter(|(k, _)| !k.is_empty()) {
                        return Term::Param { key: k.to_string(), op, value: v.to_string() };
                    }
                }
                Term::Text(w.to_lowercase())
            })
            .collect();
        Filter { terms }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Why the filter cannot mean what it says, if it cannot: `<` and `>` compare numbers, so
    /// `lr<abc` would silently match nothing.
    pub fn problem(&self) -> Option<String> {
        self.terms.iter().find_map(|t| match t {
            Term::Param { key, op: op @ (Op::Lt | Op::Gt), value } if value.parse::<f64>().is_err() => {
                let sym = if *op == Op::Lt { "<" } else { ">" };
                Some(if value.is_empty() {
                    format!("{key}{sym} needs a number after {sym}")
                } else {
                    format!("{key}{sym}{value}: {sym} compares numbers, and {value:?} is not one")
                })
            }
            _ => None,
        })
    }

    pub fn matches(&self, c: &Candidate) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Status(s) => c.status.starts_with(s.as_str()),
            Term::Spec(s) => c.spec.to_lowercase().contains(s.as_str()),
            Term::Tag(s) => c.tags.iter().any(|t| t.to_lowercase() == *s),
            Term::Text(s) => {
                c.id.to_lowercase().contains(s.as_str())
                    || c.spec.to_lowercase().contains(s.as_str())
                    || c.tags.iter().any(|t| t.to_lowercase().contains(s.as_str()))
            }
            Term::Param { key, op, value } => {
                let found =
                    c.params.iter().find(|(k, _)| *k == key || k.rsplit('.').next() == Some(key.as_str()));
                let Some((_, have)) = found else { return false };
                let num = |s: &str| {
                    s.trim_start_matches(|ch: char| ch.is_alphabetic() || ch == '(')
                        .trim_end_matches(')')
                        .parse::<f64>()
                        .ok()
                };
                match (op, num(have), num(value)) {
                    (Op::Lt, Some(a), Some(b)) => a < b,
                    (Op::Gt, Some(a), Some(b)) => a > b,
                    (Op::Eq, Some(a), Some(b)) if have.parse::<f64>().is_ok() => a == b,
                    (Op::Ne, Some(a), Some(b)) if have.parse::<f64>().is_ok() => a != b,
                    (Op::Eq, ..) => have.eq_ignore_ascii_case(value),
                    (Op::Ne, ..) => !have.eq_ignore_ascii_case(value),
                    _ => false,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, String> {
        [("optimizer", "Adam"), ("optimizer.lr", "0.002"), ("batch", "Mini(32)"), ("epochs", "40")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn comparisons_with_words_are_refused() {
        let problem = Filter::parse("mlp lr<abc").problem().expect("lr<abc is refused");
        assert!(problem.contains("lr<abc") && problem.contains("compares numbers"), "{problem}");
        assert!(Filter::parse("epochs>").problem().unwrap().contains("needs a number"));
        for fine in ["lr<0.01", "epochs>10", "optimizer=adam", "status:running", "x"] {
            assert_eq!(Filter::parse(fine).problem(), None, "{fine}");
        }
    }

    #[test]
    fn terms_combine() {
        let p = params();
        let tags = ["baseline".to_string()];
        let c = Candidate {
            id: "digits-mlp-abc123",
            spec: "digits-mlp",
            status: "running",
            params: &p,
            tags: &tags,
        };
        for yes in [
            "",
            "mlp",
            "status:run",
            "spec:digits",
            "lr=0.002",
            "lr<0.01",
            "epochs>10",
            "optimizer=adam",
            "batch<64",
            "abc1 status:running",
            "tag:baseline",
            "#Baseline",
            "basel",
        ] {
            assert!(Filter::parse(yes).matches(&c), "{yes:?} should match");
        }
        for no in [
            "cnn",
            "status:failed",
            "lr>0.01",
            "lr!=0.002",
            "momentum=0.9",
            "optimizer=sgd",
            "mlp status:completed",
            "tag:base",
            "tag:other",
        ] {
            assert!(!Filter::parse(no).matches(&c), "{no:?} should not match");
        }
    }
}
