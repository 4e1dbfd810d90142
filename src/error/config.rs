//! [`ConfigError`]: the one error of every RON file a user writes (experiment specs, themes,
//! keymaps), with the file, line, column and field; and the one heuristic that finds a field
//! in the file's text when the error comes after parsing (a value serde accepted and a check
//! refused), so that such errors point at the line as parse errors do.

use std::path::{Path, PathBuf};

/// A config file (spec, theme, keymap) that does not parse or does not make sense.
/// Shown as `path:line:col: msg`; `msg` names the field when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {msg}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// The field the error is about, dotted for nested fields (`privacy.delta`), when known.
    pub field: Option<String>,
    /// What is wrong and what was expected.
    pub msg: String,
}

impl ConfigError {
    /// An error at a known place.
    pub fn at(path: &Path, line: usize, col: usize, field: Option<&str>, msg: impl Into<String>) -> Self {
        ConfigError { path: path.to_path_buf(), line, col, field: field.map(str::to_string), msg: msg.into() }
    }

    /// RON's own error, at its span. A value of the wrong type is said to be in the field
    /// written before it (RON only names the type).
    pub fn from_ron(e: &ron::error::SpannedError, text: &str, path: &Path) -> Self {
        use ron::error::Error as E;
        let (line, col) = (e.span.start.line, e.span.start.col);
        let mut msg = e.code.to_string();
        let type_error = matches!(
            e.code,
            E::InvalidValueForType { .. }
                | E::ExpectedFloat
                | E::ExpectedInteger
                | E::ExpectedBoolean
                | E::ExpectedString
                | E::ExpectedArray
                | E::ExpectedOption
                | E::ExpectedStructLike
                | E::ExpectedIdentifier
                | E::IntegerOutOfBounds
                | E::ExpectedDifferentLength { .. }
        );
        let field = match &e.code {
            E::NoSuchStructField { found, .. } => Some(found.clone()),
            E::MissingStructField { field, .. } | E::DuplicateStructField { field, .. } => {
                Some(field.to_string())
            }
            _ => field_before(text, line, col).filter(|_| type_error),
        };
        if type_error
            && let Some(f) = &field
            && !msg.contains(&format!("`{f}`"))
        {
            msg = format!("in field `{f}`: {msg}");
        }
        ConfigError { path: path.to_path_buf(), line, col, field, msg }
    }

    /// A value that parsed but was refused: at `field:` in the text (1:1 when the field is not
    /// written there, a default that another field made invalid).
    pub fn at_field(text: &str, path: &Path, field: &str, msg: impl std::fmt::Display) -> Self {
        let (line, col) = locate(text, field);
        ConfigError {
            path: path.to_path_buf(),
            line,
            col,
            field: Some(field.to_string()),
            msg: format!("field `{field}`: {msg}"),
        }
    }

    /// Like [`ConfigError::at_field`], for `field` of the struct written at `anchor` (a field
    /// whose name another struct also uses, such as `eps`); named `anchor.field`.
    pub fn at_nested(
        text: &str,
        path: &Path,
        anchor: &str,
        field: &str,
        msg: impl std::fmt::Display,
    ) -> Self {
        let (line, col) = locate_after(text, anchor, field);
        let dotted = format!("{anchor}.{field}");
        ConfigError {
            path: path.to_path_buf(),
            line,
            col,
            msg: format!("field `{dotted}`: {msg}"),
            field: Some(dotted),
        }
    }
}

/// The identifier of the `field:` nearest before a (1-based) line and column, so that a type
/// error deep in a file can say which field it is in.
pub fn field_before(text: &str, line: usize, col: usize) -> Option<String> {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            offset += l.char_indices().nth(col.saturating_sub(1)).map_or(l.len(), |(b, _)| b);
            break;
        }
        offset += l.len();
    }
    let before = &text[..offset.min(text.len())];
    let colon = before.rfind(':')?;
    let ident: String = before[..colon]
        .trim_end()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!ident.is_empty() && ident.chars().next().is_some_and(|c| !c.is_ascii_digit())).then_some(ident)
}

/// The 1-based line and column of `needle` in the text, outside `//` comments, or 1:1 when it
/// is not written there. A bare name (a field) must be a whole word followed by `:` or `(`; a
/// quoted needle (`"ctrl+x"`, a map key or a value) matches wherever it is written.
pub fn locate(text: &str, needle: &str) -> (usize, usize) {
    let quoted = needle.starts_with('"');
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut search = 0;
        while let Some(pos) = code[search..].find(needle) {
            let start = search + pos;
            let end = start + needle.len();
            let before_ok = quoted
                || start == 0
                || !code[..start].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let after = code[end..].trim_start();
            if before_ok && (quoted || after.starts_with(':') || after.starts_with('(')) {
                return (i + 1, code[..start].chars().count() + 1);
            }
            search = end;
        }
    }
    (1, 1)
}

/// Like [`locate`], but for a needle written after `anchor` (a field of a nested struct, or a
/// value in a list); at the anchor when the needle is not written after it.
pub fn locate_after(text: &str, anchor: &str, needle: &str) -> (usize, usize) {
    let (line, col) = locate(text, anchor);
    if (line, col) == (1, 1) && !text.starts_with(anchor) {
        return (1, 1);
    }
    let rest: String = text.lines().skip(line - 1).collect::<Vec<_>>().join("\n");
    match locate(&rest, needle) {
        (1, 1) if !rest.trim_start().starts_with(needle) => (line, col),
        (l, c) => (line + l - 1, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_before_finds_the_enclosing_field() {
        let text = "(\n  lr: \"fast\",\n)";
        assert_eq!(field_before(text, 2, 7).as_deref(), Some("lr"));
    }

    #[test]
    fn locate_skips_substrings_and_comments() {
        let text = "// epochs: 3\n(\n  max_epochs: 2,\n  epochs: 0,\n)";
        assert_eq!(locate(text, "epochs"), (4, 3));
    }

    #[test]
    fn locate_finds_quoted_keys_and_values() {
        let text = "{\n  // \"q\": Quit\n  \"ctrl+x\": Quit,\n  \"q\": Quit,\n}";
        assert_eq!(locate(text, "\"q\""), (4, 3));
        let theme = "(\n  series: [\"#fff\",\n    \"nope\"],\n)";
        assert_eq!(locate_after(theme, "series", "\"nope\""), (3, 5));
    }
}
