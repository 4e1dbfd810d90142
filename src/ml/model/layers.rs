//! The layers the networks are made of, over candle tensors: dense, 2-D convolution, max
//! pooling, LSTM, GRU and embedding, plus seeded dropout. Parameters are created through
//! [`ParamBuilder`], which draws initial values from the experiment's seeded generator, and are
//! named as PyTorch names them, so that weights can be exported for reference checks.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, IndexOp, Module, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::error::Result;
use crate::ml::kernels;
use crate::ml::spec::{Activation, Init};

/// Creates named, initialised parameters in a fixed order, so that the same seed always gives
/// the same network.
pub struct ParamBuilder<'a> {
    pub vars: Vec<(String, Var)>,
    pub rng: &'a mut ChaCha8Rng,
    pub init: Init,
    pub device: Device,
}

impl ParamBuilder<'_> {
    fn push(&mut self, name: &str, shape: &[usize], values: Vec<f32>) -> Result<Tensor> {
        let var = Var::from_vec(values, shape, &self.device)?;
        let t = var.as_tensor().clone();
        self.vars.push((name.to_string(), var));
        Ok(t)
    }

    /// A weight of `shape` initialised by the spec's scheme from its fan-in and fan-out.
    pub fn weight(&mut self, name: &str, shape: &[usize], fan_in: usize, fan_out: usize) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        let values: Vec<f32> = match self.init {
            Init::XavierUniform => uniform(self.rng, n, (6.0 / (fi + fo)).sqrt()),
            Init::XavierNormal => normal(self.rng, n, (2.0 / (fi + fo)).sqrt()),
            Init::KaimingUniform => uniform(self.rng, n, (6.0 / fi).sqrt()),
            Init::KaimingNormal => normal(self.rng, n, (2.0 / fi).sqrt()),
            Init::Normal(std) => normal(self.rng, n, std),
            Init::Uniform(bound) => uniform(self.rng, n, bound),
        };
        self.push(name, shape, values)
    }

    /// A bias, starting at zero.
    pub fn bias(&mut self, name: &str, size: usize) -> Result<Tensor> {
        self.push(name, &[size], vec![0.0; size])
    }

    /// A parameter of `shape` drawn from N(0, std²) whatever the spec's scheme: a Transformer's
    /// embeddings, at BERT's 0.02, since N(0, 1) rows would swamp the position embeddings.
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f64) -> Result<Tensor> {
        let values = normal(self.rng, shape.iter().product(), std);
        self.push(name, shape, values)
    }

    /// A parameter with the given values (a pretrained weight), made a variable.
    pub fn adopt(&mut self, name: &str, values: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&values)?;
        let t = var.as_tensor().clone();
        self.vars.push((name.to_string(), var));
        Ok(t)
    }

    /// A layer norm's scale, starting at one.
    pub fn ones(&mut self, name: &str, size: usize) -> Result<Tensor> {
        self.push(name, &[size], vec![1.0; size])
    }

    /// An embedding table, N(0, 1) as in PyTorch.
    pub fn embedding(&mut self, name: &str, rows: usize, dim: usize) -> Result<Tensor> {
        let values = normal(self.rng, rows * dim, 1.0);
        self.push(name, &[rows, dim], values)
    }
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f32> {
    let b = bound.max(f64::MIN_POSITIVE);
    let dist = Uniform::new_inclusive(-b, b).expect("a positive bound");
    (0..n).map(|_| dist.sample(rng) as f32).collect()
}

fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let dist = Normal::new(0.0, std.max(0.0)).expect("a non-negative deviation");
    (0..n).map(|_| dist.sample(rng) as f32).collect()
}

/// Applies a hidden-layer non-linearity.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Relu => x.relu()?,
        Activation::Tanh => x.tanh()?,
        Activation::Sigmoid => candle_nn::ops::sigmoid(x)?,
        Activation::Gelu => x.gelu_erf()?,
    })
}

/// Inverted dropout with a mask from the seeded generator (candle's own dropout draws from an
/// unseedable generator, which would make runs unrepeatable). `rng` is `None` in evaluation.
pub fn dropout(x: &Tensor, p: f32, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
    let Some(rng) = rng else { return Ok(x.clone()) };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let mask = Tensor::from_vec(dropout_mask(rng, x.elem_count(), p).multipliers(), x.shape(), x.device())?;
    Ok(x.mul(&mask)?)
}

/// The 24-bit draw `x` below which a value is dropped at rate `p`: `x < T` exactly when
/// `x / 2^24 < p` (`p · 2^24` is exact in f64); a negative or NaN `p` drops nothing, as the float
/// test did.
fn dropout_threshold(p: f32) -> u32 {
    (p as f64 * 16_777_216.0).ceil().clamp(0.0, 16_777_217.0) as u32
}

/// A dropout mask of `n` values for rate `p`: each dropped with probability `p`, else kept and
/// scaled by `1/(1-p)`, one draw each in order. Every dropout in Vigil draws its mask here, so
/// the fused kernels and the composed ops consume a seed alike.
pub fn dropout_mask(rng: &mut ChaCha8Rng, n: usize, p: f32) -> kernels::Dropout {
    /// Values one parallel task draws: ChaCha can start anywhere in its stream, so each task
    /// reads its own stretch of words and the mask is the one drawn in order.
    const TASK: usize = 64 * 1024;
    let threshold = dropout_threshold(p);
    let start = rng.get_word_pos();
    let base = rng.clone();
    let mut keep = kernels::zeros::<u8>(n);
    kernels::par::chunks_mut(&mut keep, TASK, |t, chunk| {
        let mut rng = base.clone();
        rng.set_word_pos(start + (t * TASK) as u128);
        // The words are drawn a block at a time (ChaCha's vectorised refill; one
        // `random::<f32>()` per value was a tenth of a MiniLM fine-tuning step) and read as
        // `random::<f32>()` reads one: its top 24 bits over 2^24, dropped when under `p`. The
        // test is made on the integers (`vmath::keep_bytes`), `(w >> 8) < ceil(p · 2^24)`, the
        // same for every word (the division by 2^24 is exact), and without a branch, so that it
        // vectorises: the float compare's branch, mispredicted at random, was 5% of a MiniLM
        // fine-tuning step. Two 16-bit draws a word would halve ChaCha's share (3% of that
        // step), but change every mask, and with them every run trained with dropout.
        let mut words = [0u32; 1024];
        for out in chunk.chunks_mut(1024) {
            let block = &mut words[..out.len()];
            rng.fill(block);
            kernels::vmath::keep_bytes(block, threshold, out);
        }
    });
    rng.set_word_pos(start + n as u128);
    kernels::Dropout { keep, scale: 1.0 / (1.0 - p) }
}

/// A fully connected layer `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Dense {
    pub weight: Tensor,
    pub bias: Tensor,
    /// The weight stored quantised (a model variant of `vigil optimize`); `weight` is then an
    /// empty placeholder and the quantised product runs instead.
    pub quant: Option<QuantWeight>,
}

/// A dense layer's weight in a smaller format: f16, or ggml's Q8_0 / Q4_0 blocks read by candle's
/// quantised matrix product. That product needs the inner dimension to be a whole number of
/// blocks (32 values), so the weight is stored with zero columns up to `padded` and inputs are
/// padded with zeros to match; the zeros change no output.
#[derive(Debug, Clone)]
pub struct QuantWeight {
    /// The weight's parameter name (`layers.0.weight`), which a variant file stores it under.
    pub name: String,
    pub matmul: QMatMul,
    /// The layer's true input width.
    pub inputs: usize,
    /// The stored weight's input width (`inputs` rounded up to whole blocks).
    pub padded: usize,
    pub dtype: GgmlDType,
    /// Q8_0 and Q4_0 weights laid out for Vigil's quantised product ([`kernels::q8`]), which a
    /// few rows (one sentence's tokens) run on; `matmul` stays for what that does not cover (a
    /// gradient, a large batch) and for saving. A second copy of the weight, a few MB for MiniLM.
    fast: Option<std::sync::Arc<kernels::q8::Q8Matrix>>,
}

/// Rows from which a quantised layer widens its weight to f32 for the call (see
/// `QuantWeight::forward`).
const BATCHED_ROWS: usize = 16;

/// Input width from which Vigil's quantised product serves a batch too. Each row is quantised
/// to 8-bit blocks before its products, which a wide row pays back in weight bytes not read:
/// MiniLM's 384- and 1536-wide layers run faster on it than widened (stop 27). A narrow one does
/// not: `topics-transformer`'s 32- and 64-wide layers ran a batch of 256 sentences 2.8x slower
/// on it than on the widened weight (`vigil optimize RUN --quantize q8_0`).
pub(crate) const QUANTISED_BATCH_WIDTH: usize = 256;

impl QuantWeight {
    /// A weight `(outputs, inputs)` stored as `dtype`.
    pub fn quantize(name: &str, weight: &Tensor, dtype: GgmlDType) -> Result<Self> {
        let (_, inputs) = weight.dims2()?;
        let block = dtype.block_size();
        let padded = inputs.div_ceil(block) * block;
        let w = if padded > inputs { weight.pad_with_zeros(1, 0, padded - inputs)? } else { weight.clone() };
        Self::from_stored(name, QTensor::quantize(&w.contiguous()?, dtype)?, inputs)
    }

    /// A stored weight `(outputs, padded)` read back from a variant file, for a layer of `inputs`.
    pub fn from_stored(name: &str, stored: QTensor, inputs: usize) -> Result<Self> {
        let dtype = stored.dtype();
        let (_, padded) = stored.shape().dims2()?;
        if padded < inputs || padded - inputs >= dtype.block_size().max(1) {
            return Err(crate::error::Error::unsuitable(format!(
                "{name}: a stored width of {padded} does not fit a layer of {inputs} inputs"
            )));
        }
        let (outputs, _) = stored.shape().dims2()?;
        let fast = match dtype {
            GgmlDType::Q8_0 if stored.device().is_cpu() => {
                Some(kernels::q8::Q8Matrix::from_q8_0(outputs, padded, &stored.data()?))
            }
            GgmlDType::Q4_0 if stored.device().is_cpu() => {
                Some(kernels::q8::Q8Matrix::from_q4_0(outputs, padded, &stored.data()?))
            }
            _ => None,
        };
        let fast = match fast.transpose() {
            Ok(fast) => fast.map(std::sync::Arc::new),
            Err(e) => return Err(crate::error::Error::unsuitable(format!("{name}: {e}"))),
        };
        let matmul = match dtype {
            // candle would widen f16 to f32 in memory; keep it f16 and multiply in f16.
            GgmlDType::F16 => QMatMul::TensorF16(stored.dequantize_f16(&stored.device())?),
            _ => QMatMul::from_qtensor(stored)?,
        };
        Ok(QuantWeight { name: name.to_string(), matmul, inputs, padded, dtype, fast })
    }

    /// The weight as a file stores it.
    pub fn stored(&self) -> Result<std::sync::Arc<QTensor>> {
        Ok(match &self.matmul {
            QMatMul::QTensor(q) => q.clone(),
            QMatMul::TensorF16(t) | QMatMul::Tensor(t) => {
                std::sync::Arc::new(QTensor::quantize(&t.to_dtype(DType::F32)?, self.dtype)?)
            }
        })
    }

    /// Bytes the weight takes in memory.
    pub fn bytes(&self) -> usize {
        match &self.matmul {
            QMatMul::QTensor(q) => q.storage_size_in_bytes(),
            QMatMul::TensorF16(t) | QMatMul::Tensor(t) => t.elem_count() * t.dtype().size_in_bytes(),
        }
    }

    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let x = if x.rank() > 2 { x.flatten_from(1)? } else { x.clone() };
        let x =
            if self.padded > self.inputs { x.pad_with_zeros(1, 0, self.padded - self.inputs)? } else { x };
        let x = x.contiguous()?;
        // Widening the weight to f32 for the call (the copy lives for this call only) and running
        // the fused f32 layer is faster than candle's f16 product always, and than its quantised
        // product for a batch, which it works through a row at a time. One input at a time, the
        // quantised product wins: it reads a quarter of the bytes and widens nothing.
        if kernels::applies(&[&x, bias]) {
            // Vigil's quantised product reads a quarter of the f32 bytes and, unlike candle's,
            // keeps up with the f32 layer for a sentence's rows (`vigil optimize` shows both). It
            // passes no gradient back, so an explanation takes the widened weight below.
            let rows = x.dim(0)?;
            let differentiated = kernels::wants_grad(&x);
            let few = x.dim(0)? < BATCHED_ROWS || self.padded >= QUANTISED_BATCH_WIDTH;
            if let Some(fast) = self.fast.as_ref().filter(|_| !differentiated && few) {
                let out = kernels::q8::matmul(
                    fast,
                    &x.flatten_all()?.to_vec1::<f32>()?,
                    rows,
                    kernels::q8::Threads::Kernels,
                    kernels::q8::Activations::Quantised,
                )?;
                let out = Tensor::from_vec(out, (rows, fast.rows()), x.device())?;
                return Ok(out.broadcast_add(bias)?);
            }
            // candle's quantised product passes no gradient back to its input, which an
            // explanation of a variant needs: then the widened weight, whose layer has one.
            let wide = match &self.matmul {
                QMatMul::TensorF16(t) => Some(t.to_dtype(DType::F32)?),
                QMatMul::QTensor(q) if x.dim(0)? >= BATCHED_ROWS || differentiated => {
                    Some(q.dequantize(x.device())?)
                }
                _ => None,
            };
            if let Some(w) = wide {
                return Ok(kernels::linear(&x, &w, bias, false)?);
            }
        }
        Ok(self.matmul.forward(&x)?.broadcast_add(bias)?)
    }
}

impl Dense {
    pub fn new(pb: &mut ParamBuilder, prefix: &str, inputs: usize, outputs: usize) -> Result<Self> {
        Ok(Dense {
            weight: pb.weight(&format!("{prefix}.weight"), &[outputs, inputs], inputs, outputs)?,
            bias: pb.bias(&format!("{prefix}.bias"), outputs)?,
            quant: None,
        })
    }

    /// `x` is `(B, inputs)`, or `(B, ...)` read with its trailing dimensions flattened.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(q) = &self.quant {
            return q.forward(x, &self.bias);
        }
        if kernels::applies(&[x, &self.weight, &self.bias]) {
            return Ok(kernels::linear(x, &self.weight, &self.bias, false)?);
        }
        let x = if x.rank() > 2 { x.flatten_from(1)? } else { x.clone() };
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }

    /// `activate(forward(x), act)`, with ReLU fused into the layer where the kernels apply.
    pub fn forward_activated(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        if act == Activation::Relu && fuses_relu(x, self) {
            return Ok(kernels::linear(x, &self.weight, &self.bias, true)?);
        }
        activate(&self.forward(x)?, act)
    }
}

/// Whether [`Dense::forward_activated`] fuses a ReLU into the layer for this input.
pub fn fuses_relu(x: &Tensor, layer: &Dense) -> bool {
    layer.quant.is_none() && kernels::applies(&[x, &layer.weight, &layer.bias])
}

/// A 2-D convolution with stride 1 and same padding.
#[derive(Debug, Clone)]
pub struct Conv {
    pub weight: Tensor,
    pub bias: Tensor,
    pub padding: usize,
}

impl Conv {
    pub fn new(pb: &mut ParamBuilder, prefix: &str, cin: usize, cout: usize, k: usize) -> Result<Self> {
        Ok(Conv {
            weight: pb.weight(&format!("{prefix}.weight"), &[cout, cin, k, k], cin * k * k, cout * k * k)?,
            bias: pb.bias(&format!("{prefix}.bias"), cout)?,
            padding: k / 2,
        })
    }

    /// `x` is `(B, C, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::applies(&[x, &self.weight, &self.bias]) {
            return Ok(kernels::conv2d(x, &self.weight, &self.bias, self.padding, false)?);
        }
        let y = x.conv2d(&self.weight, self.padding, 1, 1, 1)?;
        let c = self.bias.dim(0)?;
        Ok(y.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?)
    }

    /// `activate(forward(x), act)`, with ReLU fused into the convolution where the kernels apply.
    pub fn forward_activated(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        if act == Activation::Relu && kernels::applies(&[x, &self.weight, &self.bias]) {
            return Ok(kernels::conv2d(x, &self.weight, &self.bias, self.padding, true)?);
        }
        activate(&self.forward(x)?, act)
    }

    /// `max_pool2(activate(forward(x), act))`, the block a CNN repeats, as one fused op for ReLU
    /// where the kernels apply.
    pub fn forward_pooled(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        if act == Activation::Relu && kernels::applies(&[x, &self.weight, &self.bias]) {
            return Ok(kernels::conv2d_relu_pool(x, &self.weight, &self.bias, self.padding)?);
        }
        max_pool2(&self.forward_activated(x, act)?)
    }
}

/// 2x2 max pooling with stride 2; odd edges are cut, as PyTorch's `MaxPool2d(2)` does.
///
/// candle 0.11.1's `max_pool2d` backward pass hands a unique maximum only 1/k² of the gradient,
/// which breaks both training and saliency. On the CPU the fused kernel records each window's
/// winner; elsewhere the pooling is a reshape and two max reductions, whose gradient is exact.
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    if kernels::applies(&[x]) {
        return Ok(kernels::max_pool2(x)?);
    }
    let (b, c, h, w) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 { x.narrow(2, 0, h2 * 2)?.narrow(3, 0, w2 * 2)? } else { x.clone() };
    Ok(x.reshape((b, c, h2, 2, w2, 2))?.max(5)?.max(3)?)
}

/// A 1-D convolution over token embeddings, `width` tokens wide, with max-over-time pooling: the
/// text CNN's feature detector (Kim, 2014). The weight is `(filters, E, width)`, as PyTorch's
/// `nn.Conv1d` stores it, so that weights export as they are.
#[derive(Debug, Clone)]
pub struct TokenConv {
    pub weight: Tensor,
    pub bias: Tensor,
    pub width: usize,
}

impl TokenConv {
    pub fn new(
        pb: &mut ParamBuilder,
        prefix: &str,
        embed: usize,
        filters: usize,
        width: usize,
    ) -> Result<Self> {
        Ok(TokenConv {
            weight: pb.weight(
                &format!("{prefix}.weight"),
                &[filters, embed, width],
                embed * width,
                filters * width,
            )?,
            bias: pb.bias(&format!("{prefix}.bias"), filters)?,
            width,
        })
    }

    /// `max over t of relu(conv(emb)[t])`, `(B, filters)`, from embeddings `(B, L, E)` whose
    /// padded positions are already zero, and the padding mask `(B, L)`.
    ///
    /// A window counts when it lies wholly within the text, or is the first one (so that a
    /// text shorter than the window, seen with zeros after it, still has one): padding never
    /// wins the max, and padding added after a text changes nothing. The others get -1e9
    /// before the max. ReLU after the max equals the max after ReLU (both are monotone), and
    /// leaves one activation a filter instead of `L`.
    pub fn forward_pooled(&self, emb: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, l, e) = emb.dims3()?;
        let w = self.width;
        // A text shorter than the window gets zeros after it, as one padded to `w` would.
        let (emb, mask, l) = if l < w {
            (emb.pad_with_zeros(1, 0, w - l)?, mask.pad_with_zeros(1, 0, w - l)?, w)
        } else {
            (emb.clone(), mask.clone(), l)
        };
        let windows = l + 1 - w;
        // im2col: row (b, t) holds the embeddings of tokens t..t+w, token-major; the weight
        // `(F, E, w)` read as `(F, w, E)` flattened matches that order.
        let cols = if w == 1 {
            emb
        } else {
            let parts = (0..w).map(|k| emb.narrow(1, k, windows)).collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 2)?
        };
        let filters = self.weight.dim(0)?;
        let weight = self.weight.transpose(1, 2)?.contiguous()?.reshape((filters, w * e))?;
        let cols = cols.reshape((b * windows, w * e))?;
        let y = if kernels::applies(&[&cols, &weight, &self.bias]) {
            kernels::linear(&cols, &weight, &self.bias, false)?
        } else {
            cols.matmul(&weight.t()?)?.broadcast_add(&self.bias)?
        };
        let y = y.reshape((b, windows, filters))?;
        // 1 for a window that counts: its last token is real (padding only follows a text), or
        // it is the first.
        let first = Tensor::ones((b, 1), DType::F32, mask.device())?;
        let counts =
            if windows > 1 { Tensor::cat(&[&first, &mask.narrow(1, w, windows - 1)?], 1)? } else { first };
        let hide = ((counts - 1.0)? * 1e9)?.unsqueeze(2)?;
        Ok(y.broadcast_add(&hide)?.max(1)?.relu()?)
    }
}

/// Which recurrent cell a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    Lstm,
    Gru,
}

/// One recurrent layer, batch first, with PyTorch's gate order (LSTM: i, f, g, o; GRU: r, z, n).
#[derive(Debug, Clone)]
pub struct Recurrent {
    pub kind: CellKind,
    pub hidden: usize,
    pub w_ih: Tensor,
    pub w_hh: Tensor,
    pub b_ih: Tensor,
    pub b_hh: Tensor,
}

impl Recurrent {
    pub fn new(
        pb: &mut ParamBuilder,
        prefix: &str,
        kind: CellKind,
        layer: usize,
        inputs: usize,
        hidden: usize,
    ) -> Result<Self> {
        let gates = match kind {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        };
        let g = gates * hidden;
        Ok(Recurrent {
            kind,
            hidden,
            w_ih: pb.weight(&format!("{prefix}.weight_ih_l{layer}"), &[g, inputs], inputs, g)?,
            w_hh: pb.weight(&format!("{prefix}.weight_hh_l{layer}"), &[g, hidden], hidden, g)?,
            b_ih: pb.bias(&format!("{prefix}.bias_ih_l{layer}"), g)?,
            b_hh: pb.bias(&format!("{prefix}.bias_hh_l{layer}"), g)?,
        })
    }

    /// Runs over `x` of `(B, T, F)` and returns every hidden state, `(B, T, H)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, f) = x.dims3()?;
        if kernels::applies(&[x, &self.w_ih, &self.w_hh, &self.b_ih, &self.b_hh]) && t > 0 {
            // The input projection of every step in one product, then the fused recurrence.
            let xp = kernels::linear(&x.reshape((b * t, f))?, &self.w_ih, &self.b_ih, false)?;
            let cell = match self.kind {
                CellKind::Lstm => kernels::Cell::Lstm,
                CellKind::Gru => kernels::Cell::Gru,
            };
            return Ok(kernels::recurrent(cell, &xp, &self.w_hh, &self.b_hh, b, t)?);
        }
        let h_dim = self.hidden;
        // The input projection of every step in one matrix product; only the recurrent
        // product stays inside the loop.
        let xp =
            x.reshape((b * t, f))?.matmul(&self.w_ih.t()?)?.broadcast_add(&self.b_ih)?.reshape((b, t, ()))?;
        let w_hh_t = self.w_hh.t()?;
        let mut h = Tensor::zeros((b, h_dim), DType::F32, x.device())?;
        let mut c = h.clone();
        let mut outputs = Vec::with_capacity(t);
        for step in 0..t {
            let xs = xp.i((.., step, ..))?;
            let hp = h.matmul(&w_hh_t)?.broadcast_add(&self.b_hh)?;
            match self.kind {
                CellKind::Lstm => {
                    let gates = (xs + hp)?;
                    let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, h_dim)?)?;
                    let fg = candle_nn::ops::sigmoid(&gates.narrow(1, h_dim, h_dim)?)?;
                    let g = gates.narrow(1, 2 * h_dim, h_dim)?.tanh()?;
                    let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * h_dim, h_dim)?)?;
                    c = ((fg * &c)? + (i * g)?)?;
                    h = (o * c.tanh()?)?;
                }
                CellKind::Gru => {
                    let r = candle_nn::ops::sigmoid(&(xs.narrow(1, 0, h_dim)? + hp.narrow(1, 0, h_dim)?)?)?;
                    let z = candle_nn::ops::sigmoid(
                        &(xs.narrow(1, h_dim, h_dim)? + hp.narrow(1, h_dim, h_dim)?)?,
                    )?;
                    let n =
                        (xs.narrow(1, 2 * h_dim, h_dim)? + (r * hp.narrow(1, 2 * h_dim, h_dim)?)?)?.tanh()?;
                    // h' = (1 - z) * n + z * h
                    h = ((&n - (&z * &n)?)? + (&z * &h)?)?;
                }
            }
            outputs.push(h.clone());
        }
        Ok(Tensor::stack(&outputs, 1)?)
    }
}

/// Masked mean over the token axis: `emb` is `(B, L, E)`, `mask` `(B, L)` with 1 for real tokens.
pub fn masked_mean(emb: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let summed = emb.broadcast_mul(&mask.unsqueeze(D::Minus1)?)?.sum(1)?;
    let count = mask.sum_keepdim(1)?.clamp(1.0, f64::MAX)?;
    Ok(summed.broadcast_div(&count)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantised_layer_predicting_takes_its_quantised_product_and_widens_for_a_gradient() {
        use rand::Rng;
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let (rows, inputs, outputs) = (20, QUANTISED_BATCH_WIDTH, 48);
        let mut values = |n: usize| (0..n).map(|_| rng.random::<f32>() - 0.5).collect::<Vec<f32>>();
        let w = Tensor::from_vec(values(outputs * inputs), (outputs, inputs), &Device::Cpu).unwrap();
        let q = QuantWeight::quantize("w", &w, GgmlDType::Q8_0).unwrap();
        let bias = Tensor::zeros(outputs, DType::F32, &Device::Cpu).unwrap();
        // The input tracks gradients, as a trained model's embeddings make it do.
        let x = candle_core::Var::from_vec(values(rows * inputs), (rows, inputs), &Device::Cpu).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let quantised = kernels::q8::matmul(
            q.fast.as_ref().unwrap(),
            &flat(x.as_tensor().clone()),
            rows,
            kernels::q8::Threads::Kernels,
            kernels::q8::Activations::Quantised,
        )
        .unwrap();
        let predicted = flat(kernels::inference(|| q.forward(x.as_tensor(), &bias)).unwrap());
        assert_eq!(predicted, quantised, "a prediction takes the quantised product");
        // Outside inference the gradient needs the widened weight; its values differ from the
        // quantised activations' by their rounding.
        let tracked = flat(q.forward(x.as_tensor(), &bias).unwrap());
        assert_ne!(tracked, quantised);
        let worst = tracked.iter().zip(&quantised).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 0.05, "{worst}");
    }

    #[test]
    fn the_dropout_threshold_splits_the_draws_where_the_float_test_does() {
        for p in [0.1f32, 0.3, 0.5, 0.25, 1e-7, 0.999_999_9, 0.0, 1.0, -0.5, f32::NAN] {
            let t = dropout_threshold(p) as i64;
            for x in (t - 2..=t + 2).filter(|x| (0..1 << 24).contains(x)) {
                let float_drops = (x as f32) / 16_777_216.0 < p;
                assert_eq!((x as u32) < t as u32, float_drops, "p = {p}, x = {x}");
            }
        }
    }

    #[test]
    fn a_dropout_mask_is_the_one_drawn_value_by_value() {
        // Long enough for several parallel stretches of the stream, and not a whole number of them.
        // Rates whose threshold p · 2^24 is not an integer (0.3, 0.1) and is one (0.5, 0).
        let n = 150_001;
        for p in [0.3f32, 0.1, 0.5, 0.0] {
            let mut a = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
            let mut b = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
            let _ = (a.random::<u32>(), b.random::<u32>());
            let mask = dropout_mask(&mut a, n, p).multipliers();
            let want: Vec<f32> =
                (0..n).map(|_| if b.random::<f32>() < p { 0.0 } else { 1.0 / (1.0 - p) }).collect();
            assert_eq!(mask, want, "p = {p}");
            assert_eq!(a.random::<u32>(), b.random::<u32>(), "the generators end in the same state");
            let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / n as f64;
            assert!((dropped - p as f64).abs() < 0.01, "{dropped} dropped at p = {p}");
        }
    }

    use candle_core::Var;

    /// Central finite difference of `f` with respect to each input value.
    fn numeric_grad(f: &dyn Fn(&Tensor) -> f64, x: &[f32], shape: &[usize]) -> Vec<f64> {
        let h = 1e-3f32;
        (0..x.len())
            .map(|i| {
                let mut plus = x.to_vec();
                plus[i] += h;
                let mut minus = x.to_vec();
                minus[i] -= h;
                let tp = Tensor::from_vec(plus, shape, &Device::Cpu).unwrap();
                let tm = Tensor::from_vec(minus, shape, &Device::Cpu).unwrap();
                (f(&tp) - f(&tm)) / (2.0 * h as f64)
            })
            .collect()
    }

    #[test]
    fn max_pool_gradient_matches_finite_differences() {
        // Distinct values (no ties), an odd 5x5 size that pooling must crop, two channels, and a
        // weighted sum so each output's gradient differs.
        let shape = [1usize, 2, 5, 5];
        let x: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32 * 0.1 - 2.0).collect();
        let weights =
            Tensor::from_vec((1..=8).map(|v| v as f32).collect::<Vec<_>>(), (1, 2, 2, 2), &Device::Cpu)
                .unwrap();
        let f = |t: &Tensor| -> f64 {
            max_pool2(t).unwrap().mul(&weights).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let var = Var::from_vec(x.clone(), &shape[..], &Device::Cpu).unwrap();
        let out = max_pool2(var.as_tensor()).unwrap().mul(&weights).unwrap().sum_all().unwrap();
        let grads = out.backward().unwrap();
        let analytic: Vec<f32> =
            grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let numeric = numeric_grad(&f, &x, &shape);
        for (i, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
            assert!((*a as f64 - n).abs() < 1e-2, "element {i}: analytic {a}, numeric {n}");
        }
        // Each of the 8 windows passes its whole weight to exactly one element.
        let nonzero = analytic.iter().filter(|g| **g != 0.0).count();
        assert_eq!(nonzero, 8);
        assert_eq!(analytic.iter().sum::<f32>(), (1..=8).sum::<i32>() as f32);
    }

    #[test]
    fn candle_max_pool2d_gradient_is_still_wrong() {
        // Documents the defect `max_pool2` works around: if candle fixes it, this test fails
        // and the workaround can be reconsidered.
        let var =
            Var::from_vec((0..16).map(|v| v as f32).collect::<Vec<_>>(), (1, 1, 4, 4), &Device::Cpu).unwrap();
        let g = var.as_tensor().max_pool2d(2).unwrap().sum_all().unwrap().backward().unwrap();
        let total: f32 = g.get(var.as_tensor()).unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!((total - 4.0).abs() > 1e-3, "candle's max_pool2d gradient now sums to 4: {total}");
    }

    fn fixed_recurrent(kind: CellKind) -> Recurrent {
        // Weights 0.1*sin(i) for i = 0.., biases 0.05*cos(i): easy to rebuild in PyTorch.
        let g = if kind == CellKind::Lstm { 4 } else { 3 };
        let (f, h) = (2usize, 3usize);
        let t = |n: usize, off: usize, shape: &[usize], bias: bool| {
            let v: Vec<f32> = (0..n)
                .map(|i| if bias { 0.05 * ((i + off) as f32).cos() } else { 0.1 * ((i + off) as f32).sin() })
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        Recurrent {
            kind,
            hidden: h,
            w_ih: t(g * h * f, 0, &[g * h, f], false),
            w_hh: t(g * h * h, 100, &[g * h, h], false),
            b_ih: t(g * h, 0, &[g * h], true),
            b_hh: t(g * h, 50, &[g * h], true),
        }
    }

    fn sequence() -> Tensor {
        let v: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) * 0.4).collect();
        Tensor::from_vec(v, (1, 4, 2), &Device::Cpu).unwrap()
    }

    // Reference (PyTorch 2.15):
    //   import torch, math
    //   def W(n, off, shape, bias): return torch.tensor([0.05*math.cos(i+off) if bias else 0.1*math.sin(i+off) for i in range(n)]).reshape(shape)
    //   for cls, g in ((torch.nn.LSTM, 4), (torch.nn.GRU, 3)):
    //       m = cls(2, 3, batch_first=True)
    //       m.weight_ih_l0.data = W(g*6, 0, (g*3, 2), False); m.weight_hh_l0.data = W(g*9, 100, (g*3, 3), False)
    //       m.bias_ih_l0.data = W(g*3, 0, (g*3,), True); m.bias_hh_l0.data = W(g*3, 50, (g*3,), True)
    //       x = ((torch.arange(8.) - 3.5) * 0.4).reshape(1, 4, 2)
    //       print(m(x)[0][0, -1])
    #[test]
    fn lstm_matches_pytorch() {
        let out = fixed_recurrent(CellKind::Lstm).forward(&sequence()).unwrap();
        let last: Vec<f32> = out.narrow(1, 3, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let want = LSTM_REFERENCE;
        for (a, b) in last.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{last:?} vs {want:?}");
        }
    }

    #[test]
    fn gru_matches_pytorch() {
        let out = fixed_recurrent(CellKind::Gru).forward(&sequence()).unwrap();
        let last: Vec<f32> = out.narrow(1, 3, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let want = GRU_REFERENCE;
        for (a, b) in last.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{last:?} vs {want:?}");
        }
    }

    const LSTM_REFERENCE: [f32; 3] = [0.045_667_03, 0.094_721_116, -0.035_995_24];
    const GRU_REFERENCE: [f32; 3] = [0.075_251_82, 0.142_134_43, -0.098_649_34];
}
