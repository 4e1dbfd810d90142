//! The model's tokenizer, built from the GGUF file's own metadata (`tokenizer.ggml.*`) into a
//! Hugging Face `tokenizers::Tokenizer`, or read from a `tokenizer.json` beside the file. Also
//! the incremental detokeniser that turns generated ids into text without ever splitting a
//! multi-byte character.
//!
//! Two kinds of GGUF vocabulary are understood, the two llama.cpp writes for the models we run:
//! - `llama` (SentencePiece, as Gemma and Llama 2 ship): spaces become `▁`, pieces merge pairwise
//!   in the order of the merged piece's score (llama.cpp's SPM tokenizer does exactly this, so
//!   BPE with merges ranked by score reproduces it), unknown bytes fall back to `<0xNN>` tokens.
//! - `gpt2` (byte-level BPE, as Llama 3 and Qwen ship): the file carries its merges; the text is
//!   split with the pre-tokeniser regex its `tokenizer.ggml.pre` names.
//!
//! Control tokens (`<start_of_turn>`, ...) are special added tokens: they are matched in text, so
//! a chat prompt can carry them, and skipped when decoding. User-defined tokens (Gemma's `\n`,
//! runs of spaces) are added tokens too, matched before the model splits the rest, as llama.cpp
//! does.

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use crate::error::{Error, Result};

/// GGUF `token_type` values (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// The GPT-2 pre-tokeniser regex, the default for byte-level vocabularies.
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's (`tokenizer.ggml.pre = llama-bpe`) and, with single digits, Qwen 2's (`qwen2`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokens of the vocabulary, as the file lists them (index = id).
pub fn vocabulary(path: &Path, content: &Content) -> Result<Vec<String>> {
    let tokens = array(path, content, "tokenizer.ggml.tokens")?;
    tokens
        .iter()
        .map(|t| {
            t.to_string().cloned().map_err(|_| Error::data(path, "tokenizer.ggml.tokens holds a non-string"))
        })
        .collect()
}

/// Builds the tokenizer: `tokenizer.json` beside the model when present, else the metadata.
pub fn load(path: &Path, content: &Content, tokens: &[String]) -> Result<Tokenizer> {
    for beside in beside_files(path) {
        if beside.is_file() {
            return Tokenizer::from_file(&beside)
                .map_err(|e| Error::data(&beside, format!("cannot read this tokenizer: {e}")));
        }
    }
    let kind = string(content, "tokenizer.ggml.model").ok_or_else(|| {
        Error::data(
            path,
            "no tokenizer in the file (tokenizer.ggml.model is missing) and no tokenizer.json beside it",
        )
    })?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(values)) => values.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let mut tokenizer = match kind.as_str() {
        "llama" => sentencepiece(path, content, tokens)?,
        "gpt2" => byte_level(path, content, tokens)?,
        other => {
            return Err(Error::data(
                path,
                format!(
                    "tokenizer.ggml.model {other:?} is not supported (supported: llama, gpt2); put a tokenizer.json beside the file"
                ),
            ));
        }
    };
    let added = |kind: i32, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == kind)
            .map(|(token, _)| AddedToken::from(token.clone(), special).normalized(false))
            .collect()
    };
    let fail = |e: tokenizers::Error| Error::data(path, format!("cannot add the special tokens: {e}"));
    tokenizer.add_special_tokens(added(TYPE_CONTROL, true)).map_err(fail)?;
    tokenizer.add_tokens(added(TYPE_USER_DEFINED, false)).map_err(fail)?;
    Ok(tokenizer)
}

/// `NAME.tokenizer.json`, then `tokenizer.json`, in the model's folder.
fn beside_files(path: &Path) -> Vec<std::path::PathBuf> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    vec![path.with_file_name(format!("{stem}.tokenizer.json")), path.with_file_name("tokenizer.json")]
}

/// A SentencePiece vocabulary as BPE: merges derived from the scores (see the module's doc).
fn sentencepiece(path: &Path, content: &Content, tokens: &[String]) -> Result<Tokenizer> {
    let scores: Vec<f32> = match content.metadata.get("tokenizer.ggml.scores") {
        Some(Value::Array(values)) => values.iter().map(|v| v.to_f32().unwrap_or(0.0)).collect(),
        _ => {
            return Err(Error::data(
                path,
                "a SentencePiece tokenizer needs tokenizer.ggml.scores, which is missing",
            ));
        }
    };
    if scores.len() != tokens.len() {
        return Err(Error::data(
            path,
            format!("tokenizer.ggml.scores has {} entries for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    // Every way to split a piece into two pieces of the vocabulary is a merge, ranked by the
    // merged piece's score (higher first), as transformers' SentencePieceExtractor derives them.
    let mut merges: Vec<(f32, u32, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (cut, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(cut);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                merges.push((scores[id], l, r, left.to_string(), right.to_string()));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> = merges.into_iter().map(|m| (m.3, m.4)).collect();
    let unk = content
        .metadata
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.to_u32().ok())
        .and_then(|id| tokens.get(id as usize).cloned());
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let model = builder.build().map_err(|e| Error::data(path, format!("cannot build the tokenizer: {e}")))?;
    let mut tokenizer = Tokenizer::new(model);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    // Llama 2's SentencePiece adds a space before the text; Gemma's does not.
    let prefix = content
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    if prefix {
        normalizers.push(Prepend::new("▁".into()).into());
    }
    normalizers.push(Replace::new(" ", "▁").map_err(|e| Error::Internal(e.to_string()))?.into());
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        tokenizers::decoders::DecoderWrapper::Replace(
            Replace::new("▁", " ").map_err(|e| Error::Internal(e.to_string()))?,
        ),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if prefix {
        decoders.push(tokenizers::decoders::strip::Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// A byte-level BPE vocabulary with the file's own merges.
fn byte_level(path: &Path, content: &Content, tokens: &[String]) -> Result<Tokenizer> {
    let merges: Vec<(String, String)> = array(path, content, "tokenizer.ggml.merges")?
        .iter()
        .filter_map(|m| m.to_string().ok())
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::data(path, format!("cannot build the tokenizer: {e}")))?;
    let split = match string(content, "tokenizer.ggml.pre").as_deref() {
        Some("llama-bpe" | "llama3" | "smaug-bpe") => LLAMA3_SPLIT,
        Some("qwen2") => QWEN2_SPLIT,
        _ => GPT2_SPLIT,
    };
    let split = Split::new(SplitPattern::Regex(split.to_string()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| Error::Internal(format!("pre-tokeniser regex: {e}")))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(tokenizers::pre_tokenizers::byte_level::ByteLevel::new(
            false, false, false,
        )),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::new(false, false, false)));
    Ok(tokenizer)
}

fn array<'a>(path: &Path, content: &'a Content, key: &str) -> Result<&'a Vec<Value>> {
    match content.metadata.get(key) {
        Some(Value::Array(values)) => Ok(values),
        Some(_) => Err(Error::data(path, format!("{key} is not an array"))),
        None => Err(Error::data(path, format!("{key} is missing from the metadata"))),
    }
}

pub(super) fn string(content: &Content, key: &str) -> Option<String> {
    content.metadata.get(key).and_then(|v| v.to_string().ok()).cloned()
}

/// Turns generated ids into text a token at a time. Decoding one id alone gives the wrong text
/// (a SentencePiece piece's leading space, a byte of a multi-byte character), so it decodes a
/// short window of recent ids and hands out only what the new id added, holding it back while
/// the text ends in an incomplete character (the decoder's U+FFFD). This is text-generation-
/// inference's scheme (`decode_token` with prefix and read offsets).
#[derive(Debug, Default, Clone)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl Detokenizer {
    /// Takes the next generated id; returns the text it completes (often empty mid-character).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let decode =
            |ids: &[u32]| tokenizer.decode(ids, true).map_err(|e| Error::Internal(format!("decoding: {e}")));
        let before = decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let now = decode(&self.ids[self.prefix_offset..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.is_char_boundary(before.len()) {
            let text = now[before.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(text)
        } else {
            Ok(String::new())
        }
    }
}
