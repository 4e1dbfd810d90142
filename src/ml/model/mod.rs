//! Networks built from a spec: MLP (and softmax regression), CNN, LSTM/GRU, text classifiers,
//! Transformers trained from scratch and pretrained BERT-family encoders with a trained head.
//! A [`Network`] owns its parameters as candle `Var`s (a frozen pretrained encoder's as plain
//! tensors), computes logits, and saves and loads them as safetensors. It knows nothing of
//! training loops, data files or the run store.

pub mod layers;
pub mod pretrained;
pub mod transformer;

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use candle_core::quantized::{GgmlDType, QTensor};
use serde::{Deserialize, Serialize};

use self::layers::{
    CellKind, Conv, Dense, ParamBuilder, QuantWeight, Recurrent, TokenConv, dropout, masked_mean,
};
use crate::error::{Error, Result};
use crate::ml::data::InputShape;
use crate::ml::spec::{Activation, Cell, Init, ModelSpec, Pooling, TextEncoder};
use transformer::{Encoder, EncoderShape};

/// Folded into the experiment's seed for initial weights, so that they do not share a stream
/// with the split or the shuffles.
const INIT_SALT: u64 = 0x1417_0000_0000_0007;

#[derive(Debug, Clone)]
enum Arch {
    Mlp {
        layers: Vec<Dense>,
        act: Activation,
        dropout: f32,
    },
    Cnn {
        convs: Vec<Conv>,
        dense: Vec<Dense>,
        out: Dense,
        act: Activation,
        dropout: f32,
    },
    Rnn {
        layers: Vec<Recurrent>,
        head: Dense,
        dropout: f32,
    },
    Text {
        embedding: Tensor,
        encoder: Option<Recurrent>,
        dense: Vec<Dense>,
        out: Dense,
        act: Activation,
        dropout: f32,
    },
    /// Kim's text CNN: embeddings, one max-pooled convolution per width, concatenated.
    TextCnn {
        embedding: Tensor,
        convs: Vec<TokenConv>,
        out: Dense,
        dropout: f32,
    },
    /// A Transformer encoder (trained here or pretrained), pooled, then dense layers.
    Transformer {
        encoder: Box<Encoder>,
        dense: Vec<Dense>,
        out: Dense,
        dropout: f32,
        /// A frozen pretrained encoder runs without dropout, as the fixed feature extractor it is.
        frozen: bool,
    },
}

/// One dense layer of a taped forward pass ([`Network::forward_taped`]).
#[derive(Debug, Clone)]
pub struct DenseTape {
    pub weight: Tensor,
    pub bias: Tensor,
    /// The layer's input `(B, in)`.
    pub input: Tensor,
    /// The layer's output `(B, out)`: after ReLU when `relu`, else before any activation.
    pub output: Tensor,
    /// A zero variable added to `output`, whose gradient in a backward pass is the output's.
    pub probe: Tensor,
    pub relu: bool,
}

/// How one layer of a network is stored (see [`Network::storage`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStorage {
    pub layer: String,
    /// `f32`, `f16`, `q8_0` or `q4_0`.
    pub stored: String,
    /// Why the layer stayed f32 while others were quantised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// An attention model's attention for a batch, as attention rollout reads it.
#[derive(Debug, Clone)]
pub struct AttentionMaps {
    /// Each layer's attention probabilities `(B, heads, L', L')`, first layer first; row i is
    /// where position i attends.
    pub layers: Vec<Tensor>,
    /// `(B, L')`, 1 for real positions.
    pub mask: Tensor,
    /// How the classifier reads the last layer: the first position's state, or the mean.
    pub pooling: Pooling,
    /// Positions in front of the input's tokens (1 for a learned CLS vector, else 0).
    pub prepended: usize,
    /// Input steps per position (1 for text).
    pub patch: usize,
}

/// ggml's name for a storage type, lower case (`q8_0`).
pub fn dtype_name(d: GgmlDType) -> String {
    format!("{d:?}").to_lowercase()
}

/// A classifier network and its parameters.
#[derive(Debug, Clone)]
pub struct Network {
    pub spec: ModelSpec,
    pub input: InputShape,
    pub classes: usize,
    vars: Vec<(String, Var)>,
    /// A frozen pretrained encoder's weights: read from its folder, never trained or saved.
    frozen: Vec<(String, Tensor)>,
    arch: Arch,
    device: Device,
}

fn cell(c: Cell) -> CellKind {
    match c {
        Cell::Lstm => CellKind::Lstm,
        Cell::Gru => CellKind::Gru,
    }
}

impl Network {
    /// Builds a network for inputs of `input` and `classes` outputs, initialised from `seed`.
    /// Text models also need the vocabulary size.
    pub fn build(
        spec: &ModelSpec,
        input: &InputShape,
        classes: usize,
        vocab: Option<usize>,
        init: Init,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ INIT_SALT);
        let mut pb = ParamBuilder { vars: Vec::new(), rng: &mut rng, init, device: device.clone() };
        let mut frozen_params = Vec::new();
        let mismatch = |what: &str| {
            Error::unsuitable(format!(
                "a {} model needs {what} input, but the data is {}",
                spec.kind(),
                input.describe()
            ))
        };
        let arch = match spec {
            ModelSpec::LogReg | ModelSpec::Mlp { .. } => {
                if matches!(input, InputShape::Text { .. }) {
                    return Err(mismatch("numeric"));
                }
                let (hidden, act, drop) = match spec {
                    ModelSpec::Mlp { hidden, activation, dropout } => (hidden.clone(), *activation, *dropout),
                    _ => (vec![], Activation::Relu, 0.0),
                };
                let mut widths = vec![input.numel()];
                widths.extend(hidden);
                widths.push(classes);
                let layers = widths
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| Dense::new(&mut pb, &format!("layers.{i}"), w[0], w[1]))
                    .collect::<Result<Vec<_>>>()?;
                Arch::Mlp { layers, act, dropout: drop }
            }
            ModelSpec::Cnn { channels, kernel, dense, activation, dropout } => {
                let InputShape::Image { channels: c0, height, width } = *input else {
                    return Err(mismatch("image"));
                };
                let (mut c, mut h, mut w) = (c0, height, width);
                let mut convs = Vec::new();
                for (i, &out) in channels.iter().enumerate() {
                    if h < 2 || w < 2 {
                        return Err(Error::unsuitable(format!(
                            "{} conv+pool blocks shrink a {height}x{width} image below 1x1; use fewer channels entries",
                            channels.len()
                        )));
                    }
                    convs.push(Conv::new(&mut pb, &format!("convs.{i}"), c, out, *kernel)?);
                    c = out;
                    h /= 2;
                    w /= 2;
                }
                let mut widths = vec![c * h * w];
                widths.extend(dense.iter().copied());
                let dense_layers = widths
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| Dense::new(&mut pb, &format!("dense.{i}"), w[0], w[1]))
                    .collect::<Result<Vec<_>>>()?;
                let out = Dense::new(&mut pb, "out", *widths.last().expect("non-empty"), classes)?;
                Arch::Cnn { convs, dense: dense_layers, out, act: *activation, dropout: *dropout }
            }
            ModelSpec::Rnn { cell: c, hidden, layers, dropout } => {
                let InputShape::Sequence { features, .. } = *input else {
                    return Err(mismatch("sequence"));
                };
                let mut rnn = Vec::new();
                for l in 0..*layers {
                    let inputs = if l == 0 { features } else { *hidden };
                    rnn.push(Recurrent::new(&mut pb, "rnn", cell(*c), l, inputs, *hidden)?);
                }
                let head = Dense::new(&mut pb, "head", *hidden, classes)?;
                Arch::Rnn { layers: rnn, head, dropout: *dropout }
            }
            ModelSpec::Text { embed_dim, encoder, hidden, dropout } => {
                let InputShape::Text { .. } = input else {
                    return Err(mismatch("text"));
                };
                let vocab =
                    vocab.ok_or_else(|| Error::unsuitable("a text model needs the vocabulary size"))?;
                let embedding = pb.embedding("embedding.weight", vocab, *embed_dim)?;
                let (enc, width) = match encoder {
                    TextEncoder::MeanPool => (None, *embed_dim),
                    TextEncoder::Rnn { cell: c, hidden: h } => {
                        (Some(Recurrent::new(&mut pb, "encoder", cell(*c), 0, *embed_dim, *h)?), *h)
                    }
                };
                let mut widths = vec![width];
                widths.extend(hidden.iter().copied());
                let dense = widths
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| Dense::new(&mut pb, &format!("dense.{i}"), w[0], w[1]))
                    .collect::<Result<Vec<_>>>()?;
                let out = Dense::new(&mut pb, "out", *widths.last().expect("non-empty"), classes)?;
                Arch::Text { embedding, encoder: enc, dense, out, act: Activation::Relu, dropout: *dropout }
            }
            ModelSpec::TextCnn { embed, widths, filters, dropout } => {
                let InputShape::Text { .. } = input else {
                    return Err(mismatch("text"));
                };
                let vocab = vocab.ok_or_else(|| Error::unsuitable("a text CNN needs the vocabulary size"))?;
                let embedding = pb.embedding("embedding.weight", vocab, *embed)?;
                let convs = widths
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| TokenConv::new(&mut pb, &format!("convs.{i}"), *embed, *filters, w))
                    .collect::<Result<Vec<_>>>()?;
                let out = Dense::new(&mut pb, "out", filters * widths.len(), classes)?;
                Arch::TextCnn { embedding, convs, out, dropout: *dropout }
            }
            ModelSpec::Transformer { dim, heads, layers, ff, dropout, pooling, norm, head, patch } => {
                let (vocab, positions, features) = match *input {
                    InputShape::Text { max_len } => (
                        Some(vocab.ok_or_else(|| {
                            Error::unsuitable("a transformer on text needs the vocabulary size")
                        })?),
                        max_len,
                        0,
                    ),
                    InputShape::Sequence { steps, features } => {
                        if !steps.is_multiple_of(*patch) {
                            return Err(Error::unsuitable(format!(
                                "patches of {patch} steps do not divide a sequence of {steps}"
                            )));
                        }
                        (None, steps / patch, features * patch)
                    }
                    _ => return Err(mismatch("text or sequence")),
                };
                let shape = EncoderShape {
                    dim: *dim,
                    heads: *heads,
                    layers: *layers,
                    ff: *ff,
                    positions,
                    norm: *norm,
                    pooling: *pooling,
                    dropout: *dropout,
                    patch: *patch,
                };
                let encoder = Encoder::new(&mut pb, shape, vocab, features)?;
                let (dense, out) = head_layers(&mut pb, *dim, head, classes)?;
                Arch::Transformer { encoder: Box::new(encoder), dense, out, dropout: *dropout, frozen: false }
            }
            ModelSpec::Pretrained { path, pooling, head, freeze, dropout, .. } => {
                let InputShape::Text { .. } = input else {
                    return Err(mismatch("text"));
                };
                let folder = pretrained::Folder::open(&pretrained::resolve(path))?;
                let (encoder, fixed) = folder.load_encoder(&mut pb, *pooling, !*freeze, *dropout)?;
                frozen_params = fixed;
                let (dense, out) = head_layers(&mut pb, encoder.dim(), head, classes)?;
                Arch::Transformer {
                    encoder: Box::new(encoder),
                    dense,
                    out,
                    dropout: *dropout,
                    frozen: *freeze,
                }
            }
        };
        let vars = std::mem::take(&mut pb.vars);
        Ok(Network {
            spec: spec.clone(),
            input: input.clone(),
            classes,
            vars,
            frozen: frozen_params,
            arch,
            device: device.clone(),
        })
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameters, in creation order, with their PyTorch-style names.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Number of values: the trainable ones and those stored quantised.
    pub fn parameter_count(&self) -> usize {
        let quantised: usize = self
            .dense_layers()
            .iter()
            .filter_map(|d| d.quant.as_ref().map(|q| d.bias.elem_count() * q.inputs))
            .sum();
        let frozen: usize = self.frozen.iter().map(|(_, t)| t.elem_count()).sum();
        self.vars.iter().map(|(_, v)| v.elem_count()).sum::<usize>() + quantised + frozen
    }

    /// Bytes the parameters take in memory: f32 values, and the quantised weights as stored.
    pub fn weight_bytes(&self) -> usize {
        let quantised: usize =
            self.dense_layers().iter().filter_map(|d| d.quant.as_ref().map(|q| q.bytes())).sum();
        let frozen: usize = self.frozen.iter().map(|(_, t)| t.elem_count() * t.dtype().size_in_bytes()).sum();
        self.vars.iter().map(|(_, v)| v.elem_count() * v.dtype().size_in_bytes()).sum::<usize>()
            + quantised
            + frozen
    }

    /// Bytes of the dense layers' weight matrices as stored (f32, or quantised).
    pub fn dense_weight_bytes(&self) -> usize {
        self.dense_layers()
            .iter()
            .map(|d| match &d.quant {
                Some(q) => q.bytes(),
                None => d.weight.elem_count() * d.weight.dtype().size_in_bytes(),
            })
            .sum()
    }

    /// The layers a quantised matrix product can run: every dense layer, a Transformer's linear
    /// layers (Q, K, V, attention output, intermediate, output) first, then its head. A
    /// Transformer's input projection stays out: it is its embedding of numeric steps, kept f32
    /// as token embeddings are.
    fn dense_layers(&self) -> Vec<&Dense> {
        match &self.arch {
            Arch::Mlp { layers, .. } => layers.iter().collect(),
            Arch::Cnn { dense, out, .. } | Arch::Text { dense, out, .. } => {
                dense.iter().chain([out]).collect()
            }
            Arch::Transformer { encoder, dense, out, .. } => {
                encoder.layers.iter().flat_map(|l| l.linear()).chain(dense.iter()).chain([out]).collect()
            }
            Arch::Rnn { head, .. } => vec![head],
            Arch::TextCnn { out, .. } => vec![out],
        }
    }

    fn dense_layers_mut(&mut self) -> Vec<&mut Dense> {
        match &mut self.arch {
            Arch::Mlp { layers, .. } => layers.iter_mut().collect(),
            Arch::Cnn { dense, out, .. } | Arch::Text { dense, out, .. } => {
                dense.iter_mut().chain(std::iter::once(out)).collect()
            }
            Arch::Transformer { encoder, dense, out, .. } => encoder
                .layers
                .iter_mut()
                .flat_map(|l| l.linear_mut())
                .chain(dense.iter_mut())
                .chain(std::iter::once(out))
                .collect(),
            Arch::Rnn { head, .. } => vec![head],
            Arch::TextCnn { out, .. } => vec![out],
        }
    }

    /// The parameter name of each dense layer's weight, in [`Self::dense_layers`] order.
    fn dense_names(&self) -> Vec<String> {
        self.dense_layers()
            .iter()
            .map(|d| match &d.quant {
                Some(q) => q.name.clone(),
                // A frozen encoder's weights are constants, not variables.
                None => self
                    .vars
                    .iter()
                    .map(|(n, v)| (n, v.as_tensor()))
                    .chain(self.frozen.iter().map(|(n, t)| (n, t)))
                    .find(|(_, t)| t.id() == d.weight.id())
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Stores every dense layer's weight as `dtype` (the layers a quantised matrix product can
    /// run, [`Self::dense_layers`]); the rest stay f32. The network then predicts only: quantised
    /// weights have no gradient. A frozen encoder's quantised weights leave its constants too,
    /// so that a variant file stores them (the f32 ones are read from the encoder's folder).
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<()> {
        let names = self.dense_names();
        let device = self.device.clone();
        for (dense, name) in self.dense_layers_mut().into_iter().zip(&names) {
            if dense.quant.is_some() {
                continue;
            }
            dense.quant = Some(QuantWeight::quantize(name, &dense.weight, dtype)?);
            dense.weight = Tensor::zeros((dense.weight.dim(0)?, 0), DType::F32, &device)?;
        }
        self.vars.retain(|(n, _)| !names.contains(n));
        self.frozen.retain(|(n, _)| !names.contains(n));
        Ok(())
    }

    /// Puts a quantised weight read from a variant file in place of the f32 one named `name`.
    pub fn set_quantized(&mut self, name: &str, stored: QTensor) -> Result<()> {
        let names = self.dense_names();
        let device = self.device.clone();
        let Some(i) = names.iter().position(|n| n == name) else {
            return Err(Error::unsuitable(format!(
                "{name} is not a dense layer's weight; only those are stored quantised"
            )));
        };
        let dense = self.dense_layers_mut().swap_remove(i);
        let (outputs, inputs) = match &dense.quant {
            Some(q) => (dense.bias.elem_count(), q.inputs),
            None => dense.weight.dims2()?,
        };
        if stored.shape().dims2()?.0 != outputs {
            return Err(Error::unsuitable(format!(
                "{name} is stored with shape {:?}; the layer has {outputs} outputs",
                stored.shape().dims()
            )));
        }
        dense.quant = Some(QuantWeight::from_stored(name, stored, inputs)?);
        dense.weight = Tensor::zeros((outputs, 0), DType::F32, &device)?;
        self.vars.retain(|(n, _)| n != name);
        self.frozen.retain(|(n, _)| n != name);
        Ok(())
    }

    /// The quantised weights, for a variant file.
    pub fn quantized(&self) -> Vec<&QuantWeight> {
        self.dense_layers().into_iter().filter_map(|d| d.quant.as_ref()).collect()
    }

    /// What each layer is stored as: `q8_0`, `f16` or `f32`, with the reason a layer stayed f32
    /// while others were quantised. A frozen encoder's layers are listed too (before the head,
    /// as they run).
    pub fn storage(&self) -> Vec<LayerStorage> {
        let quantised: HashMap<String, GgmlDType> =
            self.quantized().iter().map(|q| (layer_of(&q.name), q.dtype)).collect();
        let any = !quantised.is_empty();
        let mut layers: Vec<String> = Vec::new();
        let names = self.frozen.iter().map(|(n, _)| n).chain(self.vars.iter().map(|(n, _)| n));
        for layer in names.map(|n| layer_of(n)) {
            if !layers.contains(&layer) {
                layers.push(layer);
            }
        }
        layers
            .into_iter()
            .map(|layer| {
                let dtype = quantised.get(&layer);
                let why = match dtype {
                    Some(_) => None,
                    None if !any => None,
                    None => Some(Self::why_f32(&layer).into()),
                };
                LayerStorage { stored: dtype.map_or("f32".into(), |d| dtype_name(*d)), layer, why }
            })
            .collect()
    }

    /// Why a layer (a name from [`Self::layer_names`]) has no quantised form.
    fn why_f32(layer: &str) -> &'static str {
        if layer.starts_with("convs") {
            "convolution: runs in the fused f32 im2col kernel, which has no quantised form"
        } else if layer.ends_with("LayerNorm") {
            "layer norm: a scale and shift per value, no matrix product to quantise"
        } else if layer == "embeddings.input_projection" {
            "input projection: the encoder's embedding of numeric steps, kept f32 as token embeddings are"
        } else if layer == "embeddings.cls" {
            "CLS vector: one learned vector, not a matrix product"
        } else if layer == "embedding" || layer.starts_with("embeddings") {
            "embedding: a table lookup, not a matrix product"
        } else if layer.starts_with("rnn") || layer == "encoder.l0" {
            "recurrent cell: runs in the fused f32 LSTM/GRU kernel"
        } else {
            "not a dense layer"
        }
    }

    /// The network's layers from input to output, named after their parameters: `layers.0`,
    /// `convs.1`, `out`, `embedding`, and `rnn.l0` for the first recurrent layer. The model
    /// randomisation test of [`crate::ml::explain`] re-initialises them from the output down.
    pub fn layer_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, _) in &self.vars {
            let layer = layer_of(name);
            if names.last() != Some(&layer) {
                names.push(layer);
            }
        }
        names
    }

    /// Draws fresh values for the parameters of one layer (a name from [`Self::layer_names`])
    /// from `seed`, by the same scheme a new network gets: weights by `init` from their fan-in
    /// and fan-out, biases at zero, embeddings from N(0, 1). The other layers keep their values.
    pub fn reinit_layer(&self, layer: &str, init: Init, seed: u64) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ INIT_SALT);
        let mut pb = ParamBuilder { vars: Vec::new(), rng: &mut rng, init, device: self.device.clone() };
        let mut found = false;
        for (name, var) in self.vars.iter().filter(|(n, _)| layer_of(n) == layer) {
            found = true;
            let dims = var.dims().to_vec();
            let leaf = name.rsplit('.').next().unwrap_or(name);
            let fresh = if leaf.starts_with("bias") {
                pb.bias(name, dims.iter().product())?
            } else if name.contains("LayerNorm") {
                pb.ones(name, dims.iter().product())?
            } else if name.starts_with("embeddings.") && !name.contains("projection") {
                pb.normal(name, &dims, 0.02)?
            } else if leaf == "weight" && name.starts_with("embedding") {
                pb.embedding(name, dims[0], dims[1])?
            } else {
                // [out, in] for dense and recurrent weights, [out, in, k, k] for convolutions:
                // the fans `build` used.
                let receptive: usize = dims.iter().skip(2).product();
                let fan_in = dims.get(1).copied().unwrap_or(1) * receptive;
                pb.weight(name, &dims, fan_in, dims[0] * receptive)?
            };
            var.set(&fresh.reshape(dims)?)?;
        }
        if !found {
            return Err(Error::not_found(format!(
                "the network has no layer {layer:?}; its layers are {}",
                self.layer_names().join(", ")
            )));
        }
        Ok(())
    }

    /// Whether the network takes token ids rather than numbers.
    pub fn takes_tokens(&self) -> bool {
        match &self.arch {
            Arch::Text { .. } | Arch::TextCnn { .. } => true,
            Arch::Transformer { encoder, .. } => {
                matches!(encoder.input, transformer::InputEmbedding::Tokens(_))
            }
            _ => false,
        }
    }

    /// A text model's token-embedding table `(vocab, E)`: row `i` is what [`Self::embed`] gives
    /// token `i` (before any position is added). Attacks score and snap words against it.
    pub fn token_table(&self) -> Option<&Tensor> {
        match &self.arch {
            Arch::Text { embedding, .. } => Some(embedding),
            Arch::Transformer { encoder, .. } => match &encoder.input {
                transformer::InputEmbedding::Tokens(table) => Some(table),
                transformer::InputEmbedding::Projection(_) => None,
            },
            _ => None,
        }
    }

    /// The Transformer encoder of a transformer or pretrained model.
    pub fn encoder(&self) -> Option<&Encoder> {
        match &self.arch {
            Arch::Transformer { encoder, .. } => Some(encoder),
            _ => None,
        }
    }

    /// The attention probabilities of every layer for a batch (see [`AttentionMaps`]); `None`
    /// for a model without attention.
    pub fn attention_maps(&self, x: &Tensor) -> Result<Option<AttentionMaps>> {
        let Arch::Transformer { encoder, .. } = &self.arch else { return Ok(None) };
        let emb = encoder.embed(x)?;
        let mask = if self.takes_tokens() {
            token_mask(x)?
        } else {
            Tensor::ones((emb.dim(0)?, emb.dim(1)?), DType::F32, x.device())?
        };
        let (layers, mask) = encoder.attention_maps(&emb.detach(), &mask)?;
        Ok(Some(AttentionMaps {
            layers,
            mask,
            pooling: encoder.pooling,
            prepended: usize::from(encoder.cls.is_some()),
            patch: encoder.patch,
        }))
    }

    /// Logits `(B, classes)` for a prediction: [`Self::forward`] in evaluation mode inside
    /// [`crate::ml::kernels::inference`], so nothing is kept for a backward pass. What only
    /// predicts (evaluation, the service, `vigil optimize`'s timings, the detectors) calls this;
    /// what differentiates the logits (training, explanations, attacks) calls `forward`.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        crate::ml::kernels::inference(|| self.forward(x, None))
    }

    /// Logits `(B, classes)` for a batch. `rng` turns dropout on (training); `None` evaluates.
    pub fn forward(&self, x: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        match &self.arch {
            Arch::Text { .. } | Arch::TextCnn { .. } => {
                let emb = self.embed(x)?;
                let mask = token_mask(x)?;
                self.forward_embedded(&emb, &mask, rng)
            }
            Arch::Transformer { encoder, .. } => {
                let emb = encoder.embed(x)?;
                let mask = if self.takes_tokens() {
                    token_mask(x)?
                } else {
                    Tensor::ones((emb.dim(0)?, emb.dim(1)?), DType::F32, x.device())?
                };
                self.forward_embedded(&emb, &mask, rng)
            }
            _ => self.forward_dense(x, rng),
        }
    }

    /// The logits of an MLP together with each dense layer's input and output, for per-example
    /// gradients in closed form (DP-SGD): a dense layer's gradient for one example is the outer
    /// product of that example's output gradient and input, so the layer's inputs and outputs
    /// are all it needs. `None` for other architectures, whose layers share weights across
    /// positions and have no such form.
    pub fn forward_taped(
        &self,
        x: &Tensor,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Option<(Tensor, Vec<DenseTape>)>> {
        let Arch::Mlp { layers, act, dropout: p } = &self.arch else { return Ok(None) };
        let mut h = x.flatten_from(1)?;
        let mut tape = Vec::with_capacity(layers.len());
        let last = layers.len() - 1;
        for (i, layer) in layers.iter().enumerate() {
            let hidden = i < last;
            // Where ReLU is fused into the layer its output is post-activation, and the output
            // gradient has to be masked by `output > 0` to become the layer's own.
            let relu = hidden && *act == Activation::Relu && layers::fuses_relu(&h, layer);
            let output = if relu { layer.forward_activated(&h, *act)? } else { layer.forward(&h)? };
            // candle keeps the gradients of variables only, so a zero variable added to the
            // output receives the output's gradient.
            let probe = Var::zeros(output.shape(), output.dtype(), output.device())?.into_inner();
            let output = (output + &probe)?;
            tape.push(DenseTape {
                weight: layer.weight.clone(),
                bias: layer.bias.clone(),
                input: h,
                output: output.clone(),
                probe,
                relu,
            });
            h = if !hidden {
                output
            } else {
                let a = if relu { output } else { layers::activate(&output, *act)? };
                dropout(&a, *p, rng.as_deref_mut())?
            };
        }
        Ok(Some((h, tape)))
    }

    /// Token embeddings `(B, L, E)` of a text model; for other models, the input itself.
    /// Attributions for text are taken with respect to this tensor.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        match &self.arch {
            Arch::Text { embedding, .. } | Arch::TextCnn { embedding, .. } => {
                let (b, l) = x.dims2()?;
                let e = embedding.dim(1)?;
                Ok(embedding.index_select(&x.flatten_all()?, 0)?.reshape((b, l, e))?)
            }
            Arch::Transformer { encoder, .. } if self.takes_tokens() => encoder.embed(x),
            _ => Ok(x.clone()),
        }
    }

    /// A text model's logits from embeddings and the padding mask (1 for real tokens).
    pub fn forward_embedded(
        &self,
        emb: &Tensor,
        mask: &Tensor,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        if let Arch::Transformer { encoder, frozen, .. } = &self.arch {
            let enc_rng = if *frozen { None } else { rng.as_deref_mut() };
            let h = encoder.encode(emb, mask, enc_rng)?;
            return self.forward_head(&h, rng);
        }
        if let Arch::TextCnn { convs, out, dropout: p, .. } = &self.arch {
            let h = text_cnn_features(convs, emb, mask)?;
            return out.forward(&dropout(&h, *p, rng)?);
        }
        let Arch::Text { encoder, dense, out, act, dropout: p, .. } = &self.arch else {
            return self.forward_dense(emb, rng);
        };
        let mut h = encode_text(encoder.as_ref(), emb, mask)?;
        for layer in dense {
            h = layer.forward_activated(&h, *act)?;
            h = dropout(&h, *p, rng.as_deref_mut())?;
        }
        out.forward(&h)
    }

    /// The pooled features `(B, E)` of a frozen pretrained encoder for token ids `x`: what its
    /// head is trained on. A frozen encoder has no dropout and no gradient, so the features of an
    /// example never change during a run, and the training loop computes them once per split
    /// rather than once per epoch ([`Self::forward_head`] then takes them). `None` for every other
    /// model, including a pretrained encoder that is fine-tuned.
    pub fn frozen_features(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Arch::Transformer { encoder, frozen: true, .. } = &self.arch else { return Ok(None) };
        let emb = encoder.embed(x)?;
        let mask = token_mask(x)?;
        Ok(Some(encoder.encode(&emb, &mask, None)?))
    }

    /// A transformer model's logits from its pooled encoder features `(B, E)`: the head alone.
    /// `rng` turns the head's dropout on.
    pub fn forward_head(&self, features: &Tensor, mut rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let Arch::Transformer { dense, out, dropout: p, .. } = &self.arch else {
            return Err(Error::unsuitable("only a transformer model has a head over pooled features"));
        };
        let mut h = features.clone();
        for layer in dense {
            h = layer.forward_activated(&h, Activation::Relu)?;
            h = dropout(&h, *p, rng.as_deref_mut())?;
        }
        out.forward(&h)
    }

    fn forward_dense(&self, x: &Tensor, mut rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        match &self.arch {
            Arch::Mlp { layers, act, dropout: p } => {
                let mut h = x.flatten_from(1)?;
                let last = layers.len() - 1;
                for (i, layer) in layers.iter().enumerate() {
                    if i < last {
                        h = layer.forward_activated(&h, *act)?;
                        h = dropout(&h, *p, rng.as_deref_mut())?;
                    } else {
                        h = layer.forward(&h)?;
                    }
                }
                Ok(h)
            }
            Arch::Cnn { convs, dense, out, act, dropout: p } => {
                let mut h = x.clone();
                for conv in convs {
                    h = conv.forward_pooled(&h, *act)?;
                }
                // The first dense layer flattens the feature maps itself.
                for layer in dense {
                    h = layer.forward_activated(&h, *act)?;
                    h = dropout(&h, *p, rng.as_deref_mut())?;
                }
                out.forward(&h)
            }
            Arch::Rnn { layers, head, dropout: p } => {
                let mut h = x.clone();
                for (i, layer) in layers.iter().enumerate() {
                    h = layer.forward(&h)?;
                    if i + 1 < layers.len() {
                        h = dropout(&h, *p, rng.as_deref_mut())?;
                    }
                }
                let t = h.dim(1)?;
                let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
                let last = dropout(&last, *p, rng)?;
                head.forward(&last)
            }
            Arch::Text { .. } | Arch::TextCnn { .. } => {
                Err(Error::unsuitable("a text model takes token ids"))
            }
            Arch::Transformer { .. } => self.forward(x, rng),
        }
    }

    /// The parameters as name → tensor, for safetensors.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect()
    }

    /// Serialises the parameters to safetensors bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        tensors_to_bytes(&self.tensors())
    }

    /// Replaces every parameter with the values in safetensors bytes; `origin` names the file in
    /// errors. Every parameter must be present with the right shape.
    pub fn load_safetensors(&self, bytes: &[u8], origin: &str) -> Result<()> {
        let loaded = candle_core::safetensors::load_buffer(bytes, &self.device).map_err(|e| {
            Error::Corrupt { path: origin.into(), msg: format!("not a readable safetensors file: {e}") }
        })?;
        for (name, var) in &self.vars {
            let t = loaded.get(name).ok_or_else(|| Error::Corrupt {
                path: origin.into(),
                msg: format!("has no tensor {name:?}; was it saved from another model?"),
            })?;
            if t.dims() != var.dims() {
                return Err(Error::Corrupt {
                    path: origin.into(),
                    msg: format!(
                        "tensor {name:?} has shape {:?}, the model needs {:?}",
                        t.dims(),
                        var.dims()
                    ),
                });
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// The penultimate features and the logits of an inference pass, from one pass: the
    /// service's input detector reads the first, the answer is the second.
    pub fn penultimate_and_logits(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = crate::ml::kernels::inference(|| self.penultimate(x))?;
        let out = match &self.arch {
            Arch::Mlp { layers, .. } => layers.last().expect("an MLP has an output layer"),
            Arch::Cnn { out, .. }
            | Arch::Text { out, .. }
            | Arch::TextCnn { out, .. }
            | Arch::Transformer { out, .. } => out,
            Arch::Rnn { head, .. } => head,
        };
        let logits = out.forward(&h)?;
        Ok((h, logits))
    }

    /// What the output layer sees, `(B, width)`, in evaluation mode: the last hidden layer's
    /// activations (MLP, CNN, text), a recurrent classifier's last state, or the flattened input
    /// of a softmax regression. The input detector of [`crate::ml::attack`] models these
    /// features. It mirrors [`Self::forward`] without the output layer (a test checks that the
    /// output layer applied to it gives the logits).
    pub fn penultimate(&self, x: &Tensor) -> Result<Tensor> {
        match &self.arch {
            Arch::Mlp { layers, act, .. } => {
                let mut h = x.flatten_from(1)?;
                for layer in &layers[..layers.len() - 1] {
                    h = layer.forward_activated(&h, *act)?;
                }
                Ok(h)
            }
            Arch::Cnn { convs, dense, act, .. } => {
                let mut h = x.clone();
                for conv in convs {
                    h = conv.forward_pooled(&h, *act)?;
                }
                // As in `forward_dense`, the first dense layer flattens the feature maps itself.
                for layer in dense {
                    h = layer.forward_activated(&h, *act)?;
                }
                Ok(h.flatten_from(1)?)
            }
            Arch::Rnn { layers, .. } => {
                let mut h = x.clone();
                for layer in layers {
                    h = layer.forward(&h)?;
                }
                let t = h.dim(1)?;
                Ok(h.narrow(1, t - 1, 1)?.squeeze(1)?)
            }
            Arch::Transformer { encoder, dense, .. } => {
                let emb = encoder.embed(x)?;
                let mask = if self.takes_tokens() {
                    token_mask(x)?
                } else {
                    Tensor::ones((emb.dim(0)?, emb.dim(1)?), DType::F32, x.device())?
                };
                let mut h = encoder.encode(&emb, &mask, None)?;
                for layer in dense {
                    h = layer.forward_activated(&h, Activation::Relu)?;
                }
                Ok(h)
            }
            Arch::TextCnn { convs, .. } => text_cnn_features(convs, &self.embed(x)?, &token_mask(x)?),
            Arch::Text { encoder, dense, act, .. } => {
                let emb = self.embed(x)?;
                let mask = token_mask(x)?;
                let mut h = encode_text(encoder.as_ref(), &emb, &mask)?;
                for layer in dense {
                    h = layer.forward_activated(&h, *act)?;
                }
                Ok(h)
            }
        }
    }
}

/// The dense layers of a classifier head on `width` inputs: `hidden` widths, then the output.
fn head_layers(
    pb: &mut ParamBuilder,
    width: usize,
    hidden: &[usize],
    classes: usize,
) -> Result<(Vec<Dense>, Dense)> {
    let mut widths = vec![width];
    widths.extend(hidden.iter().copied());
    let dense = widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| Dense::new(pb, &format!("dense.{i}"), w[0], w[1]))
        .collect::<Result<Vec<_>>>()?;
    let out = Dense::new(pb, "out", *widths.last().expect("non-empty"), classes)?;
    Ok((dense, out))
}

/// A text model's encoding of its token embeddings `(B, L, E)`: the masked mean, or the
/// recurrent encoder's state at the last real token (padding comes last).
fn encode_text(encoder: Option<&Recurrent>, emb: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(match encoder {
        None => masked_mean(emb, mask)?,
        Some(rnn) => {
            let states = rnn.forward(emb)?;
            let lengths = mask.sum(1)?.clamp(1.0, f64::MAX)?.affine(1.0, -1.0)?.to_dtype(DType::U32)?;
            let idx = lengths
                .unsqueeze(1)?
                .unsqueeze(2)?
                .broadcast_as((states.dim(0)?, 1, states.dim(2)?))?
                .contiguous()?;
            states.gather(&idx, 1)?.squeeze(1)?
        }
    })
}

/// A text CNN's features `(B, filters x widths)` from token embeddings `(B, L, E)`: padding
/// zeroed (so a window running past the text sees zeros, and an explanation gives padding
/// nothing), each width's max-pooled convolution, concatenated in the order of `widths`.
fn text_cnn_features(convs: &[TokenConv], emb: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let emb = emb.broadcast_mul(&mask.unsqueeze(D::Minus1)?)?;
    let pooled = convs.iter().map(|c| c.forward_pooled(&emb, mask)).collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&pooled, 1)?)
}

/// The layer a parameter belongs to: `layers.0.weight` -> `layers.0`, `rnn.weight_ih_l1` ->
/// `rnn.l1`.
fn layer_of(name: &str) -> String {
    let (prefix, leaf) = name.rsplit_once('.').unwrap_or(("", name));
    match leaf.rsplit_once("_l") {
        Some((_, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("{prefix}.l{n}"),
        _ => prefix.to_string(),
    }
}

/// 1.0 for real tokens and 0.0 for padding, `(B, L)` f32.
pub fn token_mask(ids: &Tensor) -> Result<Tensor> {
    Ok(ids.ne(crate::ml::data::preprocess::PAD)?.to_dtype(DType::F32)?)
}

/// Serialises named tensors to safetensors bytes (names sorted, so the bytes are repeatable).
pub fn tensors_to_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let contiguous: Vec<(String, Tensor)> =
        sorted.into_iter().map(|(n, t)| Ok((n.clone(), t.contiguous()?))).collect::<Result<_>>()?;
    safetensors::tensor::serialize(contiguous.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(|e| Error::internal(format!("cannot serialise tensors: {e}")))
}

/// Logits to class probabilities.
pub fn softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(logits, D::Minus1)?)
}
