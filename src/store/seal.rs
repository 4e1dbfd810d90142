//! Encryption at rest for the run store. A sealed file is `VGSEAL01 || nonce (24) || ciphertext`,
//! XChaCha20-Poly1305 with the file's path inside the run as associated data, so a changed byte,
//! a truncated file, or a file moved into another's place fails authentication and is named.
//! The key comes from a key file, `VIGIL_SEAL_KEY` (64 hex digits) or a passphrase
//! (`VIGIL_SEAL_PASSPHRASE`) stretched with Argon2id; `<runs>/seal.json` keeps the passphrase's
//! salt and a check value, so a wrong key is refused before anything is read or written.
//! The command line resolves the key once and hands it to the [`super::RunStore`]
//! (`RunStore::with_key`), which passes it to every run folder it opens: there is no
//! process-wide key, so two stores (or two tests) in one process never share one.
//!
//! Only what leaks the data or the model is sealed: checkpoints, optimiser state, the fitted
//! preprocessing and the API key file. Specs, metrics and logs stay readable, so the console can
//! list and plot sealed runs without the key.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{read_json, write_atomic, write_json};
use crate::error::{Error, Result};

/// The first bytes of every sealed file.
pub const MAGIC: &[u8; 8] = b"VGSEAL01";
const NONCE: usize = 24;

/// Files inside a run that are sealed.
pub const SENSITIVE: &[&str] = &[
    "checkpoints/best.safetensors",
    "checkpoints/last.safetensors",
    "checkpoints/optimizer.safetensors",
    "preprocess.json",
];

/// A 256-bit sealing key.
pub struct SealKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id())
    }
}

/// Argon2id settings and salt for a passphrase-derived key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kdf {
    pub salt: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

/// `<runs>/seal.json`: how the store's key is made and how to recognise it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealConfig {
    pub version: u32,
    pub kdf: Option<Kdf>,
    /// SHA-256 of a fixed label and the key: tells a wrong key from a damaged file.
    pub key_check: String,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source is available");
    b
}

impl SealKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        SealKey { key: Zeroizing::new(random::<32>()) }
    }

    /// A key from 64 hex digits.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            Error::bad_key(format!("{origin}: a sealing key is 64 hex digits (32 bytes); this is not hex"))
        })?);
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            Error::bad_key(format!(
                "{origin}: a sealing key is 32 bytes (64 hex digits), not {}",
                bytes.len()
            ))
        })?;
        Ok(SealKey { key: Zeroizing::new(key) })
    }

    /// A key from a key file: 64 hex digits, or 32 raw bytes.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::io(path, e))?);
        if bytes.len() == 32 {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            return Ok(SealKey { key: Zeroizing::new(key) });
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::bad_key(format!("{}: not a key file", path.display())))?;
        Self::from_hex(text, &path.display().to_string())
    }

    /// A key stretched from a passphrase with Argon2id.
    pub fn from_passphrase(pass: &str, kdf: &Kdf) -> Result<Self> {
        let salt = hex::decode(&kdf.salt).map_err(|_| Error::corrupt("seal.json", "the salt is not hex"))?;
        let params = argon2::Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
            .map_err(|e| Error::corrupt("seal.json", format!("bad Argon2 parameters: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(pass.as_bytes(), &salt, key.as_mut())
            .map_err(|e| Error::derive(format!("cannot derive a key from the passphrase: {e}")))?;
        Ok(SealKey { key })
    }

    /// The key as 64 hex digits (for a new key file).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_ref()))
    }

    fn check(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"vigil seal key check v1");
        h.update(self.key.as_ref());
        hex::encode(h.finalize())
    }

    /// A short, non-secret name for the key.
    pub fn id(&self) -> String {
        self.check()[..12].to_string()
    }

    /// Encrypts `plain` as the file `rel` (its path inside the run or store).
    pub fn seal(&self, rel: &str, plain: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(self.key.as_ref().into());
        let nonce = random::<NONCE>();
        let body = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: rel.as_bytes() })
            .expect("encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Decrypts a sealed file; `path` names it in errors.
    pub fn open(&self, rel: &str, sealed: &[u8], path: &Path) -> Result<Vec<u8>> {
        if sealed.len() < MAGIC.len() + NONCE + 16 {
            return Err(Error::Corrupt { path: path.into(), msg: "sealed file is truncated".into() });
        }
        let cipher = XChaCha20Poly1305::new(self.key.as_ref().into());
        let nonce = &sealed[MAGIC.len()..MAGIC.len() + NONCE];
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload { msg: &sealed[MAGIC.len() + NONCE..], aad: rel.as_bytes() },
            )
            .map_err(|_| Error::Corrupt {
                path: path.into(),
                msg: "authentication failed: the sealed file was changed, truncated or moved".into(),
            })
    }
}

/// Whether bytes are a sealed file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The error for a sealed file and no key to open it with.
fn no_key(path: &Path) -> Error {
    Error::sealed(format!(
        "{} is sealed: give the key with --seal-key-file FILE, VIGIL_SEAL_KEY or VIGIL_SEAL_PASSPHRASE",
        path.display()
    ))
}

/// Reads a file that may be sealed, decrypting it with `key`.
pub fn read(path: &Path, rel: &str, key: Option<&SealKey>) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    open_bytes(bytes, path, rel, key)
}

/// Decrypts bytes read from `path` with `key` when they are sealed.
pub fn open_bytes(bytes: Vec<u8>, path: &Path, rel: &str, key: Option<&SealKey>) -> Result<Vec<u8>> {
    if !is_sealed(&bytes) {
        return Ok(bytes);
    }
    match key {
        Some(k) => k.open(rel, &bytes, path),
        None => Err(no_key(path)),
    }
}

/// Writes a file, sealed with `key` when `seal` is set.
pub fn write(path: &Path, rel: &str, plain: &[u8], seal: bool, key: Option<&SealKey>) -> Result<()> {
    if !seal {
        return write_atomic(path, plain);
    }
    let key = key.ok_or_else(|| {
        Error::sealed(format!("{} belongs to a sealed run: give the key to write it", path.display()))
    })?;
    write_atomic(path, &key.seal(rel, plain))
}

/// The store's seal configuration, if it was ever sealed.
pub fn config(root: &Path) -> Result<Option<SealConfig>> {
    let p = root.join("seal.json");
    if !p.exists() {
        return Ok(None);
    }
    read_json(&p).map(Some)
}

/// Where a key comes from, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    pub key_file: Option<PathBuf>,
    /// `VIGIL_SEAL_KEY`.
    pub key_hex: Option<String>,
    /// `VIGIL_SEAL_PASSPHRASE`.
    pub passphrase: Option<String>,
}

impl KeyOptions {
    pub fn from_env(key_file: Option<PathBuf>) -> Self {
        KeyOptions {
            key_file,
            key_hex: std::env::var("VIGIL_SEAL_KEY").ok().filter(|s| !s.is_empty()),
            passphrase: std::env::var("VIGIL_SEAL_PASSPHRASE").ok().filter(|s| !s.is_empty()),
        }
    }

    pub fn given(&self) -> bool {
        self.key_file.is_some() || self.key_hex.is_some() || self.passphrase.is_some()
    }

    /// Resolves the key for a store and checks it against the store's `seal.json`; `create`
    /// writes a `seal.json` for a store that has none (the first seal).
    pub fn resolve(&self, root: &Path, create: bool) -> Result<Option<SealKey>> {
        if !self.given() {
            return Ok(None);
        }
        let existing = config(root)?;
        let (key, kdf) = if let Some(f) = &self.key_file {
            (SealKey::from_file(f)?, None)
        } else if let Some(h) = &self.key_hex {
            (SealKey::from_hex(h, "VIGIL_SEAL_KEY")?, None)
        } else {
            let pass = self.passphrase.as_deref().expect("given() checked one source");
            let kdf = match existing.as_ref().and_then(|c| c.kdf.clone()) {
                Some(k) => k,
                // OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
                None => {
                    Kdf { salt: hex::encode(random::<16>()), m_cost_kib: 19 * 1024, t_cost: 2, p_cost: 1 }
                }
            };
            (SealKey::from_passphrase(pass, &kdf)?, Some(kdf))
        };
        match existing {
            Some(c) if c.key_check != key.check() => Err(Error::sealed(format!(
                "wrong sealing key for {}: it does not match the key this store was sealed with; nothing was changed",
                root.display()
            ))),
            Some(_) => Ok(Some(key)),
            None if create => {
                std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
                write_json(&root.join("seal.json"), &SealConfig { version: 1, kdf, key_check: key.check() })?;
                Ok(Some(key))
            }
            None => Ok(Some(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let k = SealKey::generate();
        let plain = b"weights and biases".to_vec();
        let sealed = k.seal("checkpoints/best.safetensors", &plain);
        assert!(is_sealed(&sealed));
        let p = Path::new("x");
        assert_eq!(k.open("checkpoints/best.safetensors", &sealed, p).unwrap(), plain);
        // A flipped byte, a truncation, another file's name, another key: all refused.
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            k.open("checkpoints/best.safetensors", &flipped, p)
                .unwrap_err()
                .to_string()
                .contains("authentication failed")
        );
        assert!(
            k.open("checkpoints/best.safetensors", &sealed[..20], p)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert!(k.open("checkpoints/last.safetensors", &sealed, p).is_err());
        assert!(SealKey::generate().open("checkpoints/best.safetensors", &sealed, p).is_err());
    }

    #[test]
    fn keys_from_hex_files_and_passphrases() {
        let k = SealKey::generate();
        let again = SealKey::from_hex(&k.to_hex(), "t").unwrap();
        assert_eq!(k.id(), again.id());
        assert!(SealKey::from_hex("abcd", "t").unwrap_err().to_string().contains("32 bytes"));
        assert!(SealKey::from_hex("zz", "t").unwrap_err().to_string().contains("not hex"));
        let kdf =
            Kdf { salt: "00112233445566778899aabbccddeeff".into(), m_cost_kib: 1024, t_cost: 1, p_cost: 1 };
        let a = SealKey::from_passphrase("correct horse", &kdf).unwrap();
        let b = SealKey::from_passphrase("correct horse", &kdf).unwrap();
        let c = SealKey::from_passphrase("wrong horse", &kdf).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn a_wrong_key_is_refused_by_the_store_check() {
        let dir = tempfile::tempdir().unwrap();
        let right = SealKey::generate();
        let opts = KeyOptions { key_hex: Some(right.to_hex().to_string()), ..Default::default() };
        assert!(opts.resolve(dir.path(), true).unwrap().is_some());
        let wrong =
            KeyOptions { key_hex: Some(SealKey::generate().to_hex().to_string()), ..Default::default() };
        assert!(wrong.resolve(dir.path(), true).unwrap_err().to_string().contains("wrong sealing key"));
    }
}
