//! Chat templates. A GGUF file may carry its template as Jinja (`tokenizer.chat_template`);
//! rather than run a Jinja engine, the families in use are recognised (by the template's text,
//! or by the turn tokens in the vocabulary when the file has no template, as Gemma 3 270M's
//! does not) and formatted here. Anything else is refused with an error that says so.

use crate::error::{Error, Result};
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

    /// The prompt for `messages`, ending where the assistant's answer begins (no BOS: the
    /// caller puts the model's prompt prefix first).
    pub fn format(self, messages: &[ChatMessage]) -> Result<String> {
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
