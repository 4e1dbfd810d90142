//! The Service view's API keys panel (`ctrl-k`): the keys of the store's key file, a small form
//! to create one with scopes and limits, the new key shown once (then only its prefix), and
//! revoking with a confirmation. The rules and the file are [`crate::serve::keys::KeyStore`]'s,
//! the same `vigil keys` uses: this is only a front end. The file is read and written by the
//! event loop ([`KeyCommand`] in, [`KeysEvent`] back), never here.
//!
//! While the panel is open it has the keys (see [`key`]): ↑↓ pick, `n` new, `d` revoke, `r`
//! reload, Esc closes.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::try_it::{TryIt, TrySample};
use super::{App, Effect, Level, View};
use crate::serve::keys::{
    Guard, KeyRecord, KeyStatus, NewKey, parse_budget, parse_duration, parse_rate, parse_scopes,
};
use crate::store::RunId;

/// What the event loop does with the key file (and the try-it pane's sample).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyCommand {
    List,
    Create(Box<NewKeySpec>),
    Revoke(String),
    /// Build the try-it sample for a served run (reads its preprocessing).
    Sample {
        run: RunId,
        model: String,
        url: String,
    },
}

/// A key to create, as the form checked it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKeySpec {
    pub name: String,
    pub scopes: Vec<crate::serve::keys::Scope>,
    pub expires_in: Option<std::time::Duration>,
    pub rate: Option<crate::serve::keys::RateLimit>,
    pub budget: Option<crate::serve::keys::Budget>,
    pub output: crate::serve::policy::OutputPolicy,
    /// Language models: tokens per minute, token budget, logprobs allowed.
    pub generate: crate::serve::keys::GeneratePolicy,
}

impl NewKeySpec {
    pub fn into_new_key(self) -> NewKey {
        NewKey {
            name: self.name,
            scopes: self.scopes,
            expires_in: self.expires_in,
            rate: self.rate,
            budget: self.budget,
            output: self.output,
            guard: Guard::default(),
            generate: self.generate,
        }
    }
}

/// What the event loop answers.
#[derive(Debug, Clone, PartialEq)]
pub enum KeysEvent {
    Listed(Result<Vec<KeyRecord>, String>),
    /// The record and the key itself (shown once).
    Created(Result<(KeyRecord, String), String>),
    Revoked(Result<(String, bool), String>),
    Sample(Result<TrySample, String>),
}

/// One field of the create form.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyField {
    pub label: &'static str,
    pub value: String,
    pub hint: &'static str,
}

/// The create form: text fields checked with the parsers `vigil keys create` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyForm {
    pub fields: Vec<KeyField>,
    pub focus: usize,
    pub error: Option<String>,
}

impl Default for KeyForm {
    fn default() -> Self {
        let f = |label, value: &str, hint| KeyField { label, value: value.to_string(), hint };
        KeyForm {
            fields: vec![
                f("name", "", "letters, digits, - _ ."),
                f("scopes", "predict", "predict, explain, admin, generate, embed (comma-separated)"),
                f("rate", "100", "requests per second, or none"),
                f("burst", "", "requests at once (default: twice the rate)"),
                f("budget", "none", "e.g. 10000/day, or none"),
                f("expires", "", "e.g. 30d, 12h (empty: never)"),
                f("output", "full", "full, label, top-k:K, round:D"),
                f("tokens/min", "none", "language models: tokens a minute, or none"),
                f("tok budget", "none", "language models: e.g. 200000/day, or none"),
                f("logprobs", "none", "language models: none, or K alternatives a token"),
            ],
            focus: 0,
            error: None,
        }
    }
}

impl KeyForm {
    fn value(&self, label: &str) -> &str {
        self.fields.iter().find(|f| f.label == label).map_or("", |f| f.value.trim())
    }

    /// The key to create, or what is wrong (the field named).
    pub fn check(&self) -> Result<NewKeySpec, String> {
        let name = self.value("name").to_string();
        crate::serve::keys::check_name(&name).map_err(|e| e.to_string())?;
        let scopes = parse_scopes(self.value("scopes")).map_err(|e| format!("scopes: {e}"))?;
        let burst = match self.value("burst") {
            "" => None,
            b => Some(b.parse::<u32>().map_err(|_| format!("burst: {b:?} is not a whole number"))?),
        };
        let rate = parse_rate(self.value("rate"), burst).map_err(|e| format!("rate: {e}"))?;
        let budget = parse_budget(self.value("budget")).map_err(|e| format!("budget: {e}"))?;
        let expires_in = match self.value("expires") {
            "" | "never" => None,
            e => Some(parse_duration(e).map_err(|e| format!("expires: {e}"))?),
        };
        let output = self.value("output").parse().map_err(|e| format!("output: {e}"))?;
        let generate = crate::serve::keys::GeneratePolicy {
            tokens_per_minute: crate::serve::keys::parse_tokens_per_minute(self.value("tokens/min"))
                .map_err(|e| format!("tokens/min: {e}"))?,
            token_budget: parse_budget(self.value("tok budget")).map_err(|e| format!("tok budget: {e}"))?,
            logprobs: crate::serve::keys::parse_logprobs(self.value("logprobs"))
                .map_err(|e| format!("logprobs: {e}"))?,
        };
        Ok(NewKeySpec { name, scopes, expires_in, rate, budget, output, generate })
    }
}

/// The panel's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeysState {
    /// The panel is open (it has the keys).
    pub open: bool,
    pub keys: Vec<KeyRecord>,
    pub cursor: usize,
    pub form: Option<KeyForm>,
    /// A key just created: (name, key). Shown until the next key press, then forgotten.
    pub secret: Option<(String, String)>,
    /// A key to revoke once the user says yes.
    pub confirm_revoke: Option<String>,
    /// Why the key file could not be read or changed.
    pub error: Option<String>,
    /// The try-it pane.
    pub try_it: TryIt,
}

/// `ctrl-k`: open the panel (in the Service view) and read the key file.
pub fn open(app: &mut App) -> Vec<Effect> {
    if app.view != View::Service {
        app.show(View::Service);
    }
    app.keys.open = true;
    app.keys.error = None;
    vec![Effect::Keys(KeyCommand::List)]
}

/// A key press while the panel is open; `None` when it is closed (the key goes on as usual).
pub fn key(app: &mut App, k: KeyEvent) -> Option<Vec<Effect>> {
    if !app.keys.open || app.view != View::Service {
        return None;
    }
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    let s = &mut app.keys;
    // The secret goes with the first key press after it was shown: it is never kept.
    if s.secret.take().is_some() {
        return Some(vec![]);
    }
    if let Some(name) = s.confirm_revoke.take() {
        if matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
            return Some(vec![Effect::Keys(KeyCommand::Revoke(name))]);
        }
        return Some(vec![]);
    }
    if let Some(form) = s.form.as_mut() {
        let last = form.fields.len() - 1;
        match k.code {
            KeyCode::Esc => s.form = None,
            KeyCode::Char('s') if ctrl => return Some(submit(s)),
            KeyCode::Enter if form.focus == last || ctrl => return Some(submit(s)),
            KeyCode::Enter | KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1).min(last),
            KeyCode::BackTab | KeyCode::Up => form.focus = form.focus.saturating_sub(1),
            KeyCode::Backspace => {
                form.fields[form.focus].value.pop();
            }
            KeyCode::Char(c) if !ctrl => form.fields[form.focus].value.push(c),
            _ => {}
        }
        return Some(vec![]);
    }
    match k.code {
        KeyCode::Esc | KeyCode::Char('q') => s.open = false,
        KeyCode::Char('k') if ctrl => s.open = false,
        KeyCode::Up | KeyCode::Char('k') => s.cursor = s.cursor.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => s.cursor = (s.cursor + 1).min(s.keys.len().saturating_sub(1)),
        KeyCode::Char('n') => s.form = Some(KeyForm::default()),
        KeyCode::Char('r') => return Some(vec![Effect::Keys(KeyCommand::List)]),
        KeyCode::Char('d') | KeyCode::Delete => match s.keys.get(s.cursor) {
            Some(rec) if rec.revoked.is_none() => s.confirm_revoke = Some(rec.name.clone()),
            Some(rec) => {
                let msg = format!("key {:?} is revoked already", rec.name);
                app.say(Level::Warn, msg);
            }
            None => {}
        },
        KeyCode::Char('c') if ctrl => return Some(app.act(crate::tui::keymap::Action::Quit)),
        _ => {}
    }
    Some(vec![])
}

fn submit(s: &mut KeysState) -> Vec<Effect> {
    let Some(form) = s.form.as_mut() else { return vec![] };
    match form.check() {
        Ok(spec) => vec![Effect::Keys(KeyCommand::Create(Box::new(spec)))],
        Err(e) => {
            form.error = Some(e);
            vec![]
        }
    }
}

/// What the event loop answered.
pub fn apply(app: &mut App, e: KeysEvent) {
    match e {
        KeysEvent::Listed(Ok(keys)) => {
            app.keys.cursor = app.keys.cursor.min(keys.len().saturating_sub(1));
            app.keys.keys = keys;
            app.keys.error = None;
        }
        KeysEvent::Listed(Err(e)) => app.keys.error = Some(e),
        KeysEvent::Created(Ok((rec, key))) => {
            app.say(Level::Info, format!("created key {:?}: copy it now, it is shown once", rec.name));
            app.keys.form = None;
            app.keys.secret = Some((rec.name.clone(), key));
            app.keys.cursor = app.keys.keys.len();
            app.keys.keys.push(rec);
        }
        KeysEvent::Created(Err(e)) => match app.keys.form.as_mut() {
            Some(f) => f.error = Some(e),
            None => app.say(Level::Error, e),
        },
        KeysEvent::Revoked(Ok((name, changed))) => {
            let now = crate::serve::keys::rfc3339(time::OffsetDateTime::now_utc());
            if let Some(k) = app.keys.keys.iter_mut().find(|k| k.name == name) {
                k.revoked.get_or_insert(now);
            }
            let msg = if changed {
                format!("revoked key {name:?}; a running server refuses it within a second")
            } else {
                format!("key {name:?} was revoked already")
            };
            app.say(Level::Info, msg);
        }
        KeysEvent::Revoked(Err(e)) => app.say(Level::Error, e),
        KeysEvent::Sample(r) => app.keys.try_it.apply(r),
    }
}

/// A key's status word now.
pub fn status_word(k: &KeyRecord) -> &'static str {
    match k.status(time::OffsetDateTime::now_utc()) {
        KeyStatus::Active => "active",
        KeyStatus::Expired(_) => "expired",
        KeyStatus::Revoked(_) => "revoked",
    }
}
