//! Why a language model wrote one token: attribution of a generated token over the prompt's
//! tokens by occlusion. The GGUF models are quantised, and candle has no gradients through
//! quantised matrix products, so gradient methods (saliency, integrated gradients) are not
//! available for them; occlusion needs nothing but forward passes. Each prompt token is left
//! out in turn, the model reads the edited prompt (and the completion up to the token), and the
//! token's log-probability is read again: the drop is that prompt token's attribution
//! (positive: it made the token more likely). One forward pass per prompt token, through
//! [`LanguageModel::logprob_of`], so any model behind the trait can be explained.
//!
//! Plain data in and out: the console's engine and `vigil explain-token` both call
//! [`explain_token`].

use serde::Serialize;

use super::backend::LanguageModel;
use crate::error::{Error, Result};

/// What the UI and the CLI say about the method, in one place.
pub const METHOD: &str = "occlusion: each prompt token left out in turn";
/// Why it is occlusion and not gradients.
pub const NO_GRADIENTS: &str = "gradient methods are not available for quantised weights";

/// One prompt token and what leaving it out did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptToken {
    pub id: u32,
    /// The token's text (what the tokenizer decodes it to).
    pub text: String,
    /// The token's log-probability without this prompt token.
    pub occluded_logprob: f32,
    /// The full prompt's log-probability minus `occluded_logprob`: positive when this prompt
    /// token made the generated token more likely.
    pub attribution: f32,
}

/// A generated token explained over its prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenAttribution {
    /// Which token of the completion (0-based).
    pub position: usize,
    pub id: u32,
    pub text: String,
    /// Its log-probability with the whole prompt.
    pub logprob: f32,
    pub method: &'static str,
    /// The prompt's tokens in order; the beginning-of-sequence prefix is kept, never left out.
    pub prompt: Vec<PromptToken>,
    /// How many prompt tokens lead the prompt unexplained (the model's prefix).
    pub prefix: usize,
    pub forward_passes: usize,
    pub millis: f64,
}

impl TokenAttribution {
    /// The largest attribution's size (for a colour scale).
    pub fn max_abs(&self) -> f32 {
        self.prompt.iter().map(|t| t.attribution.abs()).fold(0.0, f32::max)
    }

    /// The prompt tokens by the size of their attribution, largest first (`n` of them).
    pub fn top(&self, n: usize) -> Vec<&PromptToken> {
        let mut v: Vec<&PromptToken> = self.prompt.iter().skip(self.prefix).collect();
        v.sort_by(|a, b| b.attribution.abs().total_cmp(&a.attribution.abs()));
        v.truncate(n);
        v
    }
}

/// Explains token `position` of `generated`, the completion of `prompt` (ids as the model
/// read them, prefix included). `progress(done, total)` is called before each forward pass
/// and stops the work when it returns false (then `Ok(None)`).
pub fn explain_token(
    model: &dyn LanguageModel,
    prompt: &[u32],
    generated: &[u32],
    position: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Option<TokenAttribution>> {
    let t0 = std::time::Instant::now();
    let Some(&target) = generated.get(position) else {
        return Err(Error::argument(format!(
            "token {position} was asked for and the completion has {} (0-based: 0 to {})",
            generated.len(),
            generated.len().saturating_sub(1)
        )));
    };
    let prefix = model.prompt_prefix();
    let skip = if prompt.starts_with(&prefix) { prefix.len() } else { 0 };
    if prompt.len() <= skip {
        return Err(Error::argument("the prompt is empty: there is nothing to attribute the token to"));
    }
    let before = &generated[..position];
    let context = |left_out: Option<usize>| -> Vec<u32> {
        let mut c: Vec<u32> =
            prompt.iter().enumerate().filter(|(i, _)| Some(*i) != left_out).map(|(_, &t)| t).collect();
        c.extend_from_slice(before);
        c
    };
    let total = prompt.len() - skip + 1;
    if !progress(0, total) {
        return Ok(None);
    }
    let logprob = model.logprob_of(&context(None), target)?;
    let mut tokens = Vec::with_capacity(prompt.len());
    for (i, &id) in prompt.iter().enumerate() {
        let text = model.decode(&[id])?;
        if i < skip {
            tokens.push(PromptToken { id, text, occluded_logprob: logprob, attribution: 0.0 });
            continue;
        }
        if !progress(i - skip + 1, total) {
            return Ok(None);
        }
        let occluded = model.logprob_of(&context(Some(i)), target)?;
        tokens.push(PromptToken { id, text, occluded_logprob: occluded, attribution: logprob - occluded });
    }
    Ok(Some(TokenAttribution {
        position,
        id: target,
        text: model.decode(&[target])?,
        logprob,
        method: METHOD,
        prompt: tokens,
        prefix: skip,
        forward_passes: total,
        millis: t0.elapsed().as_secs_f64() * 1000.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::backend::{
        ChatMessage, GeneratedToken, Generation, ModelInfo, SamplingParams, Step, TokenLogprob,
    };

    /// A model whose next token is always `X`, more likely when the prompt holds `K` (+2.5 in
    /// log-probability) and a little when it holds `Q` (+0.3); `Y`, its runner-up, is less
    /// likely with `K` (-1.0). Every other token changes nothing. It does not implement
    /// `logprob_of`, so the trait's default (built on `start`) is what is tested.
    struct Keyed;

    fn lp(prompt: &[u32]) -> (f32, f32) {
        let has = |c: char| prompt.contains(&(c as u32));
        let k = if has('K') { 1.0 } else { 0.0 };
        let q = if has('Q') { 1.0 } else { 0.0 };
        (-3.0 + 2.5 * k + 0.3 * q, -1.5 - 1.0 * k)
    }

    struct Once(Option<GeneratedToken>);
    impl Generation for Once {
        fn step(&mut self) -> Result<Step> {
            Ok(self.0.take().map_or(Step::Finished(crate::llm::FinishReason::Length), Step::Token))
        }
        fn generated(&self) -> usize {
            usize::from(self.0.is_none())
        }
    }

    impl LanguageModel for Keyed {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                name: "keyed".into(),
                architecture: "test".into(),
                parameters: 0,
                file_bytes: 0,
                context_length: 64,
                vocab_size: 128,
                quantisations: vec![],
                ..ModelInfo::default()
            }
        }
        fn encode(&self, text: &str) -> Result<Vec<u32>> {
            Ok(text.chars().map(|c| c as u32).collect())
        }
        fn decode(&self, ids: &[u32]) -> Result<String> {
            Ok(ids.iter().filter_map(|&i| char::from_u32(i)).collect())
        }
        fn chat_prompt(&self, _: &[ChatMessage]) -> Result<String> {
            unreachable!("not used")
        }
        fn start(&self, prompt: &[u32], params: &SamplingParams) -> Result<Box<dyn Generation>> {
            let (x, y) = lp(prompt);
            let alts = vec![
                TokenLogprob { token: "X".into(), logprob: x },
                TokenLogprob { token: "Y".into(), logprob: y },
            ];
            let top = alts.into_iter().take(params.top_logprobs).collect();
            Ok(Box::new(Once(Some(GeneratedToken {
                id: 'X' as u32,
                text: "X".into(),
                logprob: x,
                top_logprobs: top,
            }))))
        }
        fn prompt_prefix(&self) -> Vec<u32> {
            vec![]
        }
    }

    fn explain(prompt: &str, generated: &str, position: usize) -> TokenAttribution {
        let m = Keyed;
        let p = m.encode(prompt).unwrap();
        let g = m.encode(generated).unwrap();
        explain_token(&m, &p, &g, position, &mut |_, _| true).unwrap().unwrap()
    }

    #[test]
    fn the_token_that_decides_gets_the_attribution() {
        let a = explain("abKcQd", "X", 0);
        let got: Vec<(String, f32)> = a.prompt.iter().map(|t| (t.text.clone(), t.attribution)).collect();
        let want = [("a", 0.0), ("b", 0.0), ("K", 2.5), ("c", 0.0), ("Q", 0.3), ("d", 0.0)];
        for ((text, v), (wt, wv)) in got.iter().zip(want) {
            assert_eq!(text, wt);
            assert!((v - wv).abs() < 1e-5, "{text}: {v} != {wv}");
        }
        assert!((a.logprob - (-0.2)).abs() < 1e-5);
        assert_eq!(a.top(1)[0].text, "K");
        assert_eq!(a.forward_passes, 7);
    }

    #[test]
    fn a_runner_up_is_read_from_the_alternatives_and_can_be_pushed_down() {
        // `Y` at position 1: its context is the prompt and the `X` before it.
        let a = explain("Kab", "XY", 1);
        assert_eq!(a.text, "Y");
        assert!((a.prompt[0].attribution - (-1.0)).abs() < 1e-5, "{:?}", a.prompt);
        assert!(a.prompt[1..].iter().all(|t| t.attribution.abs() < 1e-6));
    }

    #[test]
    fn bad_positions_and_empty_prompts_are_refused_and_progress_can_stop_it() {
        let m = Keyed;
        let err = explain_token(&m, &[65], &[88], 3, &mut |_, _| true).unwrap_err();
        assert!(err.to_string().contains("token 3") && err.exit_code() == 2, "{err}");
        let err = explain_token(&m, &[], &[88], 0, &mut |_, _| true).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let mut calls = 0;
        let stopped = explain_token(&m, &[65, 66, 67], &[88], 0, &mut |done, _| {
            calls += 1;
            done < 2
        });
        assert_eq!(stopped.unwrap(), None);
        assert_eq!(calls, 3);
    }

    #[test]
    fn the_scripted_stand_in_ignores_its_prompt_so_every_attribution_is_zero() {
        let m = crate::llm::scripted::ScriptedModel::default();
        let p = [m.prompt_prefix(), m.encode("hello").unwrap()].concat();
        let a = explain_token(&m, &p, &m.encode("The").unwrap(), 2, &mut |_, _| true).unwrap().unwrap();
        assert_eq!(a.prefix, 1);
        assert_eq!(a.text, "e");
        assert!(a.prompt.iter().all(|t| t.attribution == 0.0));
    }
}
