//! The GGUF engine: loads a quantised language model with candle-core's `gguf_file` and runs it
//! with candle-transformers' architectures (Gemma 3 from a fixed copy in [`gemma3`], Llama,
//! Qwen 3; picked by
//! `general.architecture`), with the file's own tokenizer and chat template. It implements
//! [`LanguageModel`]; nothing here knows about HTTP or the console.
//!
//! **One KV cache per generation.** candle's quantised models keep their attention cache
//! inside `ModelWeights`, so two sequences cannot share one. Every weight in a `ModelWeights`
//! is an `Arc`ed `QTensor` (for Gemma 3's Q8_0 weights, an `Arc`ed `Q8Matrix` of
//! [`crate::ml::kernels::q8`]) or a reference-counted `Tensor`, so `clone()` copies only handles:
//! each [`Generation`] starts from a clone of the loaded, never-run weights and grows its own
//! cache. Measured on Gemma 3 270M Q4_K_M with `vigil bench --llm`: 1,232 MiB resident after
//! loading and the benchmark's runs, 1,065 MiB with 8 generations started at once (the clones
//! cost nothing measurable; the allocator had given back the runs' buffers); the cache itself
//! costs 2 x layers x kv_heads x head_dim x 4 bytes a token (147 KB a token for that model).
//! Gemma 3 also keeps its Q4_K and Q6_K layer weights widened to f32 once it has run (142 MB
//! for the 270M model, shared by all generations; see `gemma3::QMatMul`).
//! Qwen 2's `ModelWeights` is not `Clone`, which is why it is not offered.

mod chat;
mod gemma3;
mod sample;
mod tokenizer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen3};
use tokenizers::Tokenizer;

pub use chat::{ChatFormat, ChatTemplate, TEMPLATE_NAMES, TemplateFile, Turn};
pub use sample::{Pick, Sampler};
pub use tokenizer::Detokenizer;

use super::backend::{
    ChatMessage, FinishReason, GeneratedToken, Generation, LanguageModel, ModelInfo, SamplingParams, Step,
    StopScanner, TensorType, TokenLogprob,
};
use crate::error::{Error, InputError, Result};

/// The architectures this build runs, as `general.architecture` names them.
pub const ARCHITECTURES: &[&str] = &["gemma3", "llama", "qwen3"];

/// The network of one architecture, with its cache inside (see the module's doc).
#[derive(Clone)]
enum Weights {
    Gemma3(gemma3::ModelWeights),
    Llama(quantized_llama::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
}

impl Weights {
    /// Runs `ids` at positions `pos..`, returning the next token's logits (one per vocabulary
    /// entry).
    fn forward(&mut self, ids: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        let device = Device::Cpu;
        let input = Tensor::new(ids, &device)?.unsqueeze(0)?;
        let logits = match self {
            Weights::Gemma3(m) => m.forward(&input, pos)?,
            Weights::Llama(m) => m.forward(&input, pos)?,
            Weights::Qwen3(m) => m.forward(&input, pos)?,
        };
        logits.squeeze(0)?.to_dtype(candle_core::DType::F32)?.to_vec1()
    }

    /// The longest sequence candle's implementation holds (its rotary tables' length).
    fn max_positions(&self) -> usize {
        match self {
            Weights::Gemma3(_) => gemma3::MAX_SEQ_LEN,
            Weights::Llama(_) => quantized_llama::MAX_SEQ_LEN,
            Weights::Qwen3(_) => usize::MAX,
        }
    }
}

/// A loaded GGUF language model. Cheap to share: generations clone its weights' handles.
pub struct GgufModel {
    path: PathBuf,
    info: ModelInfo,
    weights: Weights,
    tokenizer: Arc<Tokenizer>,
    /// Ids that end a generation: the file's end-of-sequence and the chat format's end of turn.
    eos: Vec<u32>,
    bos: Option<u32>,
    chat: Option<ChatTemplate>,
    /// The chat template's end of turn when it is text rather than one token of the
    /// vocabulary: a stop string of every generation.
    end_of_turn_text: Option<String>,
}

impl GgufModel {
    /// Loads the model in `path` with the chat template its metadata names. Every problem with
    /// the file is `Error::Data` naming it.
    pub fn load(path: &Path) -> Result<GgufModel> {
        Self::load_with(path, None)
    }

    /// Loads the model in `path`, with `template` as its chat template when given (the
    /// operator's `--chat-template`) instead of the one its metadata names.
    pub fn load_with(path: &Path, override_template: Option<ChatTemplate>) -> Result<GgufModel> {
        let mut file =
            File::open(path).map_err(|e| Error::data(path, format!("cannot open the model: {e}")))?;
        let file_bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut magic = [0u8; 4];
        if file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            if magic[..2] == [0x1f, 0x8b] {
                return Err(Error::data(
                    path,
                    "a gzip file, not GGUF: `vigil optimize --prune` packs a pruned classifier variant this \
                     way; it is a network of the run's layers, not a language model (serve it with `vigil \
                     serve RUN@VARIANT`)",
                ));
            }
            return Err(Error::data(
                path,
                format!(
                    "not a GGUF file: it starts with {:?}, a GGUF model starts with \"GGUF\"",
                    String::from_utf8_lossy(&magic[..file_bytes.min(4) as usize])
                ),
            ));
        }
        let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
        let content = Content::read(&mut reader)
            .map_err(|e| Error::data(path, format!("the GGUF header is damaged or truncated: {e}")))?;
        check_tensors_fit(path, &content, file_bytes)?;

        if let Some(variant) = tokenizer::string(&content, crate::ml::variants::VARIANT_KEY) {
            return Err(Error::data(
                path,
                format!(
                    "a classifier variant that `vigil optimize` wrote ({variant}): its tensors are a run's \
                     layers, with no vocabulary, attention or architecture, so it is not a language model; \
                     serve it with `vigil serve RUN@VARIANT`"
                ),
            ));
        }
        let architecture = tokenizer::string(&content, "general.architecture")
            .ok_or_else(|| Error::data(path, "general.architecture is missing from the metadata"))?;
        let tokens = tokenizer::vocabulary(path, &content)?;
        let tokenizer = tokenizer::load(path, &content, &tokens)?;
        let template = tokenizer::string(&content, "tokenizer.chat_template");
        let chat = override_template.or_else(|| {
            ChatFormat::detect(template.as_deref(), |t| tokens.iter().any(|v| v == t))
                .map(ChatTemplate::Family)
        });
        let id_of = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
        let mut eos: Vec<u32> = id_of("tokenizer.ggml.eos_token_id").into_iter().collect();
        let mut end_of_turn_text = None;
        if let Some(end) = chat.as_ref().and_then(|c| c.end_of_turn()) {
            match tokens.iter().position(|t| t == end) {
                Some(id) => eos.push(id as u32),
                None => end_of_turn_text = Some(end.to_string()),
            }
        }
        let add_bos = content
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(true);
        let bos = id_of("tokenizer.ggml.bos_token_id").filter(|_| add_bos);

        let info = describe(path, &content, &architecture, file_bytes, tokens.len());
        let build =
            |e: candle_core::Error| Error::data(path, format!("cannot build the {architecture} model: {e}"));
        let weights = match architecture.as_str() {
            "gemma3" => Weights::Gemma3(
                gemma3::ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).map_err(build)?,
            ),
            "llama" => Weights::Llama(
                quantized_llama::ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)
                    .map_err(build)?,
            ),
            "qwen3" => Weights::Qwen3(
                quantized_qwen3::ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)
                    .map_err(build)?,
            ),
            other => {
                return Err(Error::data(
                    path,
                    format!(
                        "architecture {other:?} is not supported (this build runs {})",
                        ARCHITECTURES.join(", ")
                    ),
                ));
            }
        };
        let info = ModelInfo {
            context_length: info.context_length.min(weights.max_positions()),
            chat_template: chat.as_ref().map(ChatTemplate::describe),
            ..info
        };
        Ok(GgufModel {
            path: path.to_path_buf(),
            info,
            weights,
            tokenizer: Arc::new(tokenizer),
            eos,
            bos,
            chat,
            end_of_turn_text,
        })
    }

    /// The ids that end a generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }
}

/// Every tensor's bytes must lie inside the file: a truncated download is named here, with the
/// first tensor it cuts, rather than as a read error deep in the model's constructor.
fn check_tensors_fit(path: &Path, content: &Content, file_bytes: u64) -> Result<()> {
    let mut infos: Vec<_> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    for (name, info) in infos {
        let dtype = info.ggml_dtype;
        let bytes = (info.shape.elem_count() / dtype.block_size() * dtype.type_size()) as u64;
        let end = content.tensor_data_offset + info.offset + bytes;
        if end > file_bytes {
            return Err(Error::data(
                path,
                format!(
                    "the file is truncated: tensor {name} needs bytes up to {end} and the file has {file_bytes} \
                     (fetch it again)"
                ),
            ));
        }
    }
    Ok(())
}

/// What the file says about the model, for `/v1/models`, the console and the benchmark.
fn describe(
    path: &Path,
    content: &Content,
    architecture: &str,
    file_bytes: u64,
    vocab_size: usize,
) -> ModelInfo {
    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut parameters = 0u64;
    for info in content.tensor_infos.values() {
        let elems = info.shape.elem_count();
        parameters += elems as u64;
        let bytes = (elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
        let entry = by_type.entry(format!("{:?}", info.ggml_dtype)).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }
    let mut quantisations: Vec<TensorType> = by_type
        .into_iter()
        .map(|(ggml_type, (tensors, bytes))| TensorType { ggml_type, tensors, bytes })
        .collect();
    quantisations.sort_by_key(|q| std::cmp::Reverse(q.bytes));
    let context_length = content
        .metadata
        .get(&format!("{architecture}.context_length"))
        .and_then(|v| v.to_u64().ok())
        .unwrap_or(2048) as usize;
    ModelInfo {
        name: path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
        architecture: architecture.to_string(),
        parameters,
        file_bytes,
        context_length,
        vocab_size,
        quantisations,
        file_type: content
            .metadata
            .get("general.file_type")
            .and_then(|v| v.to_u32().ok())
            .map(file_type_name),
        chat_template: None,
    }
}

/// llama.cpp's name for a `general.file_type` (its `llama_ftype`: the quantisation the file
/// was made with, most tensors in that type, some kept wider).
fn file_type_name(code: u32) -> String {
    let name = match code {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return format!("type {code}"),
    };
    name.to_string()
}

impl LanguageModel for GgufModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::unsuitable(format!("cannot tokenise the text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::unsuitable(format!("cannot decode these tokens: {e}")))
    }

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        match &self.chat {
            Some(template) => template.format(messages),
            None => Err(InputError::Unsuitable(format!(
                "{}: the model's chat template is not one Vigil knows (Gemma, Llama 3, ChatML); \
                 choose one with --chat-template ({TEMPLATE_NAMES} or a .ron file of role prefixes and \
                 suffixes), or send a plain completion prompt instead",
                self.path.display()
            ))
            .into()),
        }
    }

    fn start(&self, prompt: &[u32], params: &SamplingParams) -> Result<Box<dyn Generation>> {
        params.check()?;
        let context = self.info.context_length;
        if prompt.is_empty() {
            return Err(Error::argument("the prompt is empty: give at least one token"));
        }
        if prompt.len() >= context {
            return Err(Error::argument(format!(
                "the prompt is {} tokens and the model's context holds {context}",
                prompt.len()
            )));
        }
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= self.info.vocab_size) {
            return Err(Error::argument(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.info.vocab_size
            )));
        }
        let mut weights = self.weights.clone();
        let logits = weights.forward(prompt, 0)?;
        Ok(Box::new(GgufGeneration {
            weights,
            tokenizer: Arc::clone(&self.tokenizer),
            eos: self.eos.clone(),
            logits,
            pending: None,
            pos: prompt.len(),
            context,
            max_tokens: params.max_tokens,
            sampler: Sampler::new(params),
            stops: StopScanner::new(
                &[params.stop.clone(), self.end_of_turn_text.iter().cloned().collect()].concat(),
            ),
            detok: Detokenizer::default(),
            done: 0,
            finished: None,
        }))
    }

    fn prompt_prefix(&self) -> Vec<u32> {
        self.bos.into_iter().collect()
    }
}

/// One sequence being decoded, with its own copy of the weights' handles and its own cache.
struct GgufGeneration {
    weights: Weights,
    tokenizer: Arc<Tokenizer>,
    eos: Vec<u32>,
    /// The logits for the next position.
    logits: Vec<f32>,
    /// The last token chosen, not yet run through the model: it is run at the start of the next
    /// step, so a generation that ends (length, stop string) never pays for a forward pass it
    /// does not use.
    pending: Option<u32>,
    /// Position of the next token fed to the model.
    pos: usize,
    context: usize,
    max_tokens: usize,
    sampler: Sampler,
    stops: StopScanner,
    detok: Detokenizer,
    done: usize,
    finished: Option<FinishReason>,
}

impl GgufGeneration {
    fn finish(&mut self, reason: FinishReason) -> Step {
        self.finished = Some(reason);
        self.stops.finish(reason, self.eos.first().copied().unwrap_or(0))
    }
}

impl Generation for GgufGeneration {
    fn step(&mut self) -> Result<Step> {
        if let Some(reason) = self.finished {
            return Ok(Step::Finished(reason));
        }
        if self.done >= self.max_tokens {
            return Ok(self.finish(FinishReason::Length));
        }
        if let Some(id) = self.pending.take() {
            if self.pos >= self.context {
                return Ok(self.finish(FinishReason::Length));
            }
            self.logits = self.weights.forward(&[id], self.pos)?;
            self.pos += 1;
        }
        let pick = self.sampler.pick(&self.logits);
        if self.eos.contains(&pick.id) {
            return Ok(self.finish(FinishReason::Stop));
        }
        self.done += 1;
        self.pending = Some(pick.id);
        let text = self.detok.push(&self.tokenizer, pick.id)?;
        let scanned = self.stops.push(&text);
        if scanned.stopped {
            self.finished = Some(FinishReason::Stop);
        }
        let top_logprobs = pick
            .top
            .iter()
            .map(|&(id, logprob)| TokenLogprob {
                token: self.tokenizer.decode(&[id], false).unwrap_or_default(),
                logprob,
            })
            .collect();
        Ok(Step::Token(GeneratedToken {
            id: pick.id,
            text: scanned.emit,
            logprob: pick.logprob,
            top_logprobs,
        }))
    }

    fn generated(&self) -> usize {
        self.done
    }
}

#[cfg(test)]
mod tests;
