//! Chat templates. A GGUF file may carry its template as Jinja (`tokenizer.chat_template`);
//! rather than run a Jinja engine, the families in use are recognised (by the template's text,
//! or by the turn tokens in the vocabulary when the file has no template, as Gemma 3 270M's
//! does not) and formatted here. The operator can choose instead ([`ChatTemplate`], the
//! `--chat-template` option, as llama.cpp's server takes `--chat-template NAME`): a family by
//! name, `none` (the messages' text alone, as Ollama sends a model without a template), or a
//! RON file of role prefixes and suffixes ([`TemplateFile`]) for a family Vigil does not know.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ConfigError, Error, Result};
use crate::llm::backend::ChatMessage;

/// A chat format, and the turn-ending token that ends the assistant's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n` (Gemma 1-3).
    Gemma,
    /// `<|start_header_id|>user<|end_header_id|>\n\n...<|eot_id|>` (Llama 3).
    Llama3,
    /// `<|im_start|>user\n...<|im_end|>\n` (Qwen, many others).
    ChatMl,
}

impl ChatFormat {
    /// Recognises the family from the Jinja template, or from the vocabulary without one.
    pub fn detect(template: Option<&str>, has_token: impl Fn(&str) -> bool) -> Option<ChatFormat> {
        let probe = |marker: &str| match template {
            Some(t) => t.contains(marker),
            None => has_token(marker),
        };
        if probe("<start_of_turn>") {
            Some(ChatFormat::Gemma)
        } else if probe("<|start_header_id|>") {
            Some(ChatFormat::Llama3)
        } else if probe("<|im_start|>") {
            Some(ChatFormat::ChatMl)
        } else {
            None
        }
    }

    /// The token that ends a turn: generation ends there, like at end-of-sequence.
    pub fn end_of_turn(self) -> &'static str {
        match self {
            ChatFormat::Gemma => "<end_of_turn>",
            ChatFormat::Llama3 => "<|eot_id|>",
            ChatFormat::ChatMl => "<|im_end|>",
        }
    }

    /// The family's name, as `--chat-template` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ChatFormat::Gemma => "gemma",
            ChatFormat::Llama3 => "llama3",
            ChatFormat::ChatMl => "chatml",
        }
    }

    /// The prompt for `messages`, ending where the assistant's answer begins (no BOS: the
    /// caller puts the model's prompt prefix first).
    pub fn format(self, messages: &[ChatMessage]) -> Result<String> {
        check_messages(messages)?;
        let mut out = String::new();
        match self {
            ChatFormat::Gemma => {
                // Gemma has no system role: its template puts the system text at the head of
                // the first user turn, followed by a blank line.
                let mut system = String::new();
                for m in messages {
                    match m.role.as_str() {
                        "system" => {
                            system.push_str(&m.content);
                            system.push_str("\n\n");
                        }
                        role => {
                            let role = if role == "assistant" { "model" } else { "user" };
                            out.push_str(&format!("<start_of_turn>{role}\n"));
                            if role == "user" {
                                out.push_str(&std::mem::take(&mut system));
                            }
                            out.push_str(m.content.trim());
                            out.push_str("<end_of_turn>\n");
                        }
                    }
                }
                if !system.is_empty() {
                    // A chat of only a system message: it still reaches the model.
                    out.push_str(&format!("<start_of_turn>user\n{system}<end_of_turn>\n"));
                }
                out.push_str("<start_of_turn>model\n");
            }
            ChatFormat::Llama3 => {
                for m in messages {
                    out.push_str(&format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role,
                        m.content.trim()
                    ));
                }
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
            ChatFormat::ChatMl => {
                for m in messages {
                    out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
                }
                out.push_str("<|im_start|>assistant\n");
            }
        }
        Ok(out)
    }
}

/// Refuses a chat no template can format: no messages, or a role other than the three.
fn check_messages(messages: &[ChatMessage]) -> Result<()> {
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(Error::argument(format!(
                "messages[{i}]: role {:?} is not one of system, user, assistant",
                m.role
            )));
        }
    }
    if messages.is_empty() {
        return Err(Error::argument("messages: a chat needs at least one message"));
    }
    Ok(())
}

/// The names `--chat-template` takes besides a file.
pub const TEMPLATE_NAMES: &str = "gemma, llama3, chatml, none";

/// The chat template a model runs with.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatTemplate {
    /// One of the families Vigil formats itself.
    Family(ChatFormat),
    /// No template: the messages' texts, a blank line between them, and the model continues
    /// (what Ollama does for a model without a template; for base models such as Gemma 3 270M).
    None,
    /// The operator's own turns, from a RON file.
    File(TemplateFile),
}

/// One role's turn in a [`TemplateFile`]: the text before the message and after it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub suffix: String,
}

/// A chat template written as role prefixes and suffixes, the shape every family's Jinja
/// template reduces to. For example, Phi-3's:
///
/// ```ron
/// (
///     system: (prefix: "<|system|>\n", suffix: "<|end|>\n"),
///     user: (prefix: "<|user|>\n", suffix: "<|end|>\n"),
///     assistant: (prefix: "<|assistant|>\n", suffix: "<|end|>\n"),
///     end_of_turn: "<|end|>",
/// )
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateFile {
    pub user: Turn,
    /// Its prefix also ends the prompt: the model answers after it.
    pub assistant: Turn,
    /// Without it, the system message is put at the head of the first user message followed
    /// by a blank line (as Gemma's template does).
    #[serde(default)]
    pub system: Option<Turn>,
    /// The text that ends the assistant's answer: generation stops there (a token of the
    /// vocabulary, or any text). Without it, only the model's end of sequence stops it.
    #[serde(default)]
    pub end_of_turn: Option<String>,
}

impl ChatTemplate {
    /// Reads a `--chat-template` value: a family's name, `none`, or the path of a RON file.
    pub fn parse(value: &str) -> Result<ChatTemplate> {
        match value.trim().to_ascii_lowercase().as_str() {
            "gemma" => return Ok(ChatTemplate::Family(ChatFormat::Gemma)),
            "llama3" | "llama-3" => return Ok(ChatTemplate::Family(ChatFormat::Llama3)),
            "chatml" => return Ok(ChatTemplate::Family(ChatFormat::ChatMl)),
            "none" => return Ok(ChatTemplate::None),
            _ => {}
        }
        let path = Path::new(value);
        if !value.ends_with(".ron") && !path.is_file() {
            return Err(Error::argument(format!(
                "--chat-template {value:?}: expected one of {TEMPLATE_NAMES}, or a .ron file of role \
                 prefixes and suffixes"
            )));
        }
        if !path.is_file() {
            return Err(Error::not_found(format!("--chat-template {value}: no such file")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        // `end_of_turn: "<|end|>"`, as the theme and spec files write optional fields.
        let file: TemplateFile = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(&text)
            .map_err(|e| ConfigError::from_ron(&e, &text, path))?;
        if file.assistant.prefix.is_empty() && file.user.prefix.is_empty() {
            return Err(ConfigError::at_field(
                &text,
                path,
                "assistant",
                "the user's and the assistant's prefixes are both empty: the model could not tell the \
                 turns apart",
            )
            .into());
        }
        if file.end_of_turn.as_deref() == Some("") {
            return Err(
                ConfigError::at_field(&text, path, "end_of_turn", "is empty: leave it out instead").into()
            );
        }
        Ok(ChatTemplate::File(file))
    }

    /// What to call it in banners and `/v1/models`.
    pub fn describe(&self) -> String {
        match self {
            ChatTemplate::Family(f) => f.name().to_string(),
            ChatTemplate::None => "none".to_string(),
            ChatTemplate::File(_) => "file".to_string(),
        }
    }

    /// The text that ends the assistant's turn, if the template has one.
    pub fn end_of_turn(&self) -> Option<&str> {
        match self {
            ChatTemplate::Family(f) => Some(f.end_of_turn()),
            ChatTemplate::None => None,
            ChatTemplate::File(t) => t.end_of_turn.as_deref(),
        }
    }

    /// The prompt for `messages`, ending where the assistant's answer begins.
    pub fn format(&self, messages: &[ChatMessage]) -> Result<String> {
        match self {
            ChatTemplate::Family(f) => f.format(messages),
            ChatTemplate::None => {
                check_messages(messages)?;
                let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                Ok(texts.join("\n\n"))
            }
            ChatTemplate::File(t) => {
                check_messages(messages)?;
                let mut out = String::new();
                let mut system = String::new();
                for m in messages {
                    let turn = match m.role.as_str() {
                        "system" => match &t.system {
                            Some(turn) => turn,
                            None => {
                                system.push_str(&m.content);
                                system.push_str("\n\n");
                                continue;
                            }
                        },
                        "user" => &t.user,
                        _ => &t.assistant,
                    };
                    out.push_str(&turn.prefix);
                    if m.role == "user" {
                        out.push_str(&std::mem::take(&mut system));
                    }
                    out.push_str(&m.content);
                    out.push_str(&turn.suffix);
                }
                if !system.is_empty() {
                    out.push_str(&format!("{}{system}{}", t.user.prefix, t.user.suffix));
                }
                out.push_str(&t.assistant.prefix);
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }

    #[test]
    fn gemma_folds_the_system_message_into_the_first_user_turn() {
        let prompt = ChatFormat::Gemma
            .format(&[
                msg("system", "Be brief."),
                msg("user", "Hi"),
                msg("assistant", "Hello!"),
                msg("user", "Why?"),
            ])
            .unwrap();
        // As Gemma 3's chat_template renders the same messages (add_generation_prompt=True).
        assert_eq!(
            prompt,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn llama3_and_chatml_turns() {
        assert_eq!(
            ChatFormat::Llama3.format(&[msg("user", "Hi")]).unwrap(),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            ChatFormat::ChatMl.format(&[msg("user", "Hi")]).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn families_are_recognised_from_the_template_or_the_vocabulary() {
        assert_eq!(
            ChatFormat::detect(Some("{{ '<start_of_turn>' + role }}"), |_| false),
            Some(ChatFormat::Gemma)
        );
        assert_eq!(ChatFormat::detect(None, |t| t == "<|im_start|>"), Some(ChatFormat::ChatMl));
        assert_eq!(ChatFormat::detect(Some("{{ '[INST]' }}"), |_| true), None);
    }

    #[test]
    fn an_unknown_role_or_an_empty_chat_is_refused() {
        let err = ChatFormat::Gemma.format(&[msg("tool", "x")]).unwrap_err();
        assert!(err.to_string().contains("messages[0]: role \"tool\""), "{err}");
        assert!(ChatFormat::ChatMl.format(&[]).is_err());
    }
}
