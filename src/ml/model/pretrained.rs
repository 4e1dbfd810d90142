//! Pretrained BERT-family encoders (BERT, MiniLM) from a Hugging Face folder: `config.json`,
//! `model.safetensors` and `tokenizer.json`. The weights load by tensor name into the same
//! [`Encoder`] a Transformer trained here uses (post-norm, token-type embeddings and a LayerNorm
//! over the embeddings switched on); texts are tokenised by the `tokenizers` crate, the same
//! code as the Python package. Nothing here downloads: `scripts/fetch_models.sh minilm` fills the cache.
//!
//! Every way a folder can be unusable (a file missing, an architecture this encoder is not, a
//! tensor missing or of another shape, a tokenizer that does not parse) is an [`Error::Data`]
//! naming the file and what is wrong, since the folder is the user's input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::layers::{Dense, ParamBuilder};
use super::transformer::{Encoder, EncoderLayer, InputEmbedding, LayerNorm};
use crate::error::{Error, Result};
use crate::ml::spec::{NormPlacement, Pooling};

/// The files a pretrained folder must hold.
pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const TOKENIZER: &str = "tokenizer.json";

/// A spec path starting with this names a folder in the model cache.
pub const CACHE_PREFIX: &str = "cache:";

/// The model cache: `$VIGIL_MODEL_CACHE`, else `~/.cache/vigil/models` (where
/// `scripts/fetch_models.sh minilm` unpacks models).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIGIL_MODEL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("vigil").join("models")
}

/// The folder a spec's `path` names: `cache:NAME` in the model cache, else the path itself.
pub fn resolve(path: &str) -> PathBuf {
    match path.strip_prefix(CACHE_PREFIX) {
        Some(name) => cache_dir().join(name),
        None => PathBuf::from(path),
    }
}

/// The fields of a BERT `config.json` that the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}

/// A checked pretrained folder.
#[derive(Debug, Clone)]
pub struct Folder {
    pub dir: PathBuf,
    pub config: BertConfig,
}

impl Folder {
    /// Opens `dir`: every file present and the config one this encoder can load.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::data(
                dir,
                "is not a folder; a pretrained encoder is a folder with config.json, model.safetensors \
                 and tokenizer.json (scripts/fetch_models.sh minilm fetches all-MiniLM-L6-v2 into the cache)",
            ));
        }
        for file in [CONFIG, WEIGHTS, TOKENIZER] {
            if !dir.join(file).is_file() {
                return Err(Error::data(
                    dir,
                    format!(
                        "has no {file}; a pretrained encoder folder needs config.json, model.safetensors \
                         and tokenizer.json (the Hugging Face layout)"
                    ),
                ));
            }
        }
        let path = dir.join(CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| Error::data(&path, format!("not a BERT config: {e}")))?;
        let model_type = config.model_type.clone().unwrap_or_default();
        let bert_arch = config.architectures.iter().all(|a| a.starts_with("Bert"));
        if model_type != "bert" || !bert_arch {
            return Err(Error::data(
                &path,
                format!(
                    "model_type {model_type:?} (architectures {:?}) is not supported: Vigil loads \
                     BERT-family encoders (model_type \"bert\": BERT, MiniLM)",
                    config.architectures
                ),
            ));
        }
        if config.hidden_act != "gelu" {
            return Err(Error::data(
                &path,
                format!(
                    "hidden_act {:?} is not supported; the encoder uses \"gelu\" (erf)",
                    config.hidden_act
                ),
            ));
        }
        if let Some(p) = config.position_embedding_type.as_deref().filter(|p| *p != "absolute") {
            return Err(Error::data(
                &path,
                format!("position_embedding_type {p:?} is not supported; only \"absolute\""),
            ));
        }
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(Error::data(
                &path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        Ok(Folder { dir: dir.to_path_buf(), config })
    }

    /// The encoder with the folder's weights. Where `trainable`, its parameters are variables
    /// added to `pb` (fine-tuning); else they are constants, returned by name, that no gradient
    /// reaches (a frozen encoder, which also runs candle's faster no-gradient ops).
    pub fn load_encoder(
        &self,
        pb: &mut ParamBuilder,
        pooling: Pooling,
        trainable: bool,
        dropout: f32,
    ) -> Result<(Encoder, Vec<(String, Tensor)>)> {
        let path = self.dir.join(WEIGHTS);
        let loaded = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| Error::data(&path, format!("not a readable safetensors file: {e}")))?;
        // Some checkpoints (BertForSequenceClassification) put the encoder under `bert.`.
        let prefix = if loaded.contains_key("embeddings.word_embeddings.weight") { "" } else { "bert." };
        let c = &self.config;
        let mut frozen = Vec::new();
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let key = format!("{prefix}{name}");
            let t = loaded.get(&key).ok_or_else(|| {
                Error::data(
                    &path,
                    format!("has no tensor {name:?}, which a BERT encoder with config.json's sizes needs"),
                )
            })?;
            if t.dims() != shape {
                return Err(Error::data(
                    &path,
                    format!("tensor {name:?} has shape {:?}; config.json's sizes need {shape:?}", t.dims()),
                ));
            }
            let t = t.to_dtype(DType::F32)?.to_device(&pb.device)?;
            if trainable {
                pb.adopt(name, t)
            } else {
                frozen.push((name.to_string(), t.clone()));
                Ok(t)
            }
        };
        let (e, ff) = (c.hidden_size, c.intermediate_size);
        let word = take("embeddings.word_embeddings.weight", &[c.vocab_size, e])?;
        let position = take("embeddings.position_embeddings.weight", &[c.max_position_embeddings, e])?;
        let token_type = take("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, e])?;
        let mut norm = |prefix: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: take(&format!("{prefix}.weight"), &[e])?,
                bias: take(&format!("{prefix}.bias"), &[e])?,
                eps: c.layer_norm_eps,
            })
        };
        let embed_norm = norm("embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let mut dense = |name: &str, i: usize, o: usize| -> Result<Dense> {
                Ok(Dense {
                    weight: take(&format!("{p}.{name}.weight"), &[o, i])?,
                    bias: take(&format!("{p}.{name}.bias"), &[o])?,
                    quant: None,
                })
            };
            let query = dense("attention.self.query", e, e)?;
            let key = dense("attention.self.key", e, e)?;
            let value = dense("attention.self.value", e, e)?;
            let attn_out = dense("attention.output.dense", e, e)?;
            let ff_in = dense("intermediate.dense", e, ff)?;
            let ff_out = dense("output.dense", ff, e)?;
            let mut ln = |name: &str| -> Result<LayerNorm> {
                Ok(LayerNorm {
                    weight: take(&format!("{p}.{name}.weight"), &[e])?,
                    bias: take(&format!("{p}.{name}.bias"), &[e])?,
                    eps: c.layer_norm_eps,
                })
            };
            let attn_norm = ln("attention.output.LayerNorm")?;
            let ff_norm = ln("output.LayerNorm")?;
            layers.push(EncoderLayer { query, key, value, attn_out, attn_norm, ff_in, ff_out, ff_norm });
        }
        let encoder = Encoder {
            input: InputEmbedding::Tokens(word),
            cls: None,
            position,
            token_type: Some(token_type),
            embed_norm: Some(embed_norm),
            layers,
            heads: c.num_attention_heads,
            norm: NormPlacement::Post,
            pooling,
            dropout,
            patch: 1,
        };
        Ok((encoder, frozen))
    }

    /// The folder's tokenizer, cut to `max_len` tokens (checked against the model's positions
    /// and vocabulary).
    pub fn tokenizer(&self, max_len: usize) -> Result<WordPieces> {
        if max_len == 0 || max_len > self.config.max_position_embeddings {
            return Err(Error::data(
                self.dir.join(CONFIG),
                format!(
                    "max_len {max_len} must be between 1 and the model's max_position_embeddings ({})",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let words = WordPieces::open(&self.dir.join(TOKENIZER), max_len)?;
        let size = words.tokenizer.get_vocab_size(true);
        if size > self.config.vocab_size {
            return Err(Error::data(
                self.dir.join(TOKENIZER),
                format!("has {size} tokens, more than config.json's vocab_size {}", self.config.vocab_size),
            ));
        }
        Ok(words)
    }
}

/// A Hugging Face tokenizer that gives each text exactly `max_len` ids, padded with id 0
/// ([`crate::ml::data::preprocess::PAD`], BERT's `[PAD]`).
#[derive(Clone)]
pub struct WordPieces {
    pub tokenizer: Arc<Tokenizer>,
    pub max_len: usize,
}

impl std::fmt::Debug for WordPieces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WordPieces(max_len: {})", self.max_len)
    }
}

/// Tokenizers already read, by file and length: serving one text must not parse a 700 kB file.
static TOKENIZERS: OnceLock<Mutex<TokenizerCache>> = OnceLock::new();

/// Tokenizers by `tokenizer.json` path and length.
type TokenizerCache = HashMap<(PathBuf, usize), Arc<Tokenizer>>;

impl WordPieces {
    /// Reads `path` (a `tokenizer.json`), truncating to `max_len` with its special tokens kept.
    pub fn open(path: &Path, max_len: usize) -> Result<Self> {
        let cache = TOKENIZERS.get_or_init(Default::default);
        let key = (path.to_path_buf(), max_len);
        if let Some(t) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(WordPieces { tokenizer: t, max_len });
        }
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| {
            Error::data(path, format!("not a tokenizer this version of `tokenizers` reads: {e}"))
        })?;
        if tokenizer.token_to_id("[PAD]").is_some_and(|id| id != crate::ml::data::preprocess::PAD) {
            return Err(Error::data(
                path,
                "its [PAD] token is not id 0, as BERT's is and the padding mask assumes",
            ));
        }
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| Error::data(path, format!("cannot truncate to {max_len} tokens: {e}")))?;
        tokenizer.with_padding(None);
        let tokenizer = Arc::new(tokenizer);
        if let Ok(mut c) = cache.lock() {
            c.insert(key, tokenizer.clone());
        }
        Ok(WordPieces { tokenizer, max_len })
    }

    /// The ids of one text with its special tokens, `max_len` of them, padding last.
    pub fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| format!("cannot tokenise: {e}"))?;
        let mut ids = enc.get_ids().to_vec();
        ids.truncate(self.max_len);
        ids.resize(self.max_len, crate::ml::data::preprocess::PAD);
        Ok(ids)
    }

    /// The ids of one text, not padded (what the Python package gives).
    pub fn ids(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| format!("cannot tokenise: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }
}

/// Sentence embeddings from an encoder: each text tokenised (no padding beyond the longest in
/// its batch), the real tokens' final states averaged and the mean scaled to unit length, as
/// sentence-transformers' Pooling(mean) + Normalize modules do. The encoder is a pretrained
/// folder's, or that of a run whose model is a Transformer on text or Pretrained
/// ([`Self::from_network`]); whatever the run pools with for its classifier, embeddings are
/// always the mean (over a learned CLS vector too, as a BERT's mean takes in its [CLS]).
#[derive(Debug)]
pub struct SentenceEncoder {
    pub encoder: Encoder,
    pub pieces: SentenceTokens,
}

/// How a [`SentenceEncoder`] turns a text into token ids: a pretrained folder's WordPiece
/// tokenizer, or the word vocabulary a run's `Tokenize` step fitted.
#[derive(Debug)]
pub enum SentenceTokens {
    WordPieces(WordPieces),
    Words { index: HashMap<String, u32>, lowercase: bool, max_len: usize },
}

impl SentenceTokens {
    /// The text's token ids, without padding, at most [`Self::max_len`] of them.
    pub fn ids(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        match self {
            SentenceTokens::WordPieces(p) => p.ids(text),
            SentenceTokens::Words { index, lowercase, max_len } => {
                Ok(crate::ml::data::preprocess::words(text, *lowercase)
                    .take(*max_len)
                    .map(|w| index.get(w.as_str()).copied().unwrap_or(crate::ml::data::preprocess::UNK))
                    .collect())
            }
        }
    }

    /// The longest sequence of ids it gives.
    pub fn max_len(&self) -> usize {
        match self {
            SentenceTokens::WordPieces(p) => p.max_len,
            SentenceTokens::Words { max_len, .. } => *max_len,
        }
    }
}

/// Texts encoded at once: sentence-transformers' default batch.
pub const EMBED_BATCH: usize = 32;

impl From<WordPieces> for SentenceTokens {
    fn from(p: WordPieces) -> Self {
        SentenceTokens::WordPieces(p)
    }
}

impl SentenceEncoder {
    /// The encoder of a trained network, with the tokeniser of its run's preprocessing; `Err`
    /// says why the network cannot embed texts (no Transformer encoder over tokens).
    pub fn from_network(
        network: &super::Network,
        pipeline: &crate::ml::data::preprocess::Pipeline,
    ) -> std::result::Result<Self, String> {
        use crate::ml::data::preprocess::FittedStep;
        let encoder = network.encoder().filter(|_| network.takes_tokens()).ok_or_else(|| {
            format!(
                "a {} model has no Transformer encoder; embeddings come from a Transformer on text or a \
                 Pretrained encoder",
                network.spec.kind()
            )
        })?;
        let pieces = match pipeline.steps.first() {
            Some(FittedStep::WordPieces { tokenizer, max_len }) => {
                WordPieces::open(tokenizer.as_ref(), *max_len).map_err(|e| e.to_string())?.into()
            }
            Some(FittedStep::Tokenize { vocab, lowercase, max_len }) => SentenceTokens::Words {
                index: vocab.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect(),
                lowercase: *lowercase,
                max_len: *max_len,
            },
            _ => return Err("the run's preprocessing has no tokeniser".into()),
        };
        Ok(SentenceEncoder { encoder: encoder.clone(), pieces })
    }

    /// The folder's encoder, frozen, with its tokenizer at the length sentence-transformers uses
    /// (`sentence_bert_config.json`'s `max_seq_length`, else the model's positions).
    pub fn open(dir: &Path) -> Result<Self> {
        let folder = Folder::open(dir)?;
        let max_len = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map_or(folder.config.max_position_embeddings, |n| n as usize)
            .min(folder.config.max_position_embeddings);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut pb =
            ParamBuilder { vars: Vec::new(), rng: &mut rng, init: Default::default(), device: Device::Cpu };
        let (encoder, _) = folder.load_encoder(&mut pb, Pooling::Mean, false, 0.0)?;
        Ok(SentenceEncoder { encoder, pieces: folder.tokenizer(max_len)?.into() })
    }

    /// Unit-length embeddings, one per text.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(EMBED_BATCH) {
            let ids: Vec<Vec<u32>> =
                chunk.iter().map(|t| self.pieces.ids(t).map_err(Error::argument)).collect::<Result<_>>()?;
            let len = ids.iter().map(Vec::len).max().unwrap_or(1).clamp(1, self.pieces.max_len());
            let flat: Vec<u32> = ids
                .iter()
                .flat_map(|row| {
                    let mut row = row.clone();
                    row.resize(len, crate::ml::data::preprocess::PAD);
                    row
                })
                .collect();
            let x = Tensor::from_vec(flat, (chunk.len(), len), &Device::Cpu)?;
            out.extend(self.embed_ids(&x)?);
        }
        Ok(out)
    }

    /// Unit-length embeddings of a batch of padded token ids `(B, L)`.
    pub fn embed_ids(&self, ids: &Tensor) -> Result<Vec<Vec<f32>>> {
        let mask = super::token_mask(ids)?;
        let (states, mask) = crate::ml::kernels::inference(|| {
            self.encoder.hidden_states(&self.encoder.embed(ids)?, &mask, None)
        })?;
        let pooled = super::layers::masked_mean(&states, &mask)?;
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(pooled.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}
