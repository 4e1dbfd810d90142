//! The keymap: which key does which [`Action`]. Defaults come from `config/keymap.ron` (embedded);
//! a user's file (`--keymap FILE`, or `$XDG_CONFIG_HOME/vigil/keymap.ron`) overrides single keys.
//! The actions' doc comments are the help overlay's text, so the help can never disagree with
//! the keys.

use std::collections::BTreeMap;
use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::{Deserialize, Serialize};
use strum::{EnumIter, EnumMessage, IntoEnumIterator};

use crate::error::{ConfigError, Error, Result, locate};

/// Everything a key can do in the console.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, EnumIter, EnumMessage,
)]
pub enum Action {
    /// Quit (asks first when runs are training)
    Quit,
    /// Show or hide this help
    Help,
    /// Go back: close a dialog, clear the filter, leave a view
    Back,
    /// Overview: active runs, live loss, system
    ShowOverview,
    /// Runs: the table of every run
    ShowRuns,
    /// Run detail: curves, evaluation, parameters, checkpoints
    ShowDetail,
    /// Compare: the marked runs' curves overlaid
    ShowCompare,
    /// Logs: the selected run's event log
    ShowLogs,
    /// System: CPU, memory and GPU usage
    ShowSystem,
    /// Explain: attributions of the selected run's test predictions
    ShowExplain,
    /// Service: the model service's access log, traffic and keys
    ShowService,
    /// Security: robustness curves, the extraction watch per key, flagged requests
    ShowSecurity,
    /// Sweeps: hyperparameter sweeps, their trials, the best so far
    ShowSweeps,
    /// Playground: type a prompt to a language model, watch the completion stream, explain a token
    ShowPlayground,
    /// Load a language model into the Playground (:llm PATH.gguf)
    LoadLanguageModel,
    /// Messages: every message the status line showed, notices of runs that ended first
    ShowMessages,
    /// Serve the selected run as an API, or stop serving
    ToggleService,
    /// Service: show only the next status class (2xx, 4xx, 5xx, all)
    ServiceStatusFilter,
    /// Service: show only the next key's requests, or all
    ServiceKeyFilter,
    /// Service: show only the next route's requests, or all
    ServiceRouteFilter,
    /// Service: show only requests a detector flagged, or all
    ServiceFlaggedOnly,
    /// Explain: jump to the next misclassified example
    NextMistake,
    /// Explain: show only examples of the next class
    CycleClass,
    /// Explain: the example beside its adversarial version, or alone
    ToggleAdversarial,
    /// Explain: the next saved attack (method and ε) to show
    NextAttack,
    /// Explain: switch between test examples and requests from the service's access log
    ExplainRequests,
    /// Overview: pin the run the chart shows, or unpin it to follow the training run again
    PinRun,
    /// Move up
    Up,
    /// Move down
    Down,
    /// Move left / chart cursor left / previous example
    Left,
    /// Move right / chart cursor right / next example
    Right,
    /// Page up
    PageUp,
    /// Page down
    PageDown,
    /// First row
    Top,
    /// Last row
    Bottom,
    /// Open the selected run's detail; Service: explain the request under the cursor
    Open,
    /// Mark or unmark the run for comparison, then move to the next (mark several in a row)
    ToggleMark,
    /// Filter runs: text, status:running, spec:X, tag:X, lr<0.01
    Filter,
    /// Command line (Tab completes)
    Command,
    /// New run from a spec, with a form to edit it
    NewRun,
    /// Clone the selected run with edits
    CloneRun,
    /// Pause or resume the selected run
    PauseResume,
    /// Stop the selected run (asks first; checkpoint kept)
    StopRun,
    /// Evaluate the best checkpoint on the test split
    Evaluate,
    /// Delete or archive the selected run (asks first)
    DeleteRun,
    /// The archived runs: look at them and restore one (Enter)
    ShowArchived,
    /// Next colour theme
    CycleTheme,
    /// Sort by the next column
    SortNext,
    /// Reverse the sort order
    SortReverse,
    /// Next tab in the run detail; elsewhere: focus the next panel
    NextTab,
    /// Chart: next metric · Explain: next method (ig first: it ranks tokens)
    NextMetric,
    /// Chart: EMA smoothing on/off
    ToggleSmoothing,
    /// Chart: more smoothing
    SmoothMore,
    /// Chart: less smoothing
    SmoothLess,
    /// Chart: logarithmic y axis on/off
    ToggleLogScale,
    /// Chart: x axis by step, epoch or wall time
    CycleXAxis,
    /// Chart: zoom in around the cursor
    ZoomIn,
    /// Chart: zoom out
    ZoomOut,
    /// Chart: pan left
    PanLeft,
    /// Chart: pan right
    PanRight,
    /// Chart: reset zoom and cursor
    ResetZoom,
    /// Export the visible chart's series to CSV
    ExportCsv,
    /// Export the visible chart to PNG
    ExportPng,
    /// Tag the selected run (:tag NAME adds, :tag -NAME removes; filter with tag:NAME)
    TagRun,
    /// Write a note on the selected run (:note TEXT; :note alone clears it)
    NoteRun,
    /// Runs: the columns of hyperparameters against final metrics, or the usual table
    ToggleColumns,
    /// Service: API keys: create (scopes, limits), show once, revoke
    ManageKeys,
    /// Service: the try-it pane: a ready curl line and a sample request for the model
    TryIt,
    /// Focus the previous panel of the view
    FocusPrev,
    /// Zoom the focused panel to the whole screen, or back
    ZoomPane,
    /// Search: previous match (n: next match while a search is set; / starts one in Logs and help)
    SearchPrev,
    /// Does nothing (to unbind a default key)
    Nothing,
}

impl Action {
    /// The help text (the variant's doc comment).
    pub fn describe(&self) -> &'static str {
        self.get_documentation().unwrap_or("")
    }
}

/// A key with its modifiers, as written in keymap files: `q`, `G`, `?`, `ctrl-c`, `enter`,
/// `pgdn`, `f1`, `alt-x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub code: KeyCodeOrd,
    pub ctrl: bool,
    pub alt: bool,
}

/// `KeyCode` with an order, so that keymaps list keys deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyCodeOrd {
    Char(char),
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    Delete,
    F(u8),
}

impl Key {
    /// Parses a key name; the error says what is allowed.
    pub fn parse(text: &str) -> std::result::Result<Key, String> {
        let mut ctrl = false;
        let mut alt = false;
        let mut rest = text;
        loop {
            if let Some(r) = rest.strip_prefix("ctrl-").or_else(|| rest.strip_prefix("ctrl+")) {
                ctrl = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("alt-").or_else(|| rest.strip_prefix("alt+")) {
                alt = true;
                rest = r;
            } else {
                break;
            }
        }
        let code = match rest {
            "enter" => KeyCodeOrd::Enter,
            "esc" => KeyCodeOrd::Esc,
            "tab" => KeyCodeOrd::Tab,
            "backtab" | "shift-tab" => KeyCodeOrd::BackTab,
            "backspace" => KeyCodeOrd::Backspace,
            "space" => KeyCodeOrd::Char(' '),
            "up" => KeyCodeOrd::Up,
            "down" => KeyCodeOrd::Down,
            "left" => KeyCodeOrd::Left,
            "right" => KeyCodeOrd::Right,
            "pgup" | "pageup" => KeyCodeOrd::PageUp,
            "pgdn" | "pagedown" => KeyCodeOrd::PageDown,
            "home" => KeyCodeOrd::Home,
            "end" => KeyCodeOrd::End,
            "delete" | "del" => KeyCodeOrd::Delete,
            f if f.len() >= 2
                && f.starts_with('f')
                && f[1..].parse::<u8>().is_ok_and(|n| (1..=12).contains(&n)) =>
            {
                KeyCodeOrd::F(f[1..].parse().expect("checked"))
            }
            c if c.chars().count() == 1 => KeyCodeOrd::Char(c.chars().next().expect("one char")),
            _ => {
                return Err(format!(
                    "unknown key {text:?}: use a single character, enter, esc, tab, backtab, backspace, space, \
                     up, down, left, right, pgup, pgdn, home, end, delete or f1-f12, with optional ctrl- or alt-"
                ));
            }
        };
        Ok(Key { code, ctrl, alt })
    }

    /// The key of a terminal event (shift is part of the character).
    pub fn from_event(e: &KeyEvent) -> Option<Key> {
        let code = match e.code {
            KeyCode::Char(c) => KeyCodeOrd::Char(c),
            KeyCode::Enter => KeyCodeOrd::Enter,
            KeyCode::Esc => KeyCodeOrd::Esc,
            KeyCode::Tab => KeyCodeOrd::Tab,
            KeyCode::BackTab => KeyCodeOrd::BackTab,
            KeyCode::Backspace => KeyCodeOrd::Backspace,
            KeyCode::Up => KeyCodeOrd::Up,
            KeyCode::Down => KeyCodeOrd::Down,
            KeyCode::Left => KeyCodeOrd::Left,
            KeyCode::Right => KeyCodeOrd::Right,
            KeyCode::PageUp => KeyCodeOrd::PageUp,
            KeyCode::PageDown => KeyCodeOrd::PageDown,
            KeyCode::Home => KeyCodeOrd::Home,
            KeyCode::End => KeyCodeOrd::End,
            KeyCode::Delete => KeyCodeOrd::Delete,
            KeyCode::F(n) => KeyCodeOrd::F(n),
            _ => return None,
        };
        Some(Key {
            code,
            ctrl: e.modifiers.contains(KeyModifiers::CONTROL),
            alt: e.modifiers.contains(KeyModifiers::ALT),
        })
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ctrl {
            f.write_str("ctrl-")?;
        }
        if self.alt {
            f.write_str("alt-")?;
        }
        match self.code {
            KeyCodeOrd::Char(' ') => f.write_str("space"),
            KeyCodeOrd::Char(c) => write!(f, "{c}"),
            KeyCodeOrd::Enter => f.write_str("enter"),
            KeyCodeOrd::Esc => f.write_str("esc"),
            KeyCodeOrd::Tab => f.write_str("tab"),
            KeyCodeOrd::BackTab => f.write_str("backtab"),
            KeyCodeOrd::Backspace => f.write_str("backspace"),
            KeyCodeOrd::Up => f.write_str("↑"),
            KeyCodeOrd::Down => f.write_str("↓"),
            KeyCodeOrd::Left => f.write_str("←"),
            KeyCodeOrd::Right => f.write_str("→"),
            KeyCodeOrd::PageUp => f.write_str("pgup"),
            KeyCodeOrd::PageDown => f.write_str("pgdn"),
            KeyCodeOrd::Home => f.write_str("home"),
            KeyCodeOrd::End => f.write_str("end"),
            KeyCodeOrd::Delete => f.write_str("delete"),
            KeyCodeOrd::F(n) => write!(f, "f{n}"),
        }
    }
}

/// Keys to actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Keymap {
    bindings: BTreeMap<Key, Action>,
    /// The user's file laid over the defaults, or where one would be read: what the help
    /// points to (the shipped `config/keymap.ron` is inside the binary, not on the user's disk).
    pub user_file: Option<std::path::PathBuf>,
}

/// The default keymap shipped with Vigil.
pub const DEFAULT_KEYMAP: &str = include_str!("../../config/keymap.ron");

fn parse_file(text: &str, origin: &Path) -> Result<BTreeMap<Key, Action>> {
    let raw: BTreeMap<String, Action> =
        ron::Options::default().from_str(text).map_err(|e| ConfigError::from_ron(&e, text, origin))?;
    let mut out = BTreeMap::new();
    for (name, action) in raw {
        let key = Key::parse(&name).map_err(|msg| {
            let (line, col) = locate(text, &format!("\"{name}\""));
            ConfigError::at(origin, line, col, Some(&name), msg)
        })?;
        out.insert(key, action);
    }
    Ok(out)
}

impl Keymap {
    /// The built-in keymap.
    pub fn defaults() -> Self {
        Keymap {
            bindings: parse_file(DEFAULT_KEYMAP, Path::new("config/keymap.ron"))
                .expect("the shipped keymap parses (a test checks it)"),
            user_file: None,
        }
    }

    /// The defaults with a user's file laid over them.
    pub fn load(user: Option<&Path>) -> Result<Self> {
        let mut map = Self::defaults();
        if let Some(path) = user {
            let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
                // The user named a file that is not there: their input, not the machine's.
                std::io::ErrorKind::NotFound => {
                    Error::not_found(format!("keymap {}: no such file", path.display()))
                }
                _ => Error::io(path, e),
            })?;
            map.bindings.extend(parse_file(&text, path)?);
        }
        map.user_file = user.map(Path::to_path_buf).or_else(user_keymap_location);
        Ok(map)
    }

    /// The action bound to a key event.
    pub fn action(&self, e: &KeyEvent) -> Option<Action> {
        let key = Key::from_event(e)?;
        self.bindings.get(&key).copied().filter(|a| *a != Action::Nothing)
    }

    /// The keys bound to an action, for hints and help: plain keys before modified ones.
    pub fn keys_for(&self, action: Action) -> Vec<Key> {
        let mut keys: Vec<Key> =
            self.bindings.iter().filter(|(_, a)| **a == action).map(|(k, _)| *k).collect();
        keys.sort_by_key(|k| (k.ctrl || k.alt, !matches!(k.code, KeyCodeOrd::Char(_)), *k));
        keys
    }

    /// The first key of an action, as text (for the footer's hints).
    pub fn hint(&self, action: Action) -> String {
        self.keys_for(action).first().map(|k| k.to_string()).unwrap_or_else(|| "?".into())
    }

    /// Every action with its keys and description, in the order of [`Action`].
    pub fn help(&self) -> Vec<(String, &'static str)> {
        Action::iter()
            .filter(|a| *a != Action::Nothing)
            .map(|a| {
                let keys: Vec<String> = self.keys_for(a).iter().map(|k| k.to_string()).collect();
                (if keys.is_empty() { "(unbound)".to_string() } else { keys.join(" ") }, a.describe())
            })
            .collect()
    }
}

/// The user's keymap file, if one exists in the configuration folder.
pub fn user_keymap_path() -> Option<std::path::PathBuf> {
    user_keymap_location().filter(|p| p.exists())
}

/// Where the user's keymap file is looked for: `$XDG_CONFIG_HOME/vigil/keymap.ron`, or
/// `~/.config/vigil/keymap.ron`.
pub fn user_keymap_location() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))?;
    Some(base.join("vigil").join("keymap.ron"))
}

/// The help's pointer to the user's keymap: the file in use or the one that would be read,
/// with the home folder as `~`.
pub fn keymap_hint(km: &Keymap) -> String {
    let Some(p) = &km.user_file else { return "~/.config/vigil/keymap.ron".into() };
    let text = p.display().to_string();
    match std::env::var("HOME") {
        Ok(home) if !home.is_empty() && text.starts_with(&home) => format!("~{}", &text[home.len()..]),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_help_text_and_the_defaults_bind_them() {
        let km = Keymap::defaults();
        for a in Action::iter().filter(|a| *a != Action::Nothing) {
            assert!(!a.describe().is_empty(), "{a:?} has no doc comment");
            assert!(!km.keys_for(a).is_empty(), "{a:?} has no default key");
        }
    }

    #[test]
    fn user_file_overrides_single_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.ron");
        std::fs::write(&p, "{ \"x\": Nothing, \"ctrl-s\": StopRun }").unwrap();
        let km = Keymap::load(Some(&p)).unwrap();
        let ev = |c: char, m: KeyModifiers| KeyEvent::new(KeyCode::Char(c), m);
        assert_eq!(km.action(&ev('x', KeyModifiers::NONE)), None);
        assert_eq!(km.action(&ev('s', KeyModifiers::CONTROL)), Some(Action::StopRun));
        assert_eq!(km.action(&ev('q', KeyModifiers::NONE)), Some(Action::Quit), "other defaults stay");
    }

    #[test]
    fn a_missing_file_is_the_users_input_and_the_help_points_to_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Keymap::load(Some(&dir.path().join("none.ron"))).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("no such file"), "{err}");
        let p = dir.path().join("k.ron");
        std::fs::write(&p, "{}").unwrap();
        let km = Keymap::load(Some(&p)).unwrap();
        assert_eq!(keymap_hint(&km), p.display().to_string());
        assert!(keymap_hint(&Keymap::defaults()).starts_with("~/.config/vigil/"), "not the repository's");
    }

    #[test]
    fn bad_keymaps_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.ron");
        std::fs::write(&p, "{\n  \"ctrl-shift-q\": Quit,\n}").unwrap();
        let err = Keymap::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("k.ron:2:3") && err.contains("unknown key"), "{err}");
        std::fs::write(&p, "{ \"q\": Quitt }").unwrap();
        let err = Keymap::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("k.ron:1:") && err.contains("Quitt"), "{err}");
    }
}
