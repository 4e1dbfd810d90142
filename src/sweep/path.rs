//! Parameters by path: `optimizer.lr`, `model.hidden`, `batch` name fields of an
//! [`ExperimentSpec`] through its JSON form, where enums are externally tagged
//! (`{"Adam": {"lr": 0.002}}`). A path passes through a variant without naming it, so
//! `optimizer.lr` reaches Adam's, SGD's or AdamW's `lr`; and a value given for a newtype variant
//! (`batch: 64` for `Mini(32)`) replaces what the variant holds. The changed tree is read back
//! into a spec and checked as a spec file would be, so a value of the wrong type, or one the
//! spec's own checks refuse, is an error naming the parameter.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ml::spec::ExperimentSpec;

/// Whether a JSON object is an externally tagged enum variant (`{"Mlp": {...}}`).
fn variant(map: &serde_json::Map<String, Value>) -> Option<(&String, &Value)> {
    let (k, v) = map.iter().next()?;
    (map.len() == 1 && k.chars().next().is_some_and(|c| c.is_ascii_uppercase())).then_some((k, v))
}

/// Every path a parameter may name in `spec`, sorted: the leaves, and the fields whose value is
/// a list or a variant (which a parameter replaces whole).
pub fn valid_paths(spec: &ExperimentSpec) -> Vec<String> {
    let tree = serde_json::to_value(spec).expect("a spec always serialises");
    let mut out = Vec::new();
    collect("", &tree, &mut out);
    out.retain(|p| p != "name" && p != "description");
    out.sort();
    out.dedup();
    out
}

fn collect(prefix: &str, v: &Value, out: &mut Vec<String>) {
    let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        Value::Object(map) => {
            if let Some((_, inner)) = variant(map).filter(|_| !prefix.is_empty()) {
                out.push(prefix.to_string());
                if let Value::Object(fields) = inner {
                    for (k, f) in fields {
                        collect(&join(k), f, out);
                    }
                }
                return;
            }
            for (k, f) in map {
                collect(&join(k), f, out);
            }
        }
        _ if !prefix.is_empty() => out.push(prefix.to_string()),
        _ => {}
    }
}

/// The slot `path` names in `tree`, passing through variants; `None` when there is none.
fn slot<'a>(tree: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut node = tree;
    for part in path.split('.') {
        // Step into a variant's fields unless the path names the variant itself.
        let through = match &*node {
            Value::Object(map) => variant(map).is_some_and(|(k, inner)| k != part && inner.is_object()),
            _ => false,
        };
        if through {
            node = node.as_object_mut()?.values_mut().next()?;
        }
        node = node.as_object_mut()?.get_mut(part)?;
    }
    Some(node)
}

/// The spec's current value at `path` (for showing what a parameter replaces).
pub fn current(spec: &ExperimentSpec, path: &str) -> Option<Value> {
    let mut tree = serde_json::to_value(spec).expect("a spec always serialises");
    slot(&mut tree, path).cloned()
}

/// The error for a path the spec has no field for, listing those it has.
pub fn unknown_path(spec: &ExperimentSpec, path: &str, file: &Path) -> Error {
    Error::argument(format!(
        "{}: parameter `{path}` is not a field of spec {:?}; valid paths: {}",
        file.display(),
        spec.name,
        valid_paths(spec).join(", ")
    ))
}

/// Sets each `(path, value)` on a copy of `spec` and checks the result as a spec. `file` names
/// the sweep file in errors.
pub fn apply(spec: &ExperimentSpec, values: &[(&str, &Value)], file: &Path) -> Result<ExperimentSpec> {
    let mut tree = serde_json::to_value(spec).expect("a spec always serialises");
    for (path, value) in values {
        let Some(target) = slot(&mut tree, path) else {
            return Err(unknown_path(spec, path, file));
        };
        match target {
            // A newtype variant (`Mini(32)`) given a bare value keeps its variant.
            Value::Object(map)
                if variant(map).is_some_and(|(_, inner)| !inner.is_object()) && !value.is_object() =>
            {
                let inner = map.values_mut().next().expect("a variant has one entry");
                *inner = (*value).clone();
            }
            other => *other = (*value).clone(),
        }
    }
    let changed: ExperimentSpec = serde_json::from_value(tree).map_err(|e| {
        let names: Vec<String> = values.iter().map(|(p, v)| format!("`{p}` = {}", show(v))).collect();
        Error::argument(format!("{}: {} does not fit the spec: {e}", file.display(), names.join(", ")))
    })?;
    // The spec's own checks (a positive lr, a dropout below 1...) on the text it would be stored as.
    let text = changed.to_ron();
    ExperimentSpec::parse(&text, Path::new("sweep trial")).map_err(|e| {
        let names: Vec<String> = values.iter().map(|(p, v)| format!("`{p}` = {}", show(v))).collect();
        Error::argument(format!("{}: {}: {e}", file.display(), names.join(", ")))
    })
}

/// A parameter value as a person reads it: `0.002`, `[256, 128]`, `Relu`.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format_float(x),
            _ => n.to_string(),
        },
        Value::Array(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// Four significant digits, in scientific notation when small: 0.00123 reads `1.23e-3`.
pub fn format_float(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.01 {
        let s = format!("{x:.2e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" { "0".into() } else { s.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> ExperimentSpec {
        crate::ml::spec::resolve("digits-mlp", Path::new("models")).unwrap().0
    }

    #[test]
    fn paths_pass_through_variants_and_keep_newtype_variants() {
        let spec = mlp();
        let lr = serde_json::json!(0.01);
        let hidden = serde_json::json!([64]);
        let batch = serde_json::json!(64);
        let out = apply(
            &spec,
            &[("optimizer.lr", &lr), ("model.hidden", &hidden), ("batch", &batch)],
            Path::new("s.sweep.ron"),
        )
        .unwrap();
        assert_eq!(out.optimizer.lr(), 0.01);
        assert_eq!(out.batch, crate::ml::spec::Batching::Mini(64));
        assert!(out.params()["model.hidden"] == "[64]", "{:?}", out.params());
        let paths = valid_paths(&spec);
        for p in ["optimizer.lr", "model.hidden", "model.dropout", "batch", "epochs", "seed"] {
            assert!(paths.contains(&p.to_string()), "{p} in {paths:?}");
        }
    }

    #[test]
    fn unknown_paths_and_wrong_types_are_named() {
        let spec = mlp();
        let v = serde_json::json!(1);
        let err = apply(&spec, &[("optimizer.momentum_x", &v)], Path::new("s.sweep.ron")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`optimizer.momentum_x` is not a field") && msg.contains("optimizer.lr"),
            "{msg}"
        );
        let text = serde_json::json!("many");
        let msg = apply(&spec, &[("epochs", &text)], Path::new("s.sweep.ron")).unwrap_err().to_string();
        assert!(msg.contains("`epochs` = many") && msg.contains("invalid type"), "{msg}");
        // A value serde takes and the spec's checks refuse.
        let neg = serde_json::json!(-0.5);
        let msg = apply(&spec, &[("optimizer.lr", &neg)], Path::new("s.sweep.ron")).unwrap_err().to_string();
        assert!(msg.contains("lr"), "{msg}");
    }
}
