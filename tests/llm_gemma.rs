//! Gemma 3 270M (Q4_K_M), the real model, when `scripts/fetch_models.sh` has put it in the
//! cache (`${VIGIL_MODEL_CACHE:-$HOME/.cache/vigil/models}`); otherwise each test says it was
//! skipped and returns. Greedy output must be coherent (the expected words are what the model
//! writes, checked against Hugging Face transformers on the same file by
//! bench/llm_reference.py) and deterministic, and the chat template must be applied.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use vigil::llm::{ChatMessage, FinishReason, LanguageModel, SamplingParams, Step};

fn model_path() -> Option<PathBuf> {
    let cache = std::env::var_os("VIGIL_MODEL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vigil/models")))?;
    let path = cache.join("gemma-3-270m-q4_k_m.gguf");
    path.is_file().then_some(path)
}

/// The model, loaded once for all the tests here (loading takes seconds and a few GB; the tests
/// run in parallel and would each load it).
fn shared() -> Option<Arc<dyn LanguageModel>> {
    static MODEL: OnceLock<Option<Arc<dyn LanguageModel>>> = OnceLock::new();
    MODEL.get_or_init(|| model_path().map(|p| vigil::llm::load(&p).expect("the fetched model loads"))).clone()
}

macro_rules! model_or_skip {
    () => {
        match shared() {
            Some(model) => model,
            None => {
                println!("skipped: Gemma 3 270M is not in the cache (run scripts/fetch_models.sh)");
                return;
            }
        }
    };
}

/// Greedy completion of `text` (a plain prompt, or a chat's user message).
fn greedy(
    model: &dyn LanguageModel,
    text: &str,
    chat: bool,
    max_tokens: usize,
) -> (String, Vec<u32>, FinishReason, f64) {
    let text = if chat {
        model.chat_prompt(&[ChatMessage { role: "user".into(), content: text.into() }]).unwrap()
    } else {
        text.to_string()
    };
    let prompt = [model.prompt_prefix(), model.encode(&text).unwrap()].concat();
    let mut generation = model.start(&prompt, &SamplingParams { max_tokens, ..Default::default() }).unwrap();
    let (mut out, mut ids) = (String::new(), Vec::new());
    let started = Instant::now();
    loop {
        match generation.step().unwrap() {
            Step::Token(t) => {
                out.push_str(&t.text);
                ids.push(t.id);
            }
            Step::Finished(reason) => {
                let tps = ids.len() as f64 / started.elapsed().as_secs_f64();
                return (out, ids, reason, tps);
            }
        }
    }
}

#[test]
fn greedy_completions_are_coherent_and_deterministic() {
    let model = model_or_skip!();
    let info = model.info();
    assert_eq!(info.architecture, "gemma3");
    assert_eq!(info.vocab_size, 262_144);
    let (text, ids, _, tps) = greedy(model.as_ref(), "The capital of France is", false, 16);
    println!("{text:?} ({tps:.1} tokens/s)");
    assert!(text.contains("Paris"), "{text:?}");
    let (again, ids_again, _, _) = greedy(model.as_ref(), "The capital of France is", false, 16);
    assert_eq!((text, ids), (again, ids_again));
    let (text, _, _, tps) = greedy(model.as_ref(), "def add(a, b):\n    return", false, 8);
    println!("{text:?} ({tps:.1} tokens/s)");
    assert!(text.contains('a') && text.contains('b'), "{text:?}");
}

#[test]
fn the_chat_template_makes_the_model_answer_and_end_its_turn() {
    let model = model_or_skip!();
    let prompt = model.chat_prompt(&[ChatMessage { role: "user".into(), content: "Hi".into() }]).unwrap();
    assert_eq!(prompt, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
    // The turn markers are single control tokens of the vocabulary.
    assert_eq!(model.encode("<start_of_turn>").unwrap(), vec![105]);
    let (text, _, reason, tps) =
        greedy(model.as_ref(), "What is the capital of Japan? Answer in one word.", true, 64);
    println!("{text:?} ({tps:.1} tokens/s)");
    assert!(text.contains("Tokyo"), "{text:?}");
    assert_eq!(reason, FinishReason::Stop, "ends its turn with <end_of_turn>: {text:?}");
    assert!(!text.contains("<end_of_turn>"));
}

#[test]
fn the_tokenizer_splits_text_as_gemmas_does() {
    let model = model_or_skip!();
    // Ids from transformers' GGUF tokenizer for the same file
    // (AutoTokenizer.from_pretrained(dir, gguf_file=...)("Hello world!", add_special_tokens=False)).
    let ids = model.encode("Hello world!").unwrap();
    assert_eq!(model.decode(&ids).unwrap(), "Hello world!");
    assert_eq!(ids.len(), 3, "{ids:?}");
    let text = "naïve café — 東京 🙂\n\n  indented";
    assert_eq!(model.decode(&model.encode(text).unwrap()).unwrap(), text);
}
