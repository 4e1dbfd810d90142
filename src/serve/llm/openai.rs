//! The OpenAI API's shapes for `/v1/chat/completions` and `/v1/completions`: request bodies
//! (every unknown field refused, so a misspelt `max_token` is an error rather than silently
//! ignored), their checks against the service's limits, and the JSON of answers and of
//! streamed chunks. Plain data and serde; the handlers are in `serve::router::generate`.

use serde::{Deserialize, Serialize};

use crate::llm::{ChatMessage, FinishReason, SamplingParams};

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with the usage before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// One message of a chat request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMessage {
    pub role: String,
    pub content: String,
    /// Accepted and ignored, as most servers do.
    #[serde(default)]
    pub name: Option<String>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<RequestMessage>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub logprobs: bool,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    /// Only 1 is served.
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub user: Option<String>,
}

/// The body of `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// The legacy API's form: how many alternatives per token (0 asks only for the chosen
    /// token's log-probability).
    #[serde(default)]
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub user: Option<String>,
}

/// Which API shape a request and its answer use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completion,
}

/// A request in the terms both routes share, after its checks.
#[derive(Debug, Clone)]
pub struct Asked {
    pub api: Api,
    pub model: Option<String>,
    /// The chat's messages, or the completion's prompt.
    pub messages: Option<Vec<ChatMessage>>,
    pub prompt: Option<String>,
    pub params: SamplingParams,
    pub stream: bool,
    pub include_usage: bool,
    /// `None`: no logprobs; `Some(k)`: with k alternatives.
    pub logprobs: Option<usize>,
    /// Whether `max_tokens` was given (the default is the service's limit otherwise).
    pub max_tokens_given: bool,
}

/// Most alternatives per token anyone may ask for (the OpenAI API's own limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most stop strings (as the OpenAI API).
pub const MAX_STOPS: usize = 4;

fn stops(stop: Option<Stop>) -> Result<Vec<String>, String> {
    let list = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if list.len() > MAX_STOPS {
        return Err(format!("stop: at most {MAX_STOPS} stop strings, got {}", list.len()));
    }
    if list.iter().any(String::is_empty) {
        return Err("stop: a stop string cannot be empty".into());
    }
    Ok(list)
}

/// Checks what both routes share and builds the sampling parameters; `max_tokens_limit` is the
/// service's `--llm-max-tokens`. The message names the field.
#[allow(clippy::too_many_arguments)] // one argument per request field the two shapes share
fn common(
    max_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    stop: Option<Stop>,
    n: Option<usize>,
    max_tokens_limit: usize,
) -> Result<SamplingParams, String> {
    if let Some(n) = n
        && n != 1
    {
        return Err(format!("n: this service generates one choice per request, not {n}"));
    }
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(format!("temperature: {temperature} is not between 0 and 2"));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(format!("top_p: {top_p} is not in (0, 1]"));
    }
    let max_tokens = max_tokens.unwrap_or(max_tokens_limit);
    if max_tokens == 0 {
        return Err("max_tokens: must be at least 1".into());
    }
    if max_tokens > max_tokens_limit {
        return Err(format!(
            "max_tokens: {max_tokens} is over this service's limit of {max_tokens_limit} tokens per completion"
        ));
    }
    Ok(SamplingParams {
        max_tokens,
        temperature,
        top_p,
        // Without a seed, each request samples differently.
        seed: seed.unwrap_or_else(rand::random),
        stop: stops(stop)?,
        top_logprobs: 0,
    })
}

impl ChatRequest {
    pub fn check(self, max_tokens_limit: usize) -> Result<Asked, String> {
        if self.messages.is_empty() {
            return Err("messages: at least one message is needed".into());
        }
        let max_tokens = self.max_tokens.or(self.max_completion_tokens);
        let mut params =
            common(max_tokens, self.temperature, self.top_p, self.seed, self.stop, self.n, max_tokens_limit)?;
        let logprobs = match (self.logprobs, self.top_logprobs) {
            (false, Some(_)) => return Err("top_logprobs: needs \"logprobs\": true".into()),
            (false, None) => None,
            (true, k) => Some(k.unwrap_or(0)),
        };
        if let Some(k) = logprobs {
            if k > MAX_TOP_LOGPROBS {
                return Err(format!("top_logprobs: at most {MAX_TOP_LOGPROBS}, got {k}"));
            }
            params.top_logprobs = k;
        }
        let messages =
            self.messages.into_iter().map(|m| ChatMessage { role: m.role, content: m.content }).collect();
        Ok(Asked {
            api: Api::Chat,
            model: self.model,
            messages: Some(messages),
            prompt: None,
            params,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            logprobs,
            max_tokens_given: max_tokens.is_some(),
        })
    }
}

impl CompletionRequest {
    pub fn check(self, max_tokens_limit: usize) -> Result<Asked, String> {
        let mut params = common(
            self.max_tokens,
            self.temperature,
            self.top_p,
            self.seed,
            self.stop,
            self.n,
            max_tokens_limit,
        )?;
        if let Some(k) = self.logprobs {
            if k > MAX_TOP_LOGPROBS {
                return Err(format!("logprobs: at most {MAX_TOP_LOGPROBS}, got {k}"));
            }
            params.top_logprobs = k;
        }
        Ok(Asked {
            api: Api::Completion,
            model: self.model,
            messages: None,
            prompt: Some(self.prompt),
            params,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            logprobs: self.logprobs,
            max_tokens_given: self.max_tokens.is_some(),
        })
    }
}

/// One token as a caller sees it, with its log-probability and alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOut {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// `usage`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
    }
}

/// The finish reason's name in the API.
pub fn finish_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// A log-probability as JSON with the f32's shortest digits (`-0.1`, not `-0.10000000149011612`).
fn lp(x: f32) -> serde_json::Value {
    let shortest: f64 = x.to_string().parse().unwrap_or(f64::from(x));
    serde_json::Number::from_f64(shortest).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The `logprobs` object of one choice (or chunk): the chat API's `{"content": [...]}` or the
/// legacy completions API's parallel lists. `offset` is where the tokens' text starts in the
/// completion (for `text_offset`).
pub fn logprobs_json(api: Api, tokens: &[TokenOut], offset: usize) -> serde_json::Value {
    use serde_json::json;
    match api {
        Api::Chat => {
            let content: Vec<serde_json::Value> = tokens
                .iter()
                .map(|t| {
                    let top: Vec<serde_json::Value> = t
                        .top
                        .iter()
                        .map(|(s, l)| json!({"token": s, "logprob": lp(*l), "bytes": s.as_bytes()}))
                        .collect();
                    json!({"token": t.token, "logprob": lp(t.logprob), "bytes": t.token.as_bytes(), "top_logprobs": top})
                })
                .collect();
            json!({ "content": content })
        }
        Api::Completion => {
            let mut at = offset;
            let mut offsets = Vec::new();
            for t in tokens {
                offsets.push(at);
                at += t.token.len();
            }
            json!({
                "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
                "token_logprobs": tokens.iter().map(|t| lp(t.logprob)).collect::<Vec<_>>(),
                "top_logprobs": tokens
                    .iter()
                    .map(|t| t.top.iter().map(|(s, l)| (s.clone(), lp(*l))).collect::<serde_json::Map<_, _>>())
                    .collect::<Vec<_>>(),
                "text_offset": offsets,
            })
        }
    }
}

/// What every answer and chunk starts with.
#[derive(Debug, Clone)]
pub struct Head {
    pub api: Api,
    pub id: String,
    pub created: i64,
    pub model: String,
}

impl Head {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Completion, _) => "text_completion",
        }
    }

    /// A whole answer.
    pub fn answer(
        &self,
        text: &str,
        logprobs: Option<serde_json::Value>,
        finish: &str,
        usage: Usage,
    ) -> serde_json::Value {
        use serde_json::json;
        let choice = match self.api {
            Api::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
            Api::Completion => {
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish})
            }
        };
        json!({
            "id": self.id, "object": self.object(false), "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage,
        })
    }

    /// One streamed chunk: a piece of text (`None` with `first` for the chat API's opening
    /// chunk that names the role), or the last with its finish reason.
    pub fn chunk(
        &self,
        text: Option<&str>,
        first: bool,
        logprobs: Option<serde_json::Value>,
        finish: Option<&str>,
    ) -> serde_json::Value {
        use serde_json::json;
        let choice = match self.api {
            Api::Chat => {
                let delta = match (first, text) {
                    (true, _) => json!({"role": "assistant", "content": ""}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Api::Completion => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish})
            }
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created, "model": self.model,
            "choices": [choice],
        })
    }

    /// The usage chunk (`stream_options.include_usage`): no choices.
    pub fn usage_chunk(&self, usage: Usage) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "object": self.object(true), "created": self.created, "model": self.model,
            "choices": [], "usage": usage,
        })
    }
}

/// One server-sent event carrying `value`.
pub fn sse(value: &serde_json::Value) -> String {
    format!("data: {value}\n\n")
}

/// The event that ends every stream.
pub const DONE: &str = "data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_field_by_field() {
        let chat = |v: serde_json::Value| serde_json::from_value::<ChatRequest>(v).map_err(|e| e.to_string());
        let bad = chat(serde_json::json!({"messages": [], "max_token": 3})).unwrap_err();
        assert!(bad.contains("unknown field `max_token`"), "{bad}");
        let asked = chat(serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "stop": "x"}))
            .unwrap()
            .check(64)
            .unwrap();
        assert_eq!(asked.params.stop, vec!["x"]);
        assert_eq!(asked.params.max_tokens, 64, "the service's limit is the default");
        let too_many =
            chat(serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65}));
        assert!(too_many.unwrap().check(64).unwrap_err().starts_with("max_tokens: 65 is over"));
        let no_lp =
            chat(serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}))
                .unwrap();
        assert!(no_lp.check(64).unwrap_err().contains("logprobs"));
        let temp =
            chat(serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}));
        assert!(temp.unwrap().check(64).unwrap_err().starts_with("temperature"));
        let list: CompletionRequest =
            serde_json::from_value(serde_json::json!({"prompt": "a", "stop": ["1", "2"], "logprobs": 3}))
                .unwrap();
        let asked = list.check(8).unwrap();
        assert_eq!((asked.params.stop.len(), asked.logprobs, asked.params.top_logprobs), (2, Some(3), 3));
    }
}
