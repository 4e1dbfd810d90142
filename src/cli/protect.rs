//! `vigil seal`, `unseal`, `sign` and `verify`: encryption at rest and signed models from the
//! command line.

use std::path::PathBuf;

use super::invalid;
use crate::error::Result;
use crate::store::seal::{KeyOptions, SealKey};
use crate::store::{RunDir, RunStore, sign};

fn targets(store: &RunStore, runs: &[String], all: bool) -> Result<Vec<RunDir>> {
    match (runs.is_empty(), all) {
        (true, false) => Err(invalid("name the runs, or --all")),
        (false, true) => Err(invalid("give run ids or --all, not both")),
        (true, true) => Ok(store.dirs()),
        (false, false) => runs.iter().map(|r| store.resolve(r)).collect(),
    }
}

fn key(store: &RunStore, opts: &KeyOptions, create: bool) -> Result<SealKey> {
    opts.resolve(store.root(), create)?.ok_or_else(|| {
        invalid("give the sealing key: --seal-key-file FILE, VIGIL_SEAL_KEY (64 hex digits) or VIGIL_SEAL_PASSPHRASE")
    })
}

/// The API key file of the service, which is sealed with the runs.
const STORE_FILES: &[&str] = &["keys.json"];

pub(super) fn seal(
    store: &RunStore,
    opts: KeyOptions,
    runs: &[String],
    all: bool,
    generate: Option<PathBuf>,
) -> Result<()> {
    let opts = match generate {
        Some(path) => {
            if path.exists() {
                return Err(invalid(format!("{} exists; refusing to overwrite a key file", path.display())));
            }
            let k = SealKey::generate();
            crate::store::atomic::write_private(&path, k.to_hex().as_bytes())?;
            println!(
                "wrote a new sealing key to {} (keep it safe: sealed files cannot be opened without it)",
                path.display()
            );
            KeyOptions { key_file: Some(path), ..opts }
        }
        None => opts,
    };
    let dirs = targets(store, runs, all)?;
    let key = key(store, &opts, true)?;
    for d in &dirs {
        let info = d.info()?;
        if info.status.is_active() && info.pid.is_some_and(crate::store::process_alive) {
            println!("{}: training, skipped (seal it when it stops)", d.id);
            continue;
        }
        let n = d.seal(&key)?;
        println!("{}: sealed {n} file(s)", d.id);
    }
    for rel in STORE_FILES {
        let path = store.root().join(rel);
        if let Ok(bytes) = std::fs::read(&path)
            && !crate::store::seal::is_sealed(&bytes)
        {
            crate::store::atomic::write_private(&path, &key.seal(rel, &bytes))?;
            println!("{rel}: sealed");
        }
    }
    println!("key {}", key.id());
    Ok(())
}

pub(super) fn unseal(store: &RunStore, opts: KeyOptions, runs: &[String], all: bool) -> Result<()> {
    let dirs = targets(store, runs, all)?;
    let key = key(store, &opts, false)?;
    for d in &dirs {
        let n = d.unseal(&key)?;
        println!("{}: unsealed {n} file(s)", d.id);
    }
    for rel in STORE_FILES {
        let path = store.root().join(rel);
        if let Ok(bytes) = std::fs::read(&path)
            && crate::store::seal::is_sealed(&bytes)
        {
            let plain = key.open(rel, &bytes, &path)?;
            crate::store::atomic::write_private(&path, &plain)?;
            println!("{rel}: unsealed");
        }
    }
    Ok(())
}

/// The default signing key of a store.
pub(super) fn default_signing_key(store: &RunStore) -> PathBuf {
    store.root().join("signing.key")
}

pub(super) fn sign_run(store: &RunStore, run: &str, key: Option<PathBuf>) -> Result<()> {
    let dir = store.resolve(run)?;
    let k = sign::load_key(&key.unwrap_or_else(|| default_signing_key(store)))?;
    let s = sign::sign(&dir, &k)?;
    println!("signed {} (manifest {}…, key {}…)", dir.id, &s.manifest_sha256[..16], &s.public_key[..16]);
    Ok(())
}

pub(super) fn verify_run(store: &RunStore, run: &str, public: Option<PathBuf>) -> Result<()> {
    let dir = store.resolve(run)?;
    let trusted = public.map(|p| sign::load_public(&p)).transpose()?;
    let s = sign::verify(&dir, trusted.as_ref())?;
    println!("{}: signature good (key {}…, signed {})", dir.id, &s.public_key[..16], s.signed_at);
    Ok(())
}

pub(super) fn create_signing_key(store: &RunStore, path: Option<PathBuf>) -> Result<()> {
    let path = path.unwrap_or_else(|| default_signing_key(store));
    let public = sign::create_key(&path)?;
    println!("wrote signing key {} (mode 0600) and {}.pub", path.display(), path.display());
    println!("public key {}", hex::encode(public.to_bytes()));
    Ok(())
}
