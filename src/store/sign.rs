//! Signed models: an Ed25519 signature over a run's manifest (the SHA-256 of every file), so a
//! model can be checked before it is served, wherever it was copied. `signature.json` holds the
//! signer's public key and the signature; verifying rehashes every file against the manifest
//! first, so the error names the file that changed.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{RunDir, read_json, sha256_hex, write_json};
use crate::error::{Error, Result};

/// `signature.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSignature {
    pub algorithm: String,
    /// Hex of the Ed25519 public key.
    pub public_key: String,
    /// SHA-256 of the manifest that was signed.
    pub manifest_sha256: String,
    /// Hex of the signature over the manifest's bytes.
    pub signature: String,
    pub signed_at: String,
}

/// Creates a signing key file (secret, mode 0600) and its public key beside it (`.pub`).
pub fn create_key(path: &Path) -> Result<VerifyingKey> {
    if path.exists() {
        return Err(Error::refused(format!(
            "{} exists; refusing to overwrite a signing key",
            path.display()
        )));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).expect("the operating system's random source is available");
    let key = SigningKey::from_bytes(&seed);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    super::atomic::write_private(path, hex::encode(key.to_bytes()).as_bytes())?;
    let public = key.verifying_key();
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    std::fs::write(&pub_path, hex::encode(public.to_bytes()))
        .map_err(|e| Error::io(Path::new(&pub_path), e))?;
    Ok(public)
}

/// Loads a signing key file.
pub fn load_key(path: &Path) -> Result<SigningKey> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::bad_key(format!(
            "no signing key at {}: create one with `vigil keys signing-create`",
            path.display()
        )),
        _ => Error::io(path, e),
    })?);
    let bytes = Zeroizing::new(
        hex::decode(text.trim())
            .map_err(|_| Error::bad_key(format!("{}: not a signing key (hex)", path.display())))?,
    );
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::bad_key(format!("{}: a signing key is 32 bytes", path.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Refreshes the run's manifest and signs it.
pub fn sign(run: &RunDir, key: &SigningKey) -> Result<RunSignature> {
    if run.info()?.status.is_active() {
        return Err(Error::refused(format!("run {} is still training: sign it when it has stopped", run.id)));
    }
    run.write_manifest()?;
    let manifest =
        std::fs::read(run.file("manifest.json")).map_err(|e| Error::io(run.file("manifest.json"), e))?;
    let sig = key.sign(&manifest);
    let s = RunSignature {
        algorithm: "ed25519".into(),
        public_key: hex::encode(key.verifying_key().to_bytes()),
        manifest_sha256: sha256_hex(&manifest),
        signature: hex::encode(sig.to_bytes()),
        signed_at: super::now(),
    };
    write_json(&run.file("signature.json"), &s)?;
    Ok(s)
}

/// Checks a run: every file against the manifest (naming the first that differs), then the
/// signature over the manifest, optionally against a trusted public key.
pub fn verify(run: &RunDir, trusted: Option<&VerifyingKey>) -> Result<RunSignature> {
    let sig_path = run.file("signature.json");
    if !sig_path.exists() {
        return Err(Error::Corrupt {
            path: sig_path,
            msg: "the run is not signed (`vigil sign` signs it)".into(),
        });
    }
    let s: RunSignature = read_json(&sig_path)?;
    let manifest_path = run.file("manifest.json");
    let manifest_bytes = std::fs::read(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    let manifest: super::Manifest = read_json(&manifest_path)?;
    for (rel, want) in &manifest.files {
        let path = run.file(rel);
        let bytes = match std::fs::read(&path) {
            Ok(b) => super::seal::open_bytes(b, &path, rel, run.key())?,
            Err(_) => {
                return Err(Error::Corrupt { path, msg: "is in the signed manifest but missing".into() });
            }
        };
        if &sha256_hex(&bytes) != want {
            return Err(Error::Corrupt { path, msg: "differs from the signed manifest".into() });
        }
    }
    let public_bytes: [u8; 32] = hex::decode(&s.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Corrupt { path: sig_path.clone(), msg: "bad public key".into() })?;
    let public = VerifyingKey::from_bytes(&public_bytes)
        .map_err(|_| Error::Corrupt { path: sig_path.clone(), msg: "bad public key".into() })?;
    if let Some(t) = trusted
        && t != &public
    {
        return Err(Error::Corrupt {
            path: sig_path,
            msg: "signed by a key that is not the trusted one".into(),
        });
    }
    let sig_bytes: [u8; 64] = hex::decode(&s.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Corrupt { path: sig_path.clone(), msg: "bad signature encoding".into() })?;
    public.verify(&manifest_bytes, &Signature::from_bytes(&sig_bytes)).map_err(|_| Error::Corrupt {
        path: manifest_path,
        msg: "the signature does not match the manifest (the manifest was changed after signing)".into(),
    })?;
    Ok(s)
}

/// Reads a public key file (hex).
pub fn load_public(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bytes: [u8; 32] = hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
        Error::bad_key(format!("{}: not an Ed25519 public key (64 hex digits)", path.display()))
    })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| Error::bad_key(format!("{}: not a valid Ed25519 public key", path.display())))
}
