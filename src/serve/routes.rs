//! The route table: every route the service has, with what it takes to call it. The router is
//! built from this table and nothing else ([`super::router::router`]), and the gate in front of it
//! decides access from this table, so a route cannot be added without saying who may call it,
//! and a path that is not in the table (or a method a route lacks) needs a valid key before it
//! even learns that it does not exist.

use super::keys::Scope;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (only `/healthz`, so that load balancers can probe without a key).
    Open,
    /// Any valid key.
    AnyKey,
    /// A valid key with this scope.
    Scope(Scope),
}

impl Access {
    /// The scope a key needs, when it needs one (`None` also for open routes).
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Access::Scope(s) => Some(*s),
            _ => None,
        }
    }
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    /// The path template, axum style (`{name}` is one path segment).
    pub path: &'static str,
    pub access: Access,
    /// What it does, for the README and error messages.
    pub what: &'static str,
}

/// The template of the predict route.
pub const PREDICT: &str = "/v1/models/{name}/predict";

/// The template of the explain route.
pub const EXPLAIN: &str = "/v1/models/{name}/explain";

/// The sentence-embedding route of a Transformer or pretrained encoder. Its own scope: an
/// embedding is the model's whole internal representation of a text, far more than a label or
/// the probabilities a key's output policy shapes (enough to train a copy of the encoder or to
/// recover much of the text), so a key that may predict does not get it without being granted.
pub const EMBED: &str = "/v1/models/{name}/embed";

/// The OpenAI-compatible chat route of a served language model.
pub const CHAT: &str = "/v1/chat/completions";

/// The OpenAI-compatible (legacy) completion route.
pub const COMPLETIONS: &str = "/v1/completions";

/// Every route of the service.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec { method: "GET", path: "/healthz", access: Access::Open, what: "liveness probe" },
    RouteSpec {
        method: "GET",
        path: "/metrics",
        access: Access::Scope(Scope::Admin),
        what: "Prometheus metrics",
    },
    RouteSpec { method: "GET", path: "/v1/models", access: Access::AnyKey, what: "the models served" },
    RouteSpec {
        method: "POST",
        path: PREDICT,
        access: Access::Scope(Scope::Predict),
        what: "predict a batch of inputs",
    },
    RouteSpec {
        method: "POST",
        path: EXPLAIN,
        access: Access::Scope(Scope::Explain),
        what: "attribute a batch of inputs' predictions to their features (?method=ig&target=3)",
    },
    RouteSpec {
        method: "POST",
        path: EMBED,
        access: Access::Scope(Scope::Embed),
        what: "sentence embeddings (mean pooling, unit length) of a batch of texts from a Transformer or pretrained encoder",
    },
    RouteSpec {
        method: "POST",
        path: CHAT,
        access: Access::Scope(Scope::Generate),
        what: "a language model's answer to a chat (OpenAI's shape; \"stream\": true for server-sent events)",
    },
    RouteSpec {
        method: "POST",
        path: COMPLETIONS,
        access: Access::Scope(Scope::Generate),
        what: "a language model's continuation of a prompt (OpenAI's legacy completions shape)",
    },
];

/// Whether a route runs a language model (its own, longer timeout applies).
pub fn is_generative(route: Option<&str>) -> bool {
    matches!(route, Some(CHAT | COMPLETIONS))
}

fn matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) => {
                let param = ts.starts_with('{') && ts.ends_with('}');
                if param {
                    if ps.is_empty() {
                        return false;
                    }
                } else if ts != ps {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The route template a request falls under (`None` when no route has its path) and what it
/// needs. A method the route does not have needs a key like any unknown request.
pub fn classify(method: &str, path: &str) -> (Option<&'static str>, Access) {
    let mut template = None;
    for r in ROUTES {
        if matches(r.path, path) {
            if r.method == method {
                return (Some(r.path), r.access);
            }
            template = Some(r.path);
        }
    }
    (template, Access::AnyKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_healthz_is_open() {
        assert_eq!(classify("GET", "/healthz"), (Some("/healthz"), Access::Open));
        assert_eq!(classify("POST", "/healthz"), (Some("/healthz"), Access::AnyKey));
        assert_eq!(classify("HEAD", "/healthz"), (Some("/healthz"), Access::AnyKey));
        assert_eq!(classify("GET", "/healthz/"), (None, Access::AnyKey));
        assert_eq!(classify("GET", "/nothing"), (None, Access::AnyKey));
        assert_eq!(classify("POST", "/v1/models/x/predict"), (Some(PREDICT), Access::Scope(Scope::Predict)));
        assert_eq!(classify("POST", "/v1/models//predict"), (None, Access::AnyKey));
        assert_eq!(classify("GET", "/v1/models/x/predict"), (Some(PREDICT), Access::AnyKey));
        assert_eq!(classify("GET", "/metrics"), (Some("/metrics"), Access::Scope(Scope::Admin)));
        assert_eq!(classify("POST", CHAT), (Some(CHAT), Access::Scope(Scope::Generate)));
        assert_eq!(classify("POST", "/v1/models/x/embed"), (Some(EMBED), Access::Scope(Scope::Embed)));
        assert_eq!(classify("GET", COMPLETIONS), (Some(COMPLETIONS), Access::AnyKey));
        let open: Vec<_> = ROUTES.iter().filter(|r| r.access == Access::Open).collect();
        assert_eq!(open.len(), 1);
    }
}
