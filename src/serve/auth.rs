//! Who is calling: the keys the service accepts (loaded from the key file, reloaded when it
//! changes so that a revoked key stops working within a second, without a restart) and the
//! check of a request's `Authorization: Bearer <key>` header.
//!
//! Deny by default: a request is refused unless it carries a key that is known, not expired,
//! not revoked and holds the scope the route needs. Which routes need what is
//! [`super::routes`]'s table; counting requests against limits is [`super::limits`]'s.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use time::OffsetDateTime;

use super::keys::{KeyFile, KeyRecord, Scope, find_by_hash, hash_key};
use super::limits::{BudgetCounter, Rate, TokenRate, UsageFile};
use super::metrics::{KeyLabels, Metrics};
use super::policy::OutputPolicy;
use crate::error::Result;
use crate::store::seal::SealKey;

/// A key the service accepts, with its run-time counters.
pub struct Caller {
    pub name: Arc<str>,
    pub record: KeyRecord,
    expires_unix: Option<i64>,
    pub policy: OutputPolicy,
    pub rate: Option<Arc<Rate>>,
    pub budget: Option<Arc<BudgetCounter>>,
    /// Tokens per minute on the language-model routes.
    pub token_rate: Option<Arc<TokenRate>>,
    /// Tokens per budget window on the language-model routes.
    pub token_budget: Option<Arc<BudgetCounter>>,
    pub requests: Counter,
    /// Inputs left in the budget window, for keys with a budget.
    pub budget_gauge: Option<Gauge>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("name", &self.name).field("scopes", &self.record.scopes).finish()
    }
}

impl Caller {
    /// Whether the key has `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.record.has(scope)
    }
}

/// Why a request was refused before reaching its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer <key>`.
    Malformed,
    /// A key that matches none.
    Unknown,
    /// The key expired at this time.
    Expired(String),
    /// The key was revoked at this time.
    Revoked(String),
    /// The key lacks the route's scope.
    Scope { needed: Scope, has: String },
}

impl Denied {
    /// 401 for everything about the key itself, 403 for a key that may not use the route.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Scope { .. } => 403,
            _ => 401,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750).
    pub fn challenge(&self) -> String {
        match self {
            Denied::Missing => r#"Bearer realm="vigil""#.into(),
            Denied::Scope { needed, .. } => {
                format!(r#"Bearer realm="vigil", error="insufficient_scope", scope="{needed}""#)
            }
            _ => r#"Bearer realm="vigil", error="invalid_token""#.into(),
        }
    }

    /// What the caller is told.
    pub fn message(&self) -> String {
        match self {
            Denied::Missing => "this route needs a key: send `Authorization: Bearer <key>`".into(),
            Denied::Malformed => "the Authorization header must be `Bearer <key>`".into(),
            Denied::Unknown => "the key is not valid".into(),
            Denied::Expired(t) => format!("the key expired at {t}"),
            Denied::Revoked(t) => format!("the key was revoked at {t}"),
            Denied::Scope { needed, has } => {
                format!("this key may not use this route: it needs the {needed} scope, and the key has {has}")
            }
        }
    }
}

/// A refused request: why, and the key it presented when that key is known (expired, revoked
/// or lacking the scope), for the log.
#[derive(Debug)]
pub struct Refusal {
    pub denied: Denied,
    pub caller: Option<Arc<Caller>>,
}

/// The file's identity and version, to notice when `vigil keys` rewrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    /// The stamp of a file, or `None` when it does not exist.
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&m),
        })
    }
}

/// The keys the service accepts now.
pub struct Keyring {
    callers: Vec<Arc<Caller>>,
    hashes: Vec<[u8; 32]>,
    /// The key file as it was when read.
    pub stamp: Option<FileStamp>,
}

impl Keyring {
    /// Reads the key file. Counters of keys already known (`previous`) carry over, so a reload
    /// neither resets a rate limit nor refills a budget; new keys start from the saved usage.
    pub fn load(
        path: &Path,
        usage: &UsageFile,
        previous: Option<&Keyring>,
        metrics: &Metrics,
        seal: Option<&SealKey>,
    ) -> Result<Self> {
        let stamp = FileStamp::of(path);
        let file = KeyFile::load_with_key(path, seal)?;
        let old: HashMap<&str, &Arc<Caller>> =
            previous.map(|p| p.callers.iter().map(|c| (&*c.name, c)).collect()).unwrap_or_default();
        let mut callers = Vec::with_capacity(file.keys.len());
        let mut hashes = Vec::with_capacity(file.keys.len());
        for record in file.keys {
            let Some(hash) = record.hash_bytes() else { continue };
            let before = old.get(record.name.as_str());
            let rate = match (record.rate, before.and_then(|c| c.rate.as_ref())) {
                (Some(cfg), Some(r)) if r.config == cfg => Some(r.clone()),
                (Some(cfg), _) => Some(Arc::new(Rate::new(cfg))),
                (None, _) => None,
            };
            let budget = match (record.budget, before.and_then(|c| c.budget.as_ref())) {
                (Some(cfg), Some(b)) if b.budget == cfg => Some(b.clone()),
                (Some(cfg), Some(b)) => Some(Arc::new(BudgetCounter::new(cfg, Some(b.usage())))),
                (Some(cfg), None) => {
                    Some(Arc::new(BudgetCounter::new(cfg, usage.keys.get(&record.name).copied())))
                }
                (None, _) => None,
            };
            let token_rate =
                match (record.generate.tokens_per_minute, before.and_then(|c| c.token_rate.as_ref())) {
                    (Some(n), Some(r)) if r.per_minute == n => Some(r.clone()),
                    (Some(n), _) => Some(Arc::new(TokenRate::new(n))),
                    (None, _) => None,
                };
            let token_budget =
                match (record.generate.token_budget, before.and_then(|c| c.token_budget.as_ref())) {
                    (Some(cfg), Some(b)) if b.budget == cfg => Some(b.clone()),
                    (Some(cfg), Some(b)) => Some(Arc::new(BudgetCounter::new(cfg, Some(b.usage())))),
                    (Some(cfg), None) => {
                        Some(Arc::new(BudgetCounter::new(cfg, usage.tokens.get(&record.name).copied())))
                    }
                    (None, _) => None,
                };
            let labels = KeyLabels { key: record.name.clone() };
            let caller = Caller {
                name: Arc::from(record.name.as_str()),
                expires_unix: record.expires_at().map(|t| t.unix_timestamp()),
                policy: record.output,
                requests: metrics.key_requests.get_or_create_owned(&labels),
                budget_gauge: budget.as_ref().map(|b| {
                    let g = metrics.key_budget_left.get_or_create_owned(&labels);
                    g.set(b.left(super::limits::unix_now()) as i64);
                    g
                }),
                rate,
                budget,
                token_rate,
                token_budget,
                record,
            };
            hashes.push(hash);
            callers.push(Arc::new(caller));
        }
        Ok(Keyring { callers, hashes, stamp })
    }

    /// Every key, revoked and expired ones included.
    pub fn callers(&self) -> &[Arc<Caller>] {
        &self.callers
    }

    /// Checks a request's `Authorization` header at Unix time `now` against the scope the route
    /// needs (`None`: any valid key).
    pub fn authenticate(
        &self,
        header: Option<&HeaderValue>,
        needs: Option<Scope>,
        now: i64,
    ) -> std::result::Result<Arc<Caller>, Refusal> {
        let anonymous = |denied| Refusal { denied, caller: None };
        let header = header.ok_or(anonymous(Denied::Missing))?;
        let text = header.to_str().map_err(|_| anonymous(Denied::Malformed))?;
        let (scheme, key) = text.trim().split_once(' ').ok_or(anonymous(Denied::Malformed))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(anonymous(Denied::Malformed));
        }
        let presented = hash_key(key.trim());
        let i = find_by_hash(&self.hashes, &presented).ok_or(anonymous(Denied::Unknown))?;
        let caller = &self.callers[i];
        // From here on the key is known: the refusal names it, so the log shows who tried.
        let known = |denied| Refusal { denied, caller: Some(caller.clone()) };
        if let Some(t) = &caller.record.revoked {
            return Err(known(Denied::Revoked(t.clone())));
        }
        if caller.expires_unix.is_some_and(|e| e <= now) {
            return Err(known(Denied::Expired(caller.record.expires.clone().unwrap_or_default())));
        }
        if let Some(scope) = needs
            && !caller.has(scope)
        {
            return Err(known(Denied::Scope { needed: scope, has: caller.record.scope_list() }));
        }
        Ok(caller.clone())
    }

    /// The budget counts to save.
    pub fn usage(&self) -> UsageFile {
        let mut file = UsageFile::default();
        for c in &self.callers {
            if let Some(b) = &c.budget {
                file.keys.insert(c.name.to_string(), b.usage());
            }
            if let Some(b) = &c.token_budget {
                file.tokens.insert(c.name.to_string(), b.usage());
            }
        }
        file
    }
}

/// Unix time now, for expiry checks.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::keys::{KeyFile, NewKey};

    fn ring(keys: &[(&str, &[Scope], Option<std::time::Duration>)]) -> (Keyring, Vec<String>, KeyFile) {
        let mut file = KeyFile::default();
        let mut secrets = vec![];
        let now = OffsetDateTime::now_utc();
        for (name, scopes, expires_in) in keys {
            let (_, k) = file
                .create(
                    NewKey {
                        name: (*name).into(),
                        scopes: scopes.to_vec(),
                        expires_in: *expires_in,
                        rate: None,
                        budget: None,
                        output: OutputPolicy::default(),
                        guard: Default::default(),
                        generate: Default::default(),
                    },
                    now,
                )
                .unwrap();
            secrets.push(k);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        file.save(&path).unwrap();
        let ring = Keyring::load(&path, &UsageFile::default(), None, &Metrics::new(), None).unwrap();
        (ring, secrets, file)
    }

    fn bearer(k: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {k}")).unwrap()
    }

    #[test]
    fn each_refusal_has_its_status_and_reason() {
        let (ring, keys, _) = ring(&[
            ("p", &[Scope::Predict], None),
            ("a", &[Scope::Admin], None),
            ("old", &[Scope::Predict], Some(std::time::Duration::from_secs(60))),
        ]);
        let now = now_unix();
        let ok = ring.authenticate(Some(&bearer(&keys[0])), Some(Scope::Predict), now).unwrap();
        assert_eq!(&*ok.name, "p");
        assert_eq!(ring.authenticate(None, None, now).unwrap_err().denied, Denied::Missing);
        let basic = HeaderValue::from_static("Basic dXNlcjpwYXNz");
        assert_eq!(ring.authenticate(Some(&basic), None, now).unwrap_err().denied, Denied::Malformed);
        // Change the last character to one it is not, so the key differs whatever it ends with.
        let last = if keys[0].ends_with('0') { '1' } else { '0' };
        let wrong = bearer(&format!("{}{last}", &keys[0][..keys[0].len() - 1]));
        let unknown = ring.authenticate(Some(&wrong), None, now).unwrap_err();
        assert_eq!(unknown.denied, Denied::Unknown);
        assert!(unknown.caller.is_none());
        let refusal = ring.authenticate(Some(&bearer(&keys[1])), Some(Scope::Predict), now).unwrap_err();
        assert_eq!(&*refusal.caller.unwrap().name, "a", "the log names a known key");
        let denied = refusal.denied;
        assert_eq!(denied, Denied::Scope { needed: Scope::Predict, has: "admin".into() });
        assert_eq!(denied.status(), 403);
        assert!(denied.challenge().contains("insufficient_scope"));
        // Any valid key will do where no scope is needed.
        assert!(ring.authenticate(Some(&bearer(&keys[1])), None, now).is_ok());
        let later = now + 120;
        assert!(matches!(
            ring.authenticate(Some(&bearer(&keys[2])), None, later).unwrap_err().denied,
            Denied::Expired(_)
        ));
        // The scheme is case-insensitive (RFC 7235).
        let lower = HeaderValue::from_str(&format!("bearer {}", keys[0])).unwrap();
        assert!(ring.authenticate(Some(&lower), None, now).is_ok());
    }

    #[test]
    fn revoked_keys_are_refused_after_a_reload() {
        let (ring, keys, mut file) = ring(&[("p", &[Scope::Predict], None)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        file.revoke("p", OffsetDateTime::now_utc()).unwrap();
        file.save(&path).unwrap();
        let reloaded =
            Keyring::load(&path, &UsageFile::default(), Some(&ring), &Metrics::new(), None).unwrap();
        let d = reloaded.authenticate(Some(&bearer(&keys[0])), None, now_unix()).unwrap_err().denied;
        assert!(matches!(d, Denied::Revoked(_)), "{d:?}");
        assert_eq!(d.status(), 401);
    }
}
