//! The Service view's try-it pane (`y`): a `curl` line ready to paste and a sample request body
//! for the served model, made from the model's real input (its fitted preprocessing: the raw
//! input's size and the training data's range), so the request is one the running service
//! accepts. The body is written to a file beside the store (`<runs-dir>/try-it/<model>.json`) by
//! the event loop, since a 64-value body does not paste well from a terminal.

use std::path::PathBuf;

use super::keys::KeyCommand;
use crate::ml::data::InputShape;
use crate::ml::data::preprocess::Pipeline;

/// A ready request.
#[derive(Debug, Clone, PartialEq)]
pub struct TrySample {
    pub model: String,
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// Where the body was written, for `curl -d @FILE`.
    pub file: Option<PathBuf>,
    /// What the body holds, in words (`1 input of 64 values in 0-16`).
    pub about: String,
}

impl TrySample {
    /// The predict route of the model.
    pub fn route(&self) -> String {
        format!("{}/v1/models/{}/predict", self.url.trim_end_matches('/'), self.model)
    }

    /// The `curl` line: the key from `$VIGIL_KEY` (the console never shows a key twice).
    pub fn curl(&self) -> String {
        let data = match &self.file {
            Some(f) => format!("@{}", f.display()),
            None => format!("'{}'", self.body),
        };
        format!(
            "curl -s {} -H \"Authorization: Bearer $VIGIL_KEY\" -H 'Content-Type: application/json' -d {data}",
            self.route()
        )
    }
}

/// The pane's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TryIt {
    pub on: bool,
    pub sample: Option<TrySample>,
    pub error: Option<String>,
    /// Lines scrolled down.
    pub scroll: u16,
}

impl TryIt {
    pub fn apply(&mut self, r: Result<TrySample, String>) {
        match r {
            Ok(s) => {
                self.sample = Some(s);
                self.error = None;
            }
            Err(e) => {
                self.sample = None;
                self.error = Some(e);
            }
        }
    }
}

/// What the pane needs now: a sample for the model the console serves when the pane is on (the
/// event loop builds it: [`KeyCommand::Sample`]), nothing otherwise.
pub fn refresh(app: &mut crate::tui::app::App) -> Vec<crate::tui::app::Effect> {
    use crate::tui::app::{Effect, ServerState};
    let t = &mut app.keys.try_it;
    if !t.on {
        return vec![];
    }
    match &app.service.server {
        ServerState::Running { url, run, models } => {
            // "digits-mlp 3fa2c1" → the name the route takes.
            let model = models.first().and_then(|m| m.split_whitespace().next()).unwrap_or_default();
            vec![Effect::Keys(KeyCommand::Sample {
                run: run.clone(),
                model: model.to_string(),
                url: url.clone(),
            })]
        }
        _ => {
            t.sample = None;
            t.error = None;
            vec![]
        }
    }
}

/// A sample body for a model with this preprocessing: one input in the middle of the training
/// range (numbers), or one short text.
pub fn sample_body(p: &Pipeline) -> (serde_json::Value, String) {
    if matches!(p.input, InputShape::Text { .. }) {
        let text = "a short example to classify";
        return (serde_json::json!({ "texts": [text] }), "1 text".into());
    }
    let shape = p.raw_shape.as_ref().unwrap_or(&p.input);
    let n = shape.numel();
    let (lo, hi) = p.raw_range.unwrap_or((0.0, 1.0));
    // The midpoint, rounded so the body stays readable; always inside the accepted range.
    let mid = ((lo as f64 + hi as f64) / 2.0 * 100.0).round() / 100.0;
    let about =
        format!("1 input of {n} values ({}), each {mid} (training range {lo}–{hi})", shape.describe());
    (serde_json::json!({ "inputs": [vec![mid; n]] }), about)
}

/// The sample request for `model` served at `url`.
pub fn sample(p: &Pipeline, model: &str, url: &str) -> TrySample {
    let (body, about) = sample_body(p);
    TrySample {
        model: model.to_string(),
        url: url.to_string(),
        body: serde_json::to_string(&body).expect("json values serialise"),
        file: None,
        about,
    }
}
