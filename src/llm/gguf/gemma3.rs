//! Gemma 3, quantised: candle-transformers 0.11.1's `quantized_gemma3` with three fixes, kept here
//! until they are upstream (then this file goes and `mod.rs` uses candle's again):
//! - the feed-forward gate is GELU (tanh approximation), as Gemma's `hidden_activation =
//!   gelu_pytorch_tanh` and llama.cpp's `LLM_FFN_GELU` say; candle's uses SiLU, which writes
//!   fluent but different text (greedy output left transformers' and llama.cpp's after 1-5
//!   tokens on Gemma 3 270M, see bench/llm_reference.py);
//! - the rotary tables are built once per frequency for the model's context length, not once per
//!   layer for 131,072 positions (3.6 GB and seconds of loading for a 270M model);
//! - a sliding layer of window W shows a token W positions, in a prompt's mask and while
//!   decoding (candle's showed W + 1 in a prompt and the whole context while decoding).
//!
//! Otherwise the code is candle's (MIT/Apache-2.0), tracing spans removed.
#![allow(clippy::too_many_arguments)]

use std::sync::{Arc, OnceLock};

use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_nn::{Embedding, Module};
use candle_transformers::quantized_nn::RmsNorm;

use crate::ml::kernels::gemm::{self, refused_q8};
use crate::ml::kernels::{q8, vmath};

pub const MAX_SEQ_LEN: usize = 131072; // Gemma 3 supports 128K context window
pub const DEFAULT_SLIDING_WINDOW_TYPE: usize = 6;
pub const DEFAULT_ROPE_FREQUENCY: f32 = 1_000_000.;
pub const DEFAULT_ROPE_FREQUENCY_SLIDING: f32 = 10_000.;
pub const DEFAULT_ROPE_FREQUENCY_SCALE_FACTOR: f32 = 1.;

/// Rows (tokens) from which a product takes the fast path for a batch (a prompt) rather than
/// the exact one (see [`QMatMul`]).
const BATCHED_ROWS: usize = 16;

/// A quantised linear layer, with two paths.
///
/// **A few tokens (decode, a short prompt): exact.** The dequantised weight times the exact f32
/// activations, as transformers computes it: Q8_0 weights (and Q5_0 ones, rewritten as Q8_0 at
/// load) through Vigil's own product with f32 activations ([`crate::ml::kernels::q8`]), which
/// reads 34 bytes a block and is bound by memory as the 8-bit product is; Q4_K and Q6_K weights
/// widened to f32 once and multiplied by a product split over the threads. ggml's product
/// (llama.cpp's, and candle's) rounds the activations to 8 bits first; with it, Vigil's greedy
/// output parted from transformers' on 2 of 5 prompts, each at a near-tie (0.01-0.08 nats), as
/// llama.cpp's does; exact, all 5 are equal over 32 tokens and the top-1 agrees at 160 of 160
/// positions (`bench/llm_reference.py equality`). The price is decode speed: 46 tokens/s
/// against 68 with 8-bit activations (Gemma 3 270M, 2 threads), most of it the f32 K-quant
/// weights' 142 MB read per token.
///
/// **A batch (a prompt of 16 tokens or more): fast.** Q8_0 weights through the 8-bit product,
/// whose `vpdpbusd` does four times the multiply-adds of an f32 FMA, as llama.cpp's does; Q4_K
/// and Q6_K weights through the packed f32 GEMM of `crates/vigil-gemm` on the widened weight.
/// A prompt is bound by arithmetic; at 691 tokens its next-token predictions still agree with
/// transformers' at 24 of 24 positions.
///
/// The widened K-quant weights (142 MB for Gemma 3 270M: its attention outputs and feed-forward
/// down projections) are made once, on first use, and shared by every generation (clones share
/// the `Arc`). candle 0.11's Q8_0 product was 64% of a decode step, in per-block scale
/// conversions and one dot product at a time.
#[derive(Debug, Clone)]
enum QMatMul {
    /// Q8_0 blocks laid out for Vigil's kernel (the only copy: candle's is dropped at load).
    Q8(Arc<q8::Q8Matrix>),
    /// Any other type, or a weight off the CPU: candle's product, and the weight widened to f32
    /// for batches once one has run.
    Candle { inner: candle_core::quantized::QMatMul, qtensor: Arc<QTensor>, wide: Arc<OnceLock<Vec<f32>>> },
}

impl QMatMul {
    fn from_qtensor(qtensor: QTensor) -> Result<Self> {
        let qtensor = if qtensor.dtype() == GgmlDType::Q5_0 { q5_0_as_q8_0(&qtensor)? } else { qtensor };
        Ok(match qtensor.shape().dims2() {
            Ok((n, k)) if qtensor.dtype() == GgmlDType::Q8_0 && qtensor.device().is_cpu() => {
                let matrix = q8::Q8Matrix::from_q8_0(n, k, &qtensor.data()?).map_err(refused_q8)?;
                QMatMul::Q8(Arc::new(matrix))
            }
            _ => {
                let qtensor = Arc::new(qtensor);
                let inner = candle_core::quantized::QMatMul::from_arc(Arc::clone(&qtensor))?;
                QMatMul::Candle { inner, qtensor, wide: Arc::new(OnceLock::new()) }
            }
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let on_cpu = xs.dtype() == DType::F32 && xs.device().is_cpu();
        let (n, k) = match self {
            QMatMul::Q8(w) => (w.rows(), w.cols()),
            QMatMul::Candle { qtensor, .. } => qtensor.shape().dims2()?,
        };
        let rows = xs.elem_count() / k.max(1);
        let mut dims = xs.dims().to_vec();
        *dims.last_mut().expect("a batch has at least one dimension") = n;
        let x = match self {
            QMatMul::Candle { inner, .. } if !on_cpu => return inner.forward(xs),
            QMatMul::Q8(_) if !on_cpu => candle_core::bail!("Q8_0 weights are multiplied on the CPU, in f32"),
            _ => xs.flatten_all()?.to_vec1::<f32>()?,
        };
        let out = match self {
            QMatMul::Q8(w) => {
                let activations =
                    if rows < BATCHED_ROWS { q8::Activations::Exact } else { q8::Activations::Quantised };
                q8::matmul(w, &x, rows, q8::Threads::Candle, activations)?
            }
            QMatMul::Candle { qtensor, wide, .. } => {
                let wide = match wide.get() {
                    Some(w) => w,
                    None => {
                        let w = qtensor.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
                        // A generation racing this one may have set it first; either copy is the same.
                        let _ = wide.set(w);
                        wide.get().expect("set just above")
                    }
                };
                if rows < BATCHED_ROWS {
                    q8::matmul_wide(wide, n, &x, rows, q8::Threads::Candle)?
                } else {
                    gemm::matmul(gemm::row_major(&x, rows, k)?, gemm::row_major(wide, n, k)?.t())?
                }
            }
        };
        Tensor::from_vec(out, dims, &Device::Cpu)
    }
}

/// Q5_0 weights rewritten as Q8_0, exactly: both hold blocks of 32 integers under one f16
/// scale, Q5_0's in -16..=15, which Q8_0's i8 holds as they are. candle 0.11 has no SIMD dot
/// product for Q5_0 (its `vec_dot` is the scalar generic loop) but AVX and repacked paths for
/// Q8_0, and Gemma 3 270M Q4_K_M stores most of its attention and feed-forward weights in Q5_0:
/// measured with `vigil bench --llm` (2 threads, on a loaded machine) prompt processing went
/// from 4.5 to 25.3 tokens/s, for 22 MiB more memory (34 bytes a block instead of 22). The products are the same integer sums; only the order in which the
/// f32 partial sums are added differs.
fn q5_0_as_q8_0(qtensor: &QTensor) -> Result<QTensor> {
    const Q5_0_BYTES: usize = 22;
    const Q8_0_BYTES: usize = 34;
    let data = qtensor.data()?;
    if data.len() % Q5_0_BYTES != 0 {
        candle_core::bail!("a Q5_0 tensor of {} bytes is not whole blocks", data.len());
    }
    let mut out = Vec::with_capacity(data.len() / Q5_0_BYTES * Q8_0_BYTES);
    for block in data.chunks_exact(Q5_0_BYTES) {
        // Q5_0: d (f16), qh (u32: the fifth bit of each value), qs (16 bytes: low nibbles are
        // values 0..16, high nibbles values 16..32); see llama.cpp's dequantize_row_q5_0.
        let (d, rest) = block.split_at(2);
        let (qh, qs) = rest.split_at(4);
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        out.extend_from_slice(d);
        let low = qs.iter().enumerate().map(|(j, &q)| (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4));
        let high = qs.iter().enumerate().map(|(j, &q)| (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4));
        out.extend(low.chain(high).map(|x| (x as i8 - 16) as u8));
    }
    candle_core::quantized::ggml_file::qtensor_from_ggml(
        GgmlDType::Q8_0,
        &out,
        qtensor.shape().dims().to_vec(),
        &qtensor.device(),
    )
}

#[derive(Debug, Clone)]
struct Mlp {
    feed_forward_gate: QMatMul, // ffn_gate in GGUF
    feed_forward_up: QMatMul,   // ffn_up in GGUF
    feed_forward_down: QMatMul, // ffn_down in GGUF
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = self.feed_forward_gate.forward(xs)?;
        let up = self.feed_forward_up.forward(xs)?;
        // Gemma's activation is GELU, tanh approximation (candle's file has SiLU here).
        let gated = if gate.device().is_cpu() && gate.dtype() == DType::F32 && up.dims() == gate.dims() {
            let (gate_values, up_values) =
                (gate.flatten_all()?.to_vec1::<f32>()?, up.flatten_all()?.to_vec1::<f32>()?);
            let mut gated = vec![0f32; gate_values.len()];
            vmath::gelu_tanh_gated(&gate_values, &up_values, &mut gated);
            Tensor::from_vec(gated, gate.dims(), gate.device())?
        } else {
            (gate.gelu()? * up)?
        };
        self.feed_forward_down.forward(&gated)
    }
}

#[derive(Debug, Clone)]
struct RotaryEmbedding {
    sin: Tensor,
    cos: Tensor,
}

impl RotaryEmbedding {
    fn new(head_dim: usize, rope_frequency: f32, positions: usize, device: &Device) -> Result<Self> {
        let theta: Vec<_> = (0..head_dim)
            .step_by(2)
            .map(|i| 1f32 / rope_frequency.powf(i as f32 / head_dim as f32))
            .collect();
        let theta = Tensor::new(theta.as_slice(), device)?;
        let idx_theta = Tensor::arange(0, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?
            .matmul(&theta.reshape((1, theta.elem_count()))?)?;
        let cos = idx_theta.cos()?;
        let sin = idx_theta.sin()?;
        Ok(Self { sin, cos })
    }

    fn apply_rotary_emb_qkv(&self, q: &Tensor, k: &Tensor, index_pos: usize) -> Result<(Tensor, Tensor)> {
        let (_b_sz, _h, seq_len, _n_embd) = q.dims4()?;
        let cos = self.cos.narrow(0, index_pos, seq_len)?;
        let sin = self.sin.narrow(0, index_pos, seq_len)?;
        let q_embed = candle_nn::rotary_emb::rope(&q.contiguous()?, &cos, &sin)?;
        let k_embed = candle_nn::rotary_emb::rope(&k.contiguous()?, &cos, &sin)?;
        Ok((q_embed, k_embed))
    }
}

#[derive(Debug, Clone)]
struct LayerWeights {
    // Attention components
    attention_wq: QMatMul,
    attention_wk: QMatMul,
    attention_wv: QMatMul,
    attention_wo: QMatMul,

    // Specialized normalization for Q and K
    attention_q_norm: RmsNorm,
    attention_k_norm: RmsNorm,

    // Layer normalization
    attention_norm: RmsNorm,      // Applied before attention
    post_attention_norm: RmsNorm, // Applied after attention
    ffn_norm: RmsNorm,            // Applied before feedforward
    post_ffn_norm: RmsNorm,       // Applied after feedforward

    // Feed-forward network
    mlp: Mlp,

    // Attention parameters
    n_head: usize,    // Number of query heads
    n_kv_head: usize, // Number of key-value heads
    head_dim: usize,  // Dimension of each head
    q_dim: usize,     // Total dimension for queries

    sliding_window_size: Option<usize>,

    rotary_embedding: RotaryEmbedding,
    neg_inf: Tensor,

    // Cache
    kv_cache: Option<(Tensor, Tensor)>,
}

impl LayerWeights {
    /// Which keys each query sees, over absolute positions: query `index_pos + i` sees key `j`
    /// when `j <= index_pos + i` and, on a sliding layer of window W, when `index_pos + i - j`
    /// is under W (W keys, the query's own included), as transformers' `sliding_window_overlay`
    /// (`kv_idx > q_idx - sliding_window`) and llama.cpp's `is_masked_swa` (`p1 - p0 >= n_swa`
    /// masked) define it. candle's copy let W + 1 keys through, and its rows for a chunk after
    /// cached positions hid the cache (and mixed dtypes); Vigil runs a prompt from position 0,
    /// so only the window's off-by-one showed, past W tokens.
    fn mask(
        &self,
        b_sz: usize,
        seq_len: usize,
        index_pos: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let keys = index_pos + seq_len;
        let window = self.sliding_window_size.unwrap_or(usize::MAX);
        let mask: Vec<u32> = (index_pos..keys)
            .flat_map(|i| (0..keys).map(move |j| u32::from(j <= i && i - j < window)))
            .collect();
        let mask = Tensor::from_slice(&mask, (seq_len, keys), device)?;
        mask.expand((b_sz, 1, seq_len, keys))?.to_dtype(dtype)
    }

    fn forward_attn(&mut self, x: &Tensor, mask: Option<&Tensor>, index_pos: usize) -> Result<Tensor> {
        let (b_sz, seq_len, _) = x.dims3()?;

        let q = self.attention_wq.forward(x)?;
        let k = self.attention_wk.forward(x)?;
        let v = self.attention_wv.forward(x)?;

        let q = q.reshape((b_sz, seq_len, self.n_head, self.head_dim))?.transpose(1, 2)?;
        let k = k.reshape((b_sz, seq_len, self.n_kv_head, self.head_dim))?.transpose(1, 2)?;
        let v = v.reshape((b_sz, seq_len, self.n_kv_head, self.head_dim))?.transpose(1, 2)?;

        let q = self.attention_q_norm.forward(&q.contiguous()?)?;
        let k = self.attention_k_norm.forward(&k.contiguous()?)?;

        let (q, k) = self.rotary_embedding.apply_rotary_emb_qkv(&q, &k, index_pos)?;

        let (k, v) = match &self.kv_cache {
            None => (k, v),
            Some((k_cache, v_cache)) => {
                if index_pos == 0 {
                    (k, v)
                } else {
                    let k = Tensor::cat(&[k_cache, &k], 2)?; // concat on seq dim
                    let v = Tensor::cat(&[v_cache, &v], 2)?;
                    (k, v)
                }
            }
        };
        self.kv_cache = Some((k.clone(), v.clone())); // update cache

        // One token on a sliding layer sees only the last W keys (see `mask`); the prompt's rows
        // are masked instead. candle's copy let a decoded token see the whole context, so
        // output past W (512 for Gemma 3 270M) positions parted from the references'.
        let (k, v) = match self.sliding_window_size {
            Some(window) if seq_len == 1 && k.dim(2)? > window => {
                let start = k.dim(2)? - window;
                (k.narrow(2, start, window)?, v.narrow(2, start, window)?)
            }
            _ => (k, v),
        };

        // Repeat KV for GQA
        let k = candle_transformers::utils::repeat_kv(k, self.n_head / self.n_kv_head)?;
        let v = candle_transformers::utils::repeat_kv(v, self.n_head / self.n_kv_head)?;

        // Scaled Dot-Product Attention
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut attn_weights = (q.matmul(&k.transpose(2, 3)?)? * scale)?;

        if let Some(mask) = mask {
            let mask = mask.broadcast_as(attn_weights.shape())?;
            let neg_inf = self.neg_inf.broadcast_as(attn_weights.dims())?;
            attn_weights = mask.eq(0u32)?.where_cond(&neg_inf, &attn_weights)?;
        }

        let attn_weights = candle_nn::ops::softmax_last_dim(&attn_weights)?;
        let attn_output = attn_weights.matmul(&v)?;

        let attn_output = attn_output.transpose(1, 2)?.reshape((b_sz, seq_len, self.q_dim))?;

        self.attention_wo.forward(&attn_output)
    }
}

#[derive(Debug, Clone)]
pub struct ModelWeights {
    tok_embeddings: Embedding,
    embedding_length: usize,
    layers: Vec<LayerWeights>,
    norm: RmsNorm,
    output: QMatMul,
}

impl ModelWeights {
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        // Detect architecture prefix by probing which keys exist in metadata.
        // This supports gemma3, gemma2, gemma, gemma-embedding, and future variants.
        let prefix = ["gemma3", "gemma2", "gemma", "gemma-embedding"]
            .iter()
            .find(|p| ct.metadata.contains_key(&format!("{}.attention.head_count", p)))
            .copied()
            .unwrap_or("gemma3");

        let md_get = |s: &str| {
            let key = format!("{prefix}.{s}");
            match ct.metadata.get(&key) {
                None => candle_core::bail!("cannot find {key} in metadata"),
                Some(v) => Ok(v),
            }
        };

        let head_count = md_get("attention.head_count")?.to_u32()? as usize;
        let head_count_kv = md_get("attention.head_count_kv")?.to_u32()? as usize;
        let block_count = md_get("block_count")?.to_u32()? as usize;
        let embedding_length = md_get("embedding_length")?.to_u32()? as usize;
        let key_length = md_get("attention.key_length")?.to_u32()? as usize;
        let _value_length = md_get("attention.value_length")?.to_u32()? as usize;
        let rms_norm_eps = md_get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let sliding_window_size = md_get("attention.sliding_window")?.to_u32()? as usize;

        let sliding_window_type = md_get("attention.sliding_window_type")
            .and_then(|m| Ok(m.to_u32()? as usize))
            .unwrap_or(DEFAULT_SLIDING_WINDOW_TYPE);

        let rope_freq_base =
            md_get("rope.freq_base").and_then(|m| m.to_f32()).unwrap_or(DEFAULT_ROPE_FREQUENCY);

        let rope_freq_base_sliding =
            md_get("rope.local_freq_base").and_then(|m| m.to_f32()).unwrap_or(DEFAULT_ROPE_FREQUENCY_SLIDING);

        // Unused in Llama.cpp so we aren't using it here.
        let _rope_freq_scaling_factor = md_get("rope.scaling.factor")
            .and_then(|m| m.to_f32())
            .unwrap_or(DEFAULT_ROPE_FREQUENCY_SCALE_FACTOR);

        // Compute the dimensions for queries, keys, and values
        // These are the total dimensions when projected across all heads
        let q_dim = head_count * key_length;

        let neg_inf = Tensor::new(f32::NEG_INFINITY, device)?;

        // Load token embeddings and output projection
        let tok_embeddings = ct.tensor(reader, "token_embd.weight", device)?;
        let tok_embeddings = tok_embeddings.dequantize(device)?;
        let norm = RmsNorm::from_qtensor(ct.tensor(reader, "output_norm.weight", device)?, rms_norm_eps)?;
        let output = match ct.tensor(reader, "output.weight", device) {
            Ok(tensor) => tensor,
            Err(_) => ct.tensor(reader, "token_embd.weight", device)?, // Use tied weights if output.weight doesn't exist
        };

        // One table per frequency, as long as the model's context: layers share them (they are
        // reference-counted tensors).
        let positions = md_get("context_length")
            .and_then(|m| Ok(m.to_u32()? as usize))
            .unwrap_or(MAX_SEQ_LEN)
            .min(MAX_SEQ_LEN);
        let rope_sliding = RotaryEmbedding::new(key_length, rope_freq_base_sliding, positions, device)?;
        let rope_global = RotaryEmbedding::new(key_length, rope_freq_base, positions, device)?;
        let mut layers = Vec::with_capacity(block_count);
        for layer_idx in 0..block_count {
            let prefix = format!("blk.{layer_idx}");

            let attention_wq = ct.tensor(reader, &format!("{prefix}.attn_q.weight"), device)?;
            let attention_wk = ct.tensor(reader, &format!("{prefix}.attn_k.weight"), device)?;
            let attention_wv = ct.tensor(reader, &format!("{prefix}.attn_v.weight"), device)?;
            let attention_wo = ct.tensor(reader, &format!("{prefix}.attn_output.weight"), device)?;

            let attention_q_norm = RmsNorm::from_qtensor(
                ct.tensor(reader, &format!("{prefix}.attn_q_norm.weight"), device)?,
                rms_norm_eps,
            )?;

            let attention_k_norm = RmsNorm::from_qtensor(
                ct.tensor(reader, &format!("{prefix}.attn_k_norm.weight"), device)?,
                rms_norm_eps,
            )?;

            let attention_norm = RmsNorm::from_qtensor(
                ct.tensor(reader, &format!("{prefix}.attn_norm.weight"), device)?,
                rms_norm_eps,
            )?;

            let post_attention_norm = RmsNorm::from_qtensor(
                ct.tensor(reader, &format!("{prefix}.post_attention_norm.weight"), device)?,
                rms_norm_eps,
            )?;

            let ffn_norm = RmsNorm::from_qtensor(
                ct.tensor(reader, &format!("{prefix}.ffn_norm.weight"), device)?,
                rms_norm_eps,
            )?;

            let post_ffn_norm = RmsNorm::from_qtensor(
                ct.tensor(reader, &format!("{prefix}.post_ffw_norm.weight"), device)?,
                rms_norm_eps,
            )?;

            let feed_forward_gate = ct.tensor(reader, &format!("{prefix}.ffn_gate.weight"), device)?;
            let feed_forward_up = ct.tensor(reader, &format!("{prefix}.ffn_up.weight"), device)?;
            let feed_forward_down = ct.tensor(reader, &format!("{prefix}.ffn_down.weight"), device)?;

            let mlp = Mlp {
                feed_forward_gate: QMatMul::from_qtensor(feed_forward_gate)?,
                feed_forward_up: QMatMul::from_qtensor(feed_forward_up)?,
                feed_forward_down: QMatMul::from_qtensor(feed_forward_down)?,
            };

            // Sliding window pattern hardcoded to 6 because it's not explicitly defined
            let is_sliding = (layer_idx + 1) % sliding_window_type > 0;
            let sliding_window_size = is_sliding.then_some(sliding_window_size);

            let rotary_embedding = if is_sliding { rope_sliding.clone() } else { rope_global.clone() };

            layers.push(LayerWeights {
                attention_wq: QMatMul::from_qtensor(attention_wq)?,
                attention_wk: QMatMul::from_qtensor(attention_wk)?,
                attention_wv: QMatMul::from_qtensor(attention_wv)?,
                attention_wo: QMatMul::from_qtensor(attention_wo)?,
                attention_q_norm,
                attention_k_norm,
                attention_norm,
                post_attention_norm,
                ffn_norm,
                post_ffn_norm,
                mlp,
                n_head: head_count,
                n_kv_head: head_count_kv,
                head_dim: key_length,
                q_dim,
                sliding_window_size,
                rotary_embedding,
                neg_inf: neg_inf.clone(),
                kv_cache: None,
            })
        }

        Ok(Self {
            tok_embeddings: Embedding::new(tok_embeddings, embedding_length),
            embedding_length,
            layers,
            norm,
            output: QMatMul::from_qtensor(output)?,
        })
    }

    pub fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let (b_sz, seq_len) = x.dims2()?;

        let mut layer_in = self.tok_embeddings.forward(x)?;
        layer_in = (layer_in * (self.embedding_length as f64).sqrt())?;

        for layer in self.layers.iter_mut() {
            let attention_mask = if seq_len == 1 {
                None
            } else {
                Some(layer.mask(b_sz, seq_len, index_pos, x.dtype(), x.device())?)
            };

            // Attention block
            let residual = &layer_in;
            let x = layer.attention_norm.forward(&layer_in)?;
            let x = layer.forward_attn(&x, attention_mask.as_ref(), index_pos)?;
            let x = layer.post_attention_norm.forward(&x)?;
            let x = (x + residual)?;

            // Feed-forward block
            let residual = &x;
            let x = layer.ffn_norm.forward(&x)?;
            let x = layer.mlp.forward(&x)?;
            let x = layer.post_ffn_norm.forward(&x)?;
            let x = (x + residual)?;

            layer_in = x;
        }

        let x = layer_in.i((.., seq_len - 1, ..))?;
        let x = self.norm.forward(&x)?;
        let output = self.output.forward(&x)?;

        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(rows: usize, cols: usize, seed: u64) -> Tensor {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 1.0).expect("a valid standard deviation");
        let values: Vec<f32> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
        Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap()
    }

    #[test]
    fn q5_0_rewritten_as_q8_0_holds_the_same_values() {
        let q5 = QTensor::quantize(&random(64, 640, 1), GgmlDType::Q5_0).unwrap();
        let q8 = q5_0_as_q8_0(&q5).unwrap();
        assert_eq!(q8.dtype(), GgmlDType::Q8_0);
        let values = |q: &QTensor| {
            q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(values(&q5), values(&q8));
    }

    /// The decode path (fewer than 16 rows) is the dequantised weight times the exact f32
    /// activations, as transformers computes it, for every type Gemma 3 270M's file holds, and
    /// not ggml's product (activations rounded to Q8_0 or Q8_K first, as llama.cpp computes it):
    /// the README's greedy-equality figures rest on this, so a kernel that computed anything else
    /// must fail here. The shapes are Gemma 3 270M's (640 wide, 1,024 and 2,048 for K-quants).
    #[test]
    fn the_decode_product_takes_exact_activations() {
        for (dtype, n, k, rounding) in [
            (GgmlDType::Q8_0, 256, 640, GgmlDType::Q8_0),
            (GgmlDType::Q5_0, 256, 640, GgmlDType::Q8_0),
            (GgmlDType::Q4K, 640, 1024, GgmlDType::Q8K),
            (GgmlDType::Q6K, 640, 2048, GgmlDType::Q8K),
        ] {
            let weight = QTensor::quantize(&random(n, k, 2), dtype).unwrap();
            let values = weight.dequantize(&Device::Cpu).unwrap();
            let product = QMatMul::from_qtensor(weight).unwrap();
            let x = random(3, k, 3);
            let got = product.forward(&x.unsqueeze(0).unwrap()).unwrap().squeeze(0).unwrap();
            let rounded = QTensor::quantize(&x, rounding).unwrap().dequantize(&Device::Cpu).unwrap();
            let ggml = rounded.matmul(&values.t().unwrap()).unwrap();
            let exact = x.matmul(&values.t().unwrap()).unwrap();
            let largest = |t: &Tensor| {
                t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
            };
            let scale = largest(&exact);
            let off_ggml = largest(&(&got - &ggml).unwrap()) / scale;
            let off_f32 = largest(&(&got - &exact).unwrap()) / scale;
            assert!(off_f32 < 1e-5, "{dtype:?}: {off_f32} from the f32 product");
            // ggml's rounding of the activations is visible: the comparison above means something.
            assert!(off_ggml > 1e-4, "{dtype:?}: only {off_ggml} from ggml's product");
        }
    }
}
