//! The engine on the tiny Gemma 3 model the tests write (`crate::llm::tiny`): loading, bad
//! files, tokenising, and generation's determinism, seeds, stop strings and lengths.

use std::path::{Path, PathBuf};

use super::*;
use crate::llm::tiny::TinyModel;

fn write(dir: &Path, name: &str, model: &TinyModel) -> PathBuf {
    let path = dir.join(name);
    model.write(&path).unwrap();
    path
}

fn tiny() -> (tempfile::TempDir, GgufModel) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "tiny.gguf", &TinyModel::default());
    let model = GgufModel::load(&path).unwrap();
    (dir, model)
}

/// Runs a generation to its end: the text, the ids and the finish reason.
fn complete(model: &GgufModel, prompt: &str, params: &SamplingParams) -> (String, Vec<u32>, FinishReason) {
    let ids = [model.prompt_prefix(), model.encode(prompt).unwrap()].concat();
    let mut generation = model.start(&ids, params).unwrap();
    let (mut text, mut out) = (String::new(), Vec::new());
    loop {
        match generation.step().unwrap() {
            Step::Token(t) => {
                text.push_str(&t.text);
                out.push(t.id);
            }
            Step::Finished(reason) => {
                assert_eq!(generation.step().unwrap(), Step::Finished(reason), "finished stays finished");
                return (text, out, reason);
            }
        }
    }
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams { max_tokens: n, ..Default::default() }
}

#[test]
fn the_tiny_model_loads_and_describes_itself() {
    let (_dir, model) = tiny();
    let info = model.info();
    assert_eq!(info.architecture, "gemma3");
    assert_eq!(info.name, "tiny");
    assert_eq!(info.context_length, 256);
    assert!(info.vocab_size > 300, "{}", info.vocab_size);
    let types: Vec<&str> = info.quantisations.iter().map(|q| q.ggml_type.as_str()).collect();
    assert!(types.contains(&"Q8_0") && types.contains(&"F32"), "{types:?}");
    assert_eq!(model.prompt_prefix(), vec![2], "<bos>");
    assert_eq!(model.eos_ids(), &[1, 5], "<eos> and <end_of_turn>");
}

#[test]
fn text_tokenises_into_the_vocabulary_pieces_and_decodes_back() {
    let (_dir, model) = tiny();
    let ids = model.encode("the cat sat").unwrap();
    // "the" has no ▁ before it (Gemma adds no space prefix); " cat" and " sat" are one piece.
    let pieces: Vec<String> = ids.iter().map(|&id| model.tokenizer.id_to_token(id).unwrap()).collect();
    assert_eq!(pieces, ["t", "h", "e", "▁cat", "▁sat"]);
    assert_eq!(model.decode(&ids).unwrap(), "the cat sat");
    // Characters outside the vocabulary fall back to their UTF-8 bytes and come back whole.
    let ids = model.encode(" ü\n").unwrap();
    assert_eq!(model.decode(&ids).unwrap(), " ü\n");
    assert!(ids.contains(&model.tokenizer.token_to_id("<0xC3>").unwrap()));
    // Turn markers are single control tokens, and decoding skips them.
    let ids = model.encode("<start_of_turn>user\nhello").unwrap();
    assert_eq!(ids[0], 4);
    assert_eq!(model.decode(&ids).unwrap(), "user\nhello");
}

#[test]
fn the_detokeniser_never_splits_a_character() {
    let (_dir, model) = tiny();
    let tokenizer = &model.tokenizer;
    let ids = model.encode("aé ü!").unwrap();
    let mut detok = Detokenizer::default();
    let pieces: Vec<String> = ids.iter().map(|&id| detok.push(tokenizer, id).unwrap()).collect();
    assert_eq!(pieces.concat(), "aé ü!");
    // ü is two byte tokens: the first gives nothing, the second the whole character.
    assert!(pieces.iter().any(|p| p.is_empty()), "{pieces:?}");
    assert!(pieces.iter().any(|p| p.contains('ü')), "{pieces:?}");
}

#[test]
fn greedy_generation_is_deterministic_and_max_tokens_ends_it() {
    let (_dir, model) = tiny();
    let (a, ids_a, reason) = complete(&model, "the cat", &greedy(12));
    let (b, ids_b, _) = complete(&model, "the cat", &greedy(12));
    assert_eq!((a.clone(), ids_a.clone()), (b, ids_b));
    if reason == FinishReason::Length {
        assert_eq!(ids_a.len(), 12);
    } else {
        assert!(ids_a.len() < 12, "an end-of-sequence token came first");
    }
    // The weights are shared, not the cache: a generation started after another ran gives the
    // same tokens as a fresh one.
    let ids = [model.prompt_prefix(), model.encode("hello world").unwrap()].concat();
    let mut first = model.start(&ids, &greedy(5)).unwrap();
    let mut second = model.start(&ids, &greedy(5)).unwrap();
    for _ in 0..5 {
        assert_eq!(first.step().unwrap(), second.step().unwrap());
    }
}

#[test]
fn the_same_seed_samples_the_same_text_and_seeds_differ() {
    let (_dir, model) = tiny();
    let params = |seed| SamplingParams { max_tokens: 16, temperature: 1.5, seed, ..Default::default() };
    let (_, a, _) = complete(&model, "the", &params(1));
    let (_, b, _) = complete(&model, "the", &params(1));
    assert_eq!(a, b);
    let others: Vec<Vec<u32>> = (2..6).map(|s| complete(&model, "the", &params(s)).1).collect();
    assert!(others.iter().any(|o| *o != a), "four other seeds all gave {a:?}");
}

#[test]
fn a_stop_string_ends_the_completion_before_it() {
    let (_dir, model) = tiny();
    // Sampled, so the text is long and varied; cut it at a piece from its middle.
    let params = SamplingParams { max_tokens: 40, temperature: 1.0, seed: 3, ..Default::default() };
    let (full, _, _) = complete(&model, "the", &params);
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "{full:?}");
    let stop: String = chars[8..10].iter().collect();
    let at = full.find(&stop).unwrap();
    let (cut, _, reason) = complete(&model, "the", &SamplingParams { stop: vec![stop.clone()], ..params });
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(cut, full[..at], "stop {stop:?}");
}

#[test]
fn logprobs_are_reported_best_first_and_the_chosen_one_is_the_best_when_greedy() {
    let (_dir, model) = tiny();
    let ids = [model.prompt_prefix(), model.encode("the").unwrap()].concat();
    let mut generation = model.start(&ids, &SamplingParams { top_logprobs: 3, ..greedy(3) }).unwrap();
    let Step::Token(token) = generation.step().unwrap() else { panic!("a token first") };
    assert_eq!(token.top_logprobs.len(), 3);
    assert!(token.logprob <= 0.0);
    assert!((token.top_logprobs[0].logprob - token.logprob).abs() < 1e-6);
    assert!(token.top_logprobs.windows(2).all(|w| w[0].logprob >= w[1].logprob));
}

#[test]
fn the_context_length_bounds_prompt_and_completion() {
    let (_dir, model) = tiny();
    let long = vec![10u32; 256];
    let err = model.start(&long, &greedy(1)).err().unwrap();
    assert!(err.to_string().contains("256 tokens"), "{err}");
    assert_eq!(err.exit_code(), 2);
    // A prompt of 250 leaves room for 6 tokens, whatever max_tokens says.
    let mut generation = model.start(&vec![10u32; 250], &greedy(100)).unwrap();
    let mut n = 0;
    while let Step::Token(_) = generation.step().unwrap() {
        n += 1;
    }
    assert!(n <= 7, "{n}");
    assert!(model.start(&[], &greedy(1)).is_err());
    assert!(model.start(&[9999], &greedy(1)).err().unwrap().to_string().contains("outside the vocabulary"));
}

#[test]
fn bad_sampling_parameters_are_refused() {
    let (_dir, model) = tiny();
    for params in [
        SamplingParams { temperature: -1.0, ..Default::default() },
        SamplingParams { temperature: f64::NAN, ..Default::default() },
        SamplingParams { top_p: 0.0, ..Default::default() },
        SamplingParams { top_p: 1.5, ..Default::default() },
    ] {
        let err = model.start(&[2, 10], &params).err().unwrap();
        assert_eq!(err.exit_code(), 2, "{err}");
    }
}

#[test]
fn the_chat_template_is_gemmas_and_an_unknown_one_is_refused() {
    let (dir, model) = tiny();
    let messages = [ChatMessage { role: "user".into(), content: "hello".into() }];
    assert_eq!(
        model.chat_prompt(&messages).unwrap(),
        "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n"
    );
    let other = TinyModel { no_turn_tokens: true, ..Default::default() };
    let model = GgufModel::load(&write(dir.path(), "plain.gguf", &other)).unwrap();
    let err = model.chat_prompt(&messages).unwrap_err();
    assert!(err.to_string().contains("plain.gguf") && err.to_string().contains("chat template"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

/// Loads `path` and returns the error's text, checking it is bad input naming the file.
fn load_error(path: &Path) -> String {
    let err = GgufModel::load(path).err().expect("the file is refused");
    assert_eq!(err.exit_code(), 2, "{err}");
    let text = err.to_string();
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    text
}

#[test]
fn a_file_that_is_not_gguf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.gguf");
    std::fs::write(&path, "hello, I am text").unwrap();
    assert!(load_error(&path).contains("not a GGUF file"));
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, "").unwrap();
    assert!(load_error(&empty).contains("not a GGUF file"));
    let missing = dir.path().join("missing.gguf");
    assert!(load_error(&missing).contains("cannot open"));
}

#[test]
fn a_truncated_file_is_refused_naming_the_cut_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "cut.gguf", &TinyModel::default());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let text = load_error(&path);
    assert!(text.contains("truncated") && text.contains("tensor"), "{text}");
    // Cut inside the header, the metadata itself is damaged.
    std::fs::write(&path, &bytes[..200]).unwrap();
    assert!(load_error(&path).contains("header"));
}

#[test]
fn an_unsupported_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write(dir.path(), "mamba.gguf", &TinyModel { architecture: "mamba".into(), ..Default::default() });
    let text = load_error(&path);
    assert!(text.contains("\"mamba\" is not supported") && text.contains("gemma3, llama, qwen3"), "{text}");
}

#[test]
fn a_missing_tensor_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel { drop_tensor: Some("blk.1.ffn_up.weight".into()), ..Default::default() };
    let path = write(dir.path(), "holed.gguf", &model);
    let text = load_error(&path);
    assert!(text.contains("blk.1.ffn_up.weight"), "{text}");
}

/// The last position's logits of `ids` on a fresh copy of the weights: as one prompt, or one
/// token at a time through the decode path (the KV cache).
fn last_logits(model: &GgufModel, ids: &[u32], one_at_a_time: bool) -> Vec<f32> {
    let mut weights = model.weights.clone();
    if !one_at_a_time {
        return weights.forward(ids, 0).unwrap();
    }
    let mut logits = Vec::new();
    for (pos, &id) in ids.iter().enumerate() {
        logits = weights.forward(&[id], pos).unwrap();
    }
    logits
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A sliding layer of window W lets a token see W positions, its own included (transformers'
/// `kv_idx > q_idx - sliding_window`, llama.cpp's `p1 - p0 >= n_swa` masked), in a prompt and
/// while decoding alike. With W = 4 and the tiny model's two sliding layers, the last of 12
/// tokens (position 11) sees positions 8..=11 in layer 1, which saw 5..=11 in layer 0: token 4
/// must not move its logits, token 5 must. (candle's copy let W + 1 through, so token 4
/// mattered, and a decoded token saw the whole context.)
#[test]
fn a_sliding_window_shows_a_token_exactly_w_positions_in_a_prompt_and_while_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "window.gguf", &TinyModel { sliding_window: 4, ..Default::default() });
    let model = GgufModel::load(&path).unwrap();
    // 12 positions (under the 16 rows from which a prompt takes the f32 path, so the prompt
    // and the decode steps use the same quantised products and may be compared closely).
    let words = model.encode("the cat sat on the mat hello world model vigil token").unwrap();
    let ids: Vec<u32> = [model.prompt_prefix(), words].concat().into_iter().cycle().take(12).collect();
    let changed = |at: usize| {
        let mut other = ids.clone();
        other[at] = if ids[at] == ids[1] { ids[2] } else { ids[1] };
        other
    };
    for one_at_a_time in [false, true] {
        let base = last_logits(&model, &ids, one_at_a_time);
        let outside = largest_difference(&base, &last_logits(&model, &changed(4), one_at_a_time));
        let inside = largest_difference(&base, &last_logits(&model, &changed(5), one_at_a_time));
        assert!(outside < 1e-6, "one at a time {one_at_a_time}: token 4 moved the logits by {outside}");
        assert!(inside > 1e-3, "one at a time {one_at_a_time}: token 5 moved the logits only by {inside}");
    }
    let prompt = last_logits(&model, &ids, false);
    let decoded = last_logits(&model, &ids, true);
    let gap = largest_difference(&prompt, &decoded);
    assert!(gap < 1e-3, "a prompt and the same tokens decoded one at a time differ by {gap}");
}
