//! A tiny language model written as a real GGUF file, for tests: the Gemma 3 architecture with
//! random (seeded) weights, 2 layers and a small SentencePiece vocabulary with the tokenizer
//! metadata llama.cpp writes, so it goes through exactly the loading, tokenising and decoding
//! path that Gemma 3 270M does, in milliseconds. Its text is gibberish; tests check behaviour
//! (determinism, seeds, stop strings, lengths, errors), never quality. The service's and the
//! console's tests use it too.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};

/// Words whose pieces are in the vocabulary, so prompts made of them tokenise into real pieces.
pub const WORDS: &[&str] = &["the", "cat", "sat", "on", "mat", "hello", "world", "model", "vigil", "token"];

/// What to write. `Default` is a well-formed model; the other fields make broken ones for tests.
#[derive(Debug, Clone)]
pub struct TinyModel {
    /// Seeds the weights: the same seed writes the same file.
    pub seed: u64,
    /// `general.architecture` (`gemma3`; anything else makes a file the loader refuses).
    pub architecture: String,
    /// Leave this tensor out of the file.
    pub drop_tensor: Option<String>,
    /// `tokenizer.chat_template`; None writes none (as Gemma 3 270M's file has none).
    pub chat_template: Option<String>,
    /// Leave the turn tokens out of the vocabulary (a model with no known chat format).
    pub no_turn_tokens: bool,
    /// `attention.sliding_window`: how many positions a token of a sliding layer sees (both
    /// layers are sliding ones: Gemma 3 makes every sixth layer global).
    pub sliding_window: u32,
}

impl Default for TinyModel {
    fn default() -> Self {
        TinyModel {
            seed: 0,
            architecture: "gemma3".into(),
            drop_tensor: None,
            chat_template: None,
            no_turn_tokens: false,
            sliding_window: 64,
        }
    }
}

const HIDDEN: usize = 64;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = 32;
const FFN: usize = 128;
const LAYERS: usize = 2;
const CONTEXT: u32 = 256;

impl TinyModel {
    /// The vocabulary and its token types (llama.cpp's: 1 normal, 3 control, 4 user-defined,
    /// 6 byte) and scores (higher merges first).
    fn vocabulary(&self) -> (Vec<String>, Vec<i32>, Vec<f32>) {
        let mut tokens: Vec<(String, i32)> =
            ["<pad>", "<eos>", "<bos>", "<unk>"].iter().map(|t| (t.to_string(), 3)).collect();
        if !self.no_turn_tokens {
            tokens.push(("<start_of_turn>".into(), 3));
            tokens.push(("<end_of_turn>".into(), 3));
        }
        tokens.push(("\n".into(), 4));
        tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 6)));
        // Single characters first (lowest merge priority), then the words' prefixes with a
        // leading ▁, longest last: every word tokenises to one piece.
        let mut pieces: Vec<String> = vec!["▁".into()];
        pieces.extend(('a'..='z').map(|c| c.to_string()));
        pieces.extend([".", ",", "!", "?", "é"].iter().map(|c| c.to_string()));
        for word in WORDS {
            let spaced = format!("▁{word}");
            for end in 2..=spaced.chars().count() {
                let piece: String = spaced.chars().take(end).collect();
                if !pieces.contains(&piece) {
                    pieces.push(piece);
                }
            }
        }
        let first_piece = tokens.len();
        tokens.extend(pieces.into_iter().map(|p| (p, 1)));
        let scores = (0..tokens.len())
            .map(|i| if i < first_piece { -1000.0 } else { (i - first_piece) as f32 })
            .collect();
        let (names, types) = tokens.into_iter().unzip();
        (names, types, scores)
    }

    /// Writes the model to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let (tokens, types, scores) = self.vocabulary();
        let vocab = tokens.len();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let normal = Normal::new(0.0f32, 1.0).expect("a valid standard deviation");
        let mut random = |shape: (usize, usize), scale: f32| -> Result<QTensor> {
            let values: Vec<f32> = (0..shape.0 * shape.1).map(|_| normal.sample(&mut rng) * scale).collect();
            let t = Tensor::from_vec(values, shape, &Device::Cpu)?;
            // Matrices quantised as in the real files (Q8_0 here: the tiny rows are too short for
            // the 256-wide K-quant blocks).
            Ok(QTensor::quantize(&t, GgmlDType::Q8_0)?)
        };
        let ones = |n: usize| -> Result<QTensor> {
            Ok(QTensor::quantize(&Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?, GgmlDType::F32)?)
        };
        let mut tensors: Vec<(String, QTensor)> = vec![
            // Small embeddings keep the logits spread (their scale is what makes sampling vary).
            ("token_embd.weight".into(), random((vocab, HIDDEN), 0.1)?),
            ("output_norm.weight".into(), ones(HIDDEN)?),
        ];
        let matrix_scale = 1.0 / (HIDDEN as f32).sqrt();
        for layer in 0..LAYERS {
            let p = |n: &str| format!("blk.{layer}.{n}.weight");
            tensors.push((p("attn_q"), random((HEADS * HEAD_DIM, HIDDEN), matrix_scale)?));
            tensors.push((p("attn_k"), random((KV_HEADS * HEAD_DIM, HIDDEN), matrix_scale)?));
            tensors.push((p("attn_v"), random((KV_HEADS * HEAD_DIM, HIDDEN), matrix_scale)?));
            tensors.push((p("attn_output"), random((HIDDEN, HEADS * HEAD_DIM), matrix_scale)?));
            tensors.push((p("ffn_gate"), random((FFN, HIDDEN), matrix_scale)?));
            tensors.push((p("ffn_up"), random((FFN, HIDDEN), matrix_scale)?));
            tensors.push((p("ffn_down"), random((HIDDEN, FFN), matrix_scale)?));
            for norm in ["attn_q_norm", "attn_k_norm"] {
                tensors.push((p(norm), ones(HEAD_DIM)?));
            }
            for norm in ["attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"] {
                tensors.push((p(norm), ones(HIDDEN)?));
            }
        }
        if let Some(drop) = &self.drop_tensor {
            tensors.retain(|(name, _)| name != drop);
        }

        let arch = self.architecture.as_str();
        let u32v = Value::U32;
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            ("general.name".into(), Value::String("vigil tiny".into())),
            (format!("{arch}.context_length"), u32v(CONTEXT)),
            (format!("{arch}.embedding_length"), u32v(HIDDEN as u32)),
            (format!("{arch}.block_count"), u32v(LAYERS as u32)),
            (format!("{arch}.feed_forward_length"), u32v(FFN as u32)),
            (format!("{arch}.attention.head_count"), u32v(HEADS as u32)),
            (format!("{arch}.attention.head_count_kv"), u32v(KV_HEADS as u32)),
            (format!("{arch}.attention.key_length"), u32v(HEAD_DIM as u32)),
            (format!("{arch}.attention.value_length"), u32v(HEAD_DIM as u32)),
            (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
            (format!("{arch}.attention.sliding_window"), u32v(self.sliding_window)),
            (format!("{arch}.rope.freq_base"), Value::F32(1_000_000.0)),
            ("tokenizer.ggml.model".into(), Value::String("llama".into())),
            ("tokenizer.ggml.pre".into(), Value::String("default".into())),
            ("tokenizer.ggml.tokens".into(), Value::Array(tokens.into_iter().map(Value::String).collect())),
            ("tokenizer.ggml.scores".into(), Value::Array(scores.into_iter().map(Value::F32).collect())),
            ("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect())),
            ("tokenizer.ggml.bos_token_id".into(), u32v(2)),
            ("tokenizer.ggml.eos_token_id".into(), u32v(1)),
            ("tokenizer.ggml.unknown_token_id".into(), u32v(3)),
            ("tokenizer.ggml.padding_token_id".into(), u32v(0)),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
            ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
        ];
        if let Some(template) = &self.chat_template {
            metadata.push(("tokenizer.chat_template".into(), Value::String(template.clone())));
        }
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?);
        gguf_file::write(&mut file, &metadata, &tensors)?;
        std::io::Write::flush(&mut file).map_err(|e| Error::io(path, e))?;
        Ok(())
    }
}
