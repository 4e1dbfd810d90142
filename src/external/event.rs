//! TensorBoard event files (`events.out.tfevents.*`): TFRecord framing around serialised
//! `tensorflow.Event` protobufs. Each record is
//!
//! ```text
//! u64 length (little endian) · u32 masked CRC-32C of the length · data · u32 masked CRC-32C of data
//! ```
//!
//! [`EventReader`] reads a file from where it stopped, so a file being written is followed: a
//! torn last record (the writer mid-flush) is left for the next read. A record whose data fails
//! its CRC is skipped with a warning; a header whose length fails its CRC (a damaged file, or
//! one that is not an event file at all) is skipped byte by byte until a header checks again,
//! with one warning for the bytes skipped. Nothing here panics on any input.
//!
//! Scalars come in two encodings, both read: `simple_value` (PyTorch, tensorboardX, TF1) and a
//! one-element tensor (TF2's `tf.summary.scalar`, `SummaryWriter(..., new_style=True)`), of
//! float, double, half, bfloat16 or integer type. Other summaries (images, histograms, text)
//! are skipped, as their plugin says or their shape shows.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use prost::Message;

use super::{Position, ScalarPoint, Scalars, Warning, push};

/// The messages of `tensorflow/core/util/event.proto` and `summary.proto`, with only the fields
/// Vigil reads (prost skips the others: graphs, images and histograms cost no decoding). A
/// `oneof` is wire-compatible with optional fields of the same numbers.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        #[prost(int64, tag = "2")]
        pub step: i64,
        #[prost(string, optional, tag = "3")]
        pub file_version: Option<String>,
        #[prost(message, optional, tag = "5")]
        pub summary: Option<Summary>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(float, optional, tag = "2")]
        pub simple_value: Option<f32>,
        #[prost(message, optional, tag = "8")]
        pub tensor: Option<Tensor>,
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<Metadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(message, optional, tag = "1")]
        pub plugin_data: Option<PluginData>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        #[prost(string, tag = "1")]
        pub plugin_name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        /// `tensorflow.DataType`.
        #[prost(int32, tag = "1")]
        pub dtype: i32,
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<Shape>,
        #[prost(bytes = "vec", tag = "4")]
        pub tensor_content: Vec<u8>,
        #[prost(float, repeated, tag = "5")]
        pub float_val: Vec<f32>,
        #[prost(double, repeated, tag = "6")]
        pub double_val: Vec<f64>,
        #[prost(int32, repeated, tag = "7")]
        pub int_val: Vec<i32>,
        #[prost(int64, repeated, tag = "10")]
        pub int64_val: Vec<i64>,
        /// f16 and bfloat16 values, as their bits in the low half of an int32.
        #[prost(int32, repeated, tag = "13")]
        pub half_val: Vec<i32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Shape {
        #[prost(message, repeated, tag = "2")]
        pub dim: Vec<Dim>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
    }
}

// tensorflow.DataType values.
const DT_FLOAT: i32 = 1;
const DT_DOUBLE: i32 = 2;
const DT_INT32: i32 = 3;
const DT_INT64: i32 = 9;
const DT_BFLOAT16: i32 = 14;
const DT_HALF: i32 = 19;

/// The masked CRC-32C TFRecord stores: the CRC rotated and offset, so that a CRC of data that
/// holds CRCs stays well distributed.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Frames one record (for tests and the bench's generator).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// A scalar event, encoded and framed as PyTorch's `SummaryWriter.add_scalar` writes it.
pub fn scalar_record(tag: &str, step: i64, wall: f64, value: f32) -> Vec<u8> {
    let e = proto::Event {
        wall_time: wall,
        step,
        file_version: None,
        summary: Some(proto::Summary {
            value: vec![proto::Value {
                tag: tag.into(),
                simple_value: Some(value),
                tensor: None,
                metadata: None,
            }],
        }),
    };
    frame(&e.encode_to_vec())
}

/// The first record of every event file.
pub fn version_record(wall: f64) -> Vec<u8> {
    let e =
        proto::Event { wall_time: wall, step: 0, file_version: Some("brain.Event:2".into()), summary: None };
    frame(&e.encode_to_vec())
}

/// Whether a file name is an event file's (`events.out.tfevents.<time>.<host>...`).
pub fn is_event_file(name: &str) -> bool {
    name.contains("tfevents")
}

/// How much is read at once.
const CHUNK: usize = 8 << 20;
/// A record longer than this is taken for a damaged header (scalar records are ~50 bytes;
/// graphs and images a few MB).
const MAX_RECORD: u64 = 1 << 30;

/// Follows one event file.
#[derive(Debug)]
pub struct EventReader {
    path: PathBuf,
    /// Where the next record starts (or where the search for one goes on).
    offset: u64,
    /// The plugin each tag's first value named (later values may omit the metadata).
    plugins: HashMap<String, String>,
    /// Where bytes that are not records began, while looking for the next record.
    lost_from: Option<u64>,
    /// Whether the torn end at `offset` was reported already.
    told_torn: Option<u64>,
}

impl EventReader {
    pub fn new(path: &Path) -> Self {
        EventReader {
            path: path.to_path_buf(),
            offset: 0,
            plugins: HashMap::new(),
            lost_from: None,
            told_torn: None,
        }
    }

    /// The offset after the last whole record read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the records written since the last call.
    pub fn read(&mut self, out: &mut Scalars, warnings: &mut Vec<Warning>) -> std::io::Result<()> {
        let mut f = std::fs::File::open(&self.path)?;
        let len = f.metadata()?.len();
        if len < self.offset {
            // Truncated or replaced: read it anew.
            *self = EventReader::new(&self.path);
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; CHUNK.min((len - self.offset) as usize + 1)];
        loop {
            let n = f.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let used = self.parse(&buf, out, warnings);
            self.offset += used as u64;
            buf.drain(..used);
        }
        Ok(())
    }

    /// What is left to say once the writer is gone: bytes that never became records.
    pub fn finish(&mut self, warnings: &mut Vec<Warning>) {
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if let Some(from) = self.lost_from.take() {
            self.warn(
                warnings,
                from,
                format!(
                    "{} bytes up to the end are not TensorBoard records (no record header's CRC \
                     checks): not an event file, or a damaged one",
                    len.saturating_sub(from)
                ),
            );
            self.offset = len;
        } else if len > self.offset && self.told_torn != Some(self.offset) {
            self.told_torn = Some(self.offset);
            let msg = format!(
                "the file ends in a partial record ({} bytes): read up to the last whole record",
                len - self.offset
            );
            self.warn(warnings, self.offset, msg);
        }
    }

    fn warn(&self, warnings: &mut Vec<Warning>, at: u64, msg: String) {
        warnings.push(Warning { file: self.path.clone(), at: Position::Offset(at), msg });
    }

    /// Reads the whole records at the start of `buf` (which begins at `self.offset`); returns
    /// how many bytes were used.
    fn parse(&mut self, buf: &[u8], out: &mut Scalars, warnings: &mut Vec<Warning>) -> usize {
        let mut pos = 0usize;
        while buf.len() - pos >= 12 {
            let at = self.offset + pos as u64;
            let head = &buf[pos..pos + 12];
            let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            let len_crc = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
            if masked_crc(&head[..8]) != len_crc || len > MAX_RECORD {
                // Not a record header: look for the next one, a byte further.
                self.lost_from.get_or_insert(at);
                pos += 1;
                continue;
            }
            if let Some(from) = self.lost_from.take() {
                let msg = format!(
                    "{} bytes that are not TensorBoard records skipped (the record length's CRC \
                     does not match); reading on at offset {at}",
                    at - from
                );
                self.warn(warnings, from, msg);
            }
            let total = 12 + len as usize + 4;
            if buf.len() - pos < total {
                break; // a torn record: the rest is not written yet
            }
            let data = &buf[pos + 12..pos + 12 + len as usize];
            let crc = u32::from_le_bytes(buf[pos + total - 4..pos + total].try_into().expect("4 bytes"));
            pos += total;
            if masked_crc(data) != crc {
                self.warn(warnings, at, format!("record of {len} bytes fails its CRC check: skipped"));
                continue;
            }
            match proto::Event::decode(data) {
                Ok(e) => self.event(e, out),
                Err(e) => {
                    self.warn(warnings, at, format!("record is not a TensorBoard event ({e}): skipped"))
                }
            }
        }
        pos
    }

    fn event(&mut self, e: proto::Event, out: &mut Scalars) {
        let Some(summary) = e.summary else { return };
        for v in summary.value {
            if let Some(plugin) = v.metadata.and_then(|m| m.plugin_data).map(|p| p.plugin_name)
                && !self.plugins.contains_key(&v.tag)
            {
                self.plugins.insert(v.tag.clone(), plugin);
            }
            let value = match (v.simple_value, &v.tensor) {
                (Some(x), _) => Some(x as f64),
                (None, Some(t)) if self.plugins.get(&v.tag).is_none_or(|p| p == "scalars") => {
                    tensor_scalar(t)
                }
                _ => None,
            };
            if let Some(value) = value {
                push(out, &v.tag, ScalarPoint { step: e.step, wall: e.wall_time, value });
            }
        }
    }
}

/// The value of a one-element numeric tensor (a TF2 scalar summary).
fn tensor_scalar(t: &proto::Tensor) -> Option<f64> {
    let elements: i64 = t.tensor_shape.as_ref().map_or(1, |s| s.dim.iter().map(|d| d.size).product());
    if elements != 1 {
        return None;
    }
    let c = &t.tensor_content;
    let half = |bits: u16| -> f64 {
        if t.dtype == DT_BFLOAT16 { f32::from_bits((bits as u32) << 16) as f64 } else { f16_to_f64(bits) }
    };
    match t.dtype {
        DT_FLOAT => t
            .float_val
            .first()
            .map(|x| *x as f64)
            .or_else(|| Some(f32::from_le_bytes(c.get(..4)?.try_into().ok()?) as f64)),
        DT_DOUBLE => {
            t.double_val.first().copied().or_else(|| Some(f64::from_le_bytes(c.get(..8)?.try_into().ok()?)))
        }
        DT_INT32 => t
            .int_val
            .first()
            .map(|x| *x as f64)
            .or_else(|| Some(i32::from_le_bytes(c.get(..4)?.try_into().ok()?) as f64)),
        DT_INT64 => t
            .int64_val
            .first()
            .map(|x| *x as f64)
            .or_else(|| Some(i64::from_le_bytes(c.get(..8)?.try_into().ok()?) as f64)),
        DT_HALF | DT_BFLOAT16 => t
            .half_val
            .first()
            .map(|x| half(*x as u16))
            .or_else(|| Some(half(u16::from_le_bytes(c.get(..2)?.try_into().ok()?)))),
        _ => None,
    }
}

/// An IEEE half-precision number's value.
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// Reads a whole event file at once (the CLI and the bench): its scalars and warnings, a torn
/// end reported as such.
pub fn read_file(path: &Path) -> std::io::Result<(Scalars, Vec<Warning>)> {
    let mut r = EventReader::new(path);
    let mut out = Scalars::new();
    let mut warnings = Vec::new();
    r.read(&mut out, &mut warnings)?;
    r.finish(&mut warnings);
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The mask written as TensorFlow's lib/hash/crc32c.h writes it, not as the code does.
    #[allow(clippy::manual_rotate)]
    fn the_masked_crc_is_tensorflows() {
        // TensorFlow's crc32c_test: Value("a") = 0xc1d04330 (unmasked), and
        // masked = ((c >> 15) | (c << 17)) + 0xa282ead8.
        let c: u32 = 0xc1d0_4330;
        assert_eq!(crc32c::crc32c(b"a"), c);
        assert_eq!(masked_crc(b"a"), ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn halves_decode() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333251953125);
    }

    #[test]
    fn tensor_scalars_of_each_type_are_read_and_other_shapes_are_not() {
        let t =
            |dtype, content: Vec<u8>| proto::Tensor { dtype, tensor_content: content, ..Default::default() };
        assert_eq!(tensor_scalar(&t(DT_FLOAT, 0.5f32.to_le_bytes().to_vec())), Some(0.5));
        assert_eq!(tensor_scalar(&t(DT_DOUBLE, 0.25f64.to_le_bytes().to_vec())), Some(0.25));
        assert_eq!(tensor_scalar(&t(DT_INT64, 7i64.to_le_bytes().to_vec())), Some(7.0));
        assert_eq!(
            tensor_scalar(&proto::Tensor { dtype: DT_FLOAT, float_val: vec![2.0], ..Default::default() }),
            Some(2.0)
        );
        let vector = proto::Tensor {
            dtype: DT_FLOAT,
            tensor_shape: Some(proto::Shape { dim: vec![proto::Dim { size: 3 }] }),
            float_val: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        assert_eq!(tensor_scalar(&vector), None);
        assert_eq!(tensor_scalar(&t(7, b"text".to_vec())), None, "strings are not scalars");
    }

    #[test]
    fn a_torn_record_waits_and_a_bad_crc_is_skipped_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.1.test");
        let mut bytes = version_record(1.0);
        let first = scalar_record("loss", 1, 1.0, 0.5);
        let bad_at = bytes.len() + first.len();
        bytes.extend(&first);
        let mut bad = scalar_record("loss", 2, 2.0, 0.4);
        let n = bad.len();
        bad[n - 6] ^= 0xff; // a byte of the data
        bytes.extend(&bad);
        let third = scalar_record("loss", 3, 3.0, 0.3);
        bytes.extend(&third[..10]);
        std::fs::write(&path, &bytes).unwrap();
        let mut r = EventReader::new(&path);
        let (mut out, mut w) = (Scalars::new(), vec![]);
        r.read(&mut out, &mut w).unwrap();
        assert_eq!(out["loss"].iter().map(|p| p.step).collect::<Vec<_>>(), vec![1]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].at, Position::Offset(bad_at as u64));
        assert!(w[0].msg.contains("CRC"), "{}", w[0]);
        // The writer finishes the record: it is read on the next call.
        bytes.extend(&third[10..]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut out, mut w) = (Scalars::new(), vec![]);
        r.read(&mut out, &mut w).unwrap();
        assert_eq!(out["loss"][0].step, 3);
        assert!(w.is_empty());
        assert_eq!(r.offset(), bytes.len() as u64);
    }

    #[test]
    fn bytes_that_are_not_records_are_skipped_to_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.2.test");
        let mut bytes = scalar_record("acc", 1, 1.0, 0.5);
        bytes.extend(b"garbage in the middle");
        bytes.extend(scalar_record("acc", 2, 2.0, 0.6));
        std::fs::write(&path, &bytes).unwrap();
        let (out, w) = read_file(&path).unwrap();
        assert_eq!(out["acc"].len(), 2);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].msg.contains("21 bytes"), "{}", w[0]);
    }
}
