//! Reading a spec: RON with the two extensions specs use, the checks serde cannot make (each
//! error at the field's line and column), and the flat `dotted.key = value` view of a spec.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::error::{ConfigError, Error, Result};

const RON_EXTENSIONS: ron::extensions::Extensions =
    ron::extensions::Extensions::IMPLICIT_SOME.union(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES);

fn ron_options() -> ron::Options {
    // Implicit `Some` lets a spec say `early_stopping: (patience: 5)` instead of `Some((...))`,
    // and unwrapped variant newtypes `Tokenize(max_len: 24)` instead of `Tokenize((max_len: 24))`.
    ron::Options::default().with_default_extension(RON_EXTENSIONS)
}

/// The accepted form of each data source that takes fields, for errors: the fields are named.
pub const DATA_SOURCE_FORMS: &str = "a data source names its fields: `Csv(path: \"data.csv\", label: \"class\")` \
     (optionally `header: false`), `Idx(images: \"train-images-idx3-ubyte\", labels: \"train-labels-idx1-ubyte\")`, \
     `Tsv(path: \"texts.tsv\")`, `Waveforms(samples: 400, length: 64)`";

impl ExperimentSpec {
    /// Parses and checks a spec from RON text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let spec: ExperimentSpec = ron_options().from_str(text).map_err(|e| {
            let mut err = ConfigError::from_ron(&e, text, origin);
            // The two extensions change what RON users may be used to writing; say so.
            let here = text.lines().nth(err.line.saturating_sub(1)).unwrap_or("");
            let before: String = here.chars().take(err.col.saturating_sub(1)).collect();
            // Inside a data source's parentheses with no field name yet: `Csv("a.csv", "y")`.
            let positional = before.rfind('(').is_some_and(|open| {
                ["Csv", "Idx", "Tsv", "Waveforms"].iter().any(|s| before[..open].trim_end().ends_with(s))
                    && !before[open..].contains(':')
            });
            // RON reads a bare number where a variant belongs as a bad identifier and suggests
            // `r#32`, which no spec means.
            let number = err
                .msg
                .strip_prefix("Found invalid std identifier \"")
                .and_then(|m| m.split('"').next())
                .filter(|n| n.parse::<f64>().is_ok())
                .map(String::from);
            if let Some(n) = number {
                err.msg = format!("found the number {n} where a name is expected");
                if before.trim_end().ends_with("batch:") {
                    err.msg.push_str(&format!(
                        " (`batch` is `Full`, `Mini({n})` for mini-batches of {n}, or `Stochastic`)"
                    ));
                }
            } else if here.contains("Some(") {
                err.msg.push_str(" (specs leave out `Some`: write `field: (...)` for an optional value)");
            } else if here.contains("((") {
                err.msg.push_str(" (write `Variant(field: ...)` rather than `Variant((field: ...))`)");
            } else if positional {
                err.msg.push_str(&format!(" ({DATA_SOURCE_FORMS})"));
            }
            err
        })?;
        spec.validate(text, origin)?;
        Ok(spec)
    }

    /// Reads and parses a spec file. Relative data paths are resolved against the file's folder
    /// and made absolute, so that a run records exactly which file it read and `eval` from any
    /// directory finds it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut spec = Self::parse(&text, path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let data = &mut spec.data;
        for source in
            std::iter::once(&mut data.source).chain(data.validation.as_mut()).chain(data.test.as_mut())
        {
            source.resolve_paths(&base);
        }
        // A pretrained encoder's folder, like a data file, is found beside the spec.
        if let ModelSpec::Pretrained { path: model, .. } = &mut spec.model
            && !model.starts_with(crate::ml::model::pretrained::CACHE_PREFIX)
            && Path::new(model.as_str()).is_relative()
        {
            let beside = base.join(model.as_str());
            if beside.exists() || !Path::new(model.as_str()).exists() {
                *model = std::path::absolute(&beside).unwrap_or(beside).display().to_string();
            }
        }
        Ok(spec)
    }

    /// Serialises the spec as pretty RON, as stored with a run.
    pub fn to_ron(&self) -> String {
        let pretty = ron::ser::PrettyConfig::new()
            .extensions(RON_EXTENSIONS)
            .depth_limit(4)
            .struct_names(false)
            .enumerate_arrays(false);
        ron::ser::to_string_pretty(self, pretty).expect("a spec always serialises")
    }

    /// Checks the values serde cannot: positive sizes, fractions in range, compatible steps.
    fn validate(&self, text: &str, origin: &Path) -> Result<()> {
        let fail = |field: &str, msg: String| -> Result<()> {
            Err(ConfigError::at_field(text, origin, field, msg).into())
        };
        if self.name.trim().is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return fail(
                "name",
                format!("{:?} must be non-empty and use only letters, digits, '-' and '_'", self.name),
            );
        }
        if self.epochs == 0 {
            return fail("epochs", "must be at least 1".into());
        }
        let s = &self.data.split;
        if !(0.0..1.0).contains(&s.validation) || s.validation <= 0.0 {
            return fail(
                "validation",
                format!("{} must be in (0, 1): validation picks the best checkpoint", s.validation),
            );
        }
        if !(0.0..1.0).contains(&s.test) || s.test <= 0.0 {
            return fail("test", format!("{} must be in (0, 1)", s.test));
        }
        if s.validation + s.test >= 0.9 {
            return fail(
                "split",
                format!(
                    "validation + test = {} leaves too little to train on (at most 0.9)",
                    s.validation + s.test
                ),
            );
        }
        if let Batching::Mini(0) = self.batch {
            return fail("batch", "Mini(size) needs a size of at least 1".into());
        }
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return fail("lr", format!("{lr} must be a positive number"));
        }
        match &self.optimizer {
            Optimizer::Sgd { momentum, .. } if !(0.0..1.0).contains(momentum) => {
                return fail("momentum", format!("{momentum} must be in [0, 1)"));
            }
            Optimizer::Adam { beta1, beta2, .. } | Optimizer::AdamW { beta1, beta2, .. }
                if !(0.0..1.0).contains(beta1) || !(0.0..1.0).contains(beta2) =>
            {
                return fail("beta1", "beta1 and beta2 must be in [0, 1)".into());
            }
            _ => {}
        }
        if let Schedule::Step { every: 0, .. } = self.schedule {
            return fail("every", "a Step schedule needs `every` of at least 1 epoch".into());
        }
        let dropout_ok = |d: f32| (0.0..1.0).contains(&d);
        match &self.model {
            ModelSpec::Mlp { hidden, dropout, .. } => {
                if hidden.contains(&0) {
                    return fail("hidden", "layer widths must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::Cnn { channels, kernel, dense, dropout, .. } => {
                if channels.is_empty() || channels.contains(&0) {
                    return fail("channels", "needs at least one layer of at least 1 channel".into());
                }
                if *kernel == 0 || kernel % 2 == 0 {
                    return fail("kernel", format!("{kernel} must be odd (same padding)"));
                }
                if dense.contains(&0) {
                    return fail("dense", "layer widths must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::Rnn { hidden, layers, dropout, .. } => {
                if *hidden == 0 || *layers == 0 {
                    return fail("hidden", "hidden size and layers must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::Text { embed_dim, hidden, dropout, encoder } => {
                if *embed_dim == 0 || hidden.contains(&0) {
                    return fail("embed_dim", "sizes must be at least 1".into());
                }
                if let TextEncoder::Rnn { hidden: 0, .. } = encoder {
                    return fail("encoder", "the encoder's hidden size must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::TextCnn { embed, widths, filters, dropout } => {
                if *embed == 0 || *filters == 0 {
                    return fail("embed", "embed and filters must be at least 1".into());
                }
                if widths.is_empty() || widths.contains(&0) {
                    return fail(
                        "widths",
                        "lists the convolution widths in tokens, each at least 1 (e.g. [3, 4, 5])".into(),
                    );
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::Transformer { dim, heads, layers, ff, dropout, head, patch, .. } => {
                if *dim == 0 || *heads == 0 || *layers == 0 || *ff == 0 {
                    return fail("dim", "dim, heads, layers and ff must be at least 1".into());
                }
                let text = matches!(self.data.source, DataSource::Topics | DataSource::Tsv { .. });
                if *patch == 0 || (text && *patch != 1) {
                    return fail(
                        "patch",
                        format!("{patch} must be at least 1 (and 1 for text: a token is a word)"),
                    );
                }
                if let DataSource::Waveforms { length, .. } = self.data.source
                    && !length.is_multiple_of(*patch)
                {
                    return fail("patch", format!("{patch} must divide the sequence length {length}"));
                }
                if !dim.is_multiple_of(*heads) {
                    return fail(
                        "heads",
                        format!(
                            "dim {dim} must be a multiple of heads {heads}: each head takes dim / heads values"
                        ),
                    );
                }
                if head.contains(&0) {
                    return fail("head", "layer widths must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::Pretrained { path, head, max_len, dropout, .. } => {
                if path.trim().is_empty() {
                    return fail("path", "names the folder of a pretrained encoder (config.json, model.safetensors, tokenizer.json)".into());
                }
                if head.contains(&0) {
                    return fail("head", "layer widths must be at least 1".into());
                }
                if *max_len == 0 {
                    return fail("max_len", "must be at least 1 token".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::LogReg => {}
        }
        let tokenizes = self.preprocess.iter().any(|p| matches!(p, Preprocess::Tokenize(_)));
        let text_data = matches!(self.data.source, DataSource::Topics | DataSource::Tsv { .. });
        let pretrained = matches!(self.model, ModelSpec::Pretrained { .. });
        let transformer_on_text = text_data && matches!(self.model, ModelSpec::Transformer { .. });
        let text_model =
            matches!(self.model, ModelSpec::Text { .. } | ModelSpec::TextCnn { .. }) || transformer_on_text;
        if transformer_on_text && !tokenizes {
            return fail("preprocess", "a Transformer on text needs a Tokenize step (its vocabulary)".into());
        }
        if text_model && !(text_data && tokenizes) {
            return fail(
                "model",
                "a Text or TextCnn model needs text data (Topics or Tsv) and a Tokenize step".into(),
            );
        }
        if pretrained && !text_data {
            return fail("model", "a Pretrained encoder needs text data (Topics or Tsv)".into());
        }
        if pretrained && tokenizes {
            return fail(
                "preprocess",
                "a Pretrained encoder tokenises with its own tokenizer.json; remove the Tokenize step \
                 (its `max_len` sets the length)"
                    .into(),
            );
        }
        if text_data && !text_model && !pretrained {
            return fail(
                "model",
                "text data needs a Text, TextCnn, Transformer or Pretrained model (other models take numeric inputs)"
                    .into(),
            );
        }
        if !text_data && tokenizes {
            return fail("preprocess", "Tokenize only applies to text data".into());
        }
        if let Some(a) = &self.augment {
            if text_data {
                return fail("augment", "augmentation applies to numeric inputs, not text".into());
            }
            if !(0.0..=1.0).contains(&a.probability) || a.noise < 0.0 {
                return fail("augment", "probability must be in [0, 1] and noise non-negative".into());
            }
        }
        if let Some(dp) = &self.privacy {
            let fail_dp = |field: &str, msg: String| -> Result<()> {
                Err(ConfigError::at_nested(text, origin, "privacy", field, msg).into())
            };
            if self.adversarial.is_some() {
                return fail(
                    "privacy",
                    "DP-SGD and adversarial training cannot be combined: the privacy accountant \
                     does not cover examples made from the current weights"
                        .into(),
                );
            }
            if !(dp.clip_norm.is_finite() && dp.clip_norm > 0.0) {
                return fail_dp(
                    "clip_norm",
                    format!(
                        "{} must be a positive number (the largest per-example gradient norm)",
                        dp.clip_norm
                    ),
                );
            }
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                return fail_dp("delta", format!("{} must be in (0, 1)", dp.delta));
            }
            match (dp.noise_multiplier, dp.target_epsilon) {
                (Some(_), Some(_)) | (None, None) => {
                    return fail(
                        "privacy",
                        "give exactly one of `noise_multiplier` and `target_epsilon`".into(),
                    );
                }
                (Some(sigma), None) if !(sigma.is_finite() && sigma > 0.0) => {
                    return fail_dp("noise_multiplier", format!("{sigma} must be a positive number"));
                }
                (None, Some(eps)) if !(eps.is_finite() && eps > 0.0) => {
                    return fail_dp("target_epsilon", format!("{eps} must be a positive number"));
                }
                _ => {}
            }
        }
        if let Some(a) = &self.adversarial {
            let fail_adv = |field: &str, msg: String| -> Result<()> {
                Err(ConfigError::at_nested(text, origin, "adversarial", field, msg).into())
            };
            if text_data {
                return fail(
                    "adversarial",
                    "adversarial training perturbs numeric inputs, and a text model takes token ids \
                     (`vigil attack` attacks text models in their embedding space)"
                        .into(),
                );
            }
            if !(a.eps.is_finite() && a.eps > 0.0) {
                return fail_adv(
                    "eps",
                    format!("{} must be a positive number (the perturbation's radius)", a.eps),
                );
            }
            if !(a.share > 0.0 && a.share <= 1.0) {
                return fail_adv(
                    "share",
                    format!("{} must be in (0, 1]: the share of each batch attacked", a.share),
                );
            }
            match (a.method, a.steps) {
                (AttackMethod::Fgsm, Some(s)) if s != 1 => {
                    return fail_adv(
                        "steps",
                        format!("FGSM takes one step of eps, not {s}; use Pgd for more"),
                    );
                }
                (AttackMethod::Pgd, Some(s)) if s == 0 || s > 1000 => {
                    return fail_adv("steps", format!("{s} must be between 1 and 1000"));
                }
                _ => {}
            }
            if let Some(s) = a.step_size
                && !(s.is_finite() && s > 0.0)
            {
                return fail_adv("step_size", format!("{s} must be a positive number"));
            }
        }
        if let DataSource::Waveforms { samples, length, .. } = self.data.source
            && (samples < 40 || length < 8)
        {
            return fail("source", "Waveforms needs samples >= 40 and length >= 8".into());
        }
        if let DeviceSpec::Cuda(_) = self.device
            && !cfg!(feature = "cuda")
        {
            return fail("device", "Cuda needs a build with `--features cuda`; use Auto or Cpu".into());
        }
        Ok(())
    }

    /// The spec as flat `dotted.key = value` pairs, for tables, comparisons and filters.
    pub fn params(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let value = serde_json::to_value(self).expect("a spec always serialises");
        flatten("", &value, &mut out);
        out.remove("description");
        out
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    let key = |k: &str| {
        if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") }
    };
    match v {
        Value::Object(map) => {
            // Externally tagged enums serialise as {"Variant": {...}}: keep the variant as the
            // value of the prefix and flatten its fields beside it.
            if map.len() == 1 && !prefix.is_empty() {
                let (variant, inner) = map.iter().next().expect("one entry");
                if variant.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                    out.insert(prefix.to_string(), variant.clone());
                    if let Value::Object(_) = inner {
                        flatten(prefix, inner, out);
                    } else {
                        out.insert(prefix.to_string(), format!("{variant}({})", scalar(inner)));
                    }
                    return;
                }
            }
            for (k, inner) in map {
                flatten(&key(k), inner, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            let parts: Vec<String> = items.iter().map(scalar).collect();
            out.insert(prefix.to_string(), format!("[{}]", parts.join(", ")));
        }
        other => {
            out.insert(prefix.to_string(), scalar(other));
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        // f32 fields (noise, dropout) widen to f64 in JSON: print the short f32 form, 0.02
        // rather than 0.019999999552965164.
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            if (x as f32) as f64 == x { (x as f32).to_string() } else { x.to_string() }
        }
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(scalar).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    if v.is_object() || k.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                        if v.is_null() { k.clone() } else { format!("{k}({})", scalar(v)) }
                    } else {
                        format!("{k}: {}", scalar(v))
                    }
                })
                .collect();
            parts.join(", ")
        }
        other => other.to_string(),
    }
}
