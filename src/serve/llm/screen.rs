//! The sensitive-data screen of completions: e-mail addresses, API-key-like strings (`sk-...`),
//! AWS access key ids (`AKIA...`) and long hex or base64 secrets. `--screen flag` reports what it
//! found in the access log (and flags the line `sensitive`); `redact` also replaces it in the
//! answer with `[REDACTED:<kind>]`; `off` does neither.
//!
//! Completions arrive a token at a time and a secret spans many tokens, so a stream being
//! redacted is screened a word at a time: text is held back until whitespace ends the word it is
//! in (none of the patterns crosses whitespace), or until it passes [`MAX_HELD`] characters.
//! Pure text functions on the `regex` crate (linear time, so a hostile completion cannot make
//! the screen slow); no HTTP.

use std::sync::LazyLock;

use regex::Regex;

/// What the service does with sensitive data in completions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ScreenMode {
    /// Report it in the access log.
    #[default]
    Flag,
    /// Report it and replace it in the answer.
    Redact,
    /// Do not look.
    Off,
}

/// Most characters held back waiting for the end of a word; past it the held text is screened
/// and sent as it is (a "word" that long is base64 or hex, which the patterns match in part).
pub const MAX_HELD: usize = 256;

/// A match that is only a secret if it also passes a check the pattern cannot express (the
/// `regex` crate has no look-ahead): a long run of letters is a word, not base64.
type Check = fn(&str) -> bool;

fn any_check(_: &str) -> bool {
    true
}

/// Base64 secrets mix digits, upper and lower case; a long word or number does not.
fn mixed(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit())
        && text.bytes().any(|b| b.is_ascii_uppercase())
        && text.bytes().any(|b| b.is_ascii_lowercase())
}

/// A hex secret has letters and digits; 32 digits in a row is a number.
fn hex_mixed(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit()) && text.bytes().any(|b| b.is_ascii_alphabetic())
}

/// The kinds, each with its pattern and check, in the order they are tried.
static PATTERNS: LazyLock<Vec<(&'static str, Regex, Check)>> = LazyLock::new(|| {
    let list: [(&str, &str, Check); 5] = [
        ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", any_check),
        ("api_key", r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}", any_check),
        ("aws_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", any_check),
        ("hex_secret", r"\b[0-9a-fA-F]{32,}\b", hex_mixed),
        ("base64_secret", r"[A-Za-z0-9+/]{40,}={0,2}", mixed),
    ];
    list.into_iter()
        .map(|(kind, re, check)| (kind, Regex::new(re).expect("the screen's patterns are valid"), check))
        .collect()
});

/// The kinds of sensitive data in `text`, each once, in pattern order.
pub fn find(text: &str) -> Vec<String> {
    redact(text).1
}

/// `text` with every match replaced by `[REDACTED:<kind>]`, and the kinds found. Kinds are
/// tried in order on what the earlier ones left, so a secret is named once (a hex key is not
/// also base64).
pub fn redact(text: &str) -> (String, Vec<String>) {
    let mut out = text.to_string();
    let mut kinds = Vec::new();
    for (kind, re, check) in PATTERNS.iter() {
        let mut hit = false;
        let replaced = re.replace_all(&out, |caps: &regex::Captures| {
            if check(&caps[0]) {
                hit = true;
                format!("[REDACTED:{kind}]")
            } else {
                caps[0].to_string()
            }
        });
        if hit {
            out = replaced.into_owned();
            kinds.push(kind.to_string());
        }
    }
    (out, kinds)
}

/// Where in `text` something sensitive is (byte ranges, possibly overlapping).
pub fn ranges(text: &str) -> Vec<std::ops::Range<usize>> {
    PATTERNS
        .iter()
        .flat_map(|(_, re, check)| re.find_iter(text).filter(|m| check(m.as_str())).map(|m| m.range()))
        .collect()
}

/// Redacts a completion arriving in pieces: [`Redactor::push`] returns the text that is safe to
/// send now, [`Redactor::finish`] the rest.
#[derive(Debug, Default)]
pub struct Redactor {
    held: String,
    /// Kinds found so far, each once.
    pub found: Vec<String>,
}

impl Redactor {
    /// Takes the next piece; returns the screened text of every word it completed.
    pub fn push(&mut self, piece: &str) -> String {
        self.held.push_str(piece);
        let cut = match self.held.rfind(char::is_whitespace) {
            Some(i) => i + self.held[i..].chars().next().map_or(1, char::len_utf8),
            None if self.held.chars().count() > MAX_HELD => self.held.len(),
            None => return String::new(),
        };
        let ready: String = self.held.drain(..cut).collect();
        self.screen(&ready)
    }

    /// Bytes held back now.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// The held text, screened: the completion is over.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        self.screen(&rest)
    }

    fn screen(&mut self, text: &str) -> String {
        let (out, kinds) = redact(text);
        for k in kinds {
            if !self.found.contains(&k) {
                self.found.push(k);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_found_and_ordinary_text_is_not() {
        assert_eq!(find("Write to ops@example.com for access."), vec!["email"]);
        assert_eq!(find("use sk-abcdefghijklmnop1234 here"), vec!["api_key"]);
        assert_eq!(find("AKIAIOSFODNN7EXAMPLE is the id"), vec!["aws_key"]);
        assert_eq!(
            find("token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            vec!["hex_secret"]
        );
        assert_eq!(find("b64 dGhpcyBpcyBhIHNlY3JldCB0aGF0IGlzIGxvbmcgZW5vdWdo"), vec!["base64_secret"]);
        assert!(find("The quick brown fox jumps over the lazy dog, 1234 times at sk-8.").is_empty());
        // Long words and long numbers are not secrets.
        assert!(find("Donaudampfschifffahrtselektrizitaetenhauptbetriebswerkbauunterbeamten").is_empty());
        assert!(find("12345678901234567890123456789012345678901234567890").is_empty());
    }

    #[test]
    fn a_secret_split_over_tokens_is_redacted_in_the_stream() {
        let text = "The quick brown fox. Write to ops@example.com for access. ";
        let mut r = Redactor::default();
        let mut out = String::new();
        for c in text.chars() {
            out.push_str(&r.push(&c.to_string()));
            assert!(!out.contains("ops@"), "part of the address went out: {out:?}");
        }
        out.push_str(&r.finish());
        assert_eq!(out, "The quick brown fox. Write to [REDACTED:email] for access. ");
        assert_eq!(r.found, vec!["email"]);
    }

    #[test]
    fn held_text_is_bounded() {
        let mut r = Redactor::default();
        let long = "x".repeat(MAX_HELD + 1);
        assert_eq!(r.push(&long), long);
        assert_eq!(r.finish(), "");
    }
}
