//! Which web pages may read the collector's answers (CORS). Two rules, because two
//! kinds of client call it:
//!
//! - **Legacy GET routes** (`GET|HEAD /{ua}/{lesson}/{level}/{question}/{answer}` and
//!   `/test/...`): old lessons call them with jQuery and `alert("Error")` whenever the
//!   browser hides the answer, so they answer `Access-Control-Allow-Origin: *` by default
//!   (as the original service did), restrictable with `--legacy-allow-origin`. A simple
//!   GET is sent by the browser without a preflight whatever CORS says, so withholding
//!   the header protects nothing there: it only shows learners an error popup. The
//!   answer carries no data (`null` or a validation message).
//! - **Everything else** (the SDK's POSTs and `/batch`, `/sdk/` files, `/`, `/healthz`):
//!   `--allow-origin`; with none given, no CORS headers at all. A POST with
//!   `Idempotency-Key` is preflighted, so here the list really decides which pages
//!   may send.
//!
//! An origin rule is `*`, an exact origin `scheme://host[:port]`, or a pattern
//! `scheme://*.domain[:port]`: `*.` stands for one or more whole DNS labels, so
//! `https://*.mybinder.org` matches `https://hub.mybinder.org` and
//! `https://a.b.mybinder.org` but not `https://mybinder.org` (list it as well if
//! wanted), not `http://...` (the scheme must match), not `https://x.mybinder.org:8443`
//! (the port must match: none in the pattern means none in the origin) and not
//! `https://x.mybinder.org.attacker.com`. The domain after `*.` needs at least two
//! labels (`*.org` is refused).

use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::Response;
use futures_util::future::Either;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

/// A parsed list of allowed origins (`--allow-origin` or `--legacy-allow-origin`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OriginList {
    any: bool,
    /// Lower-case `scheme://host[:port]`.
    exact: Vec<String>,
    wildcards: Vec<Wildcard>,
}

/// `scheme://*.suffix[:port]`, lower case.
#[derive(Clone, Debug, PartialEq)]
struct Wildcard {
    scheme: String,
    suffix: String,
    port: Option<String>,
}

impl OriginList {
    /// Every origin (`*`).
    pub fn any() -> Self {
        OriginList {
            any: true,
            ..Default::default()
        }
    }

    /// Parse flag values; `None` when there are none. `flag` names the flag in errors.
    pub fn parse(values: &[String], flag: &str) -> anyhow::Result<Option<Self>> {
        let values: Vec<&str> = values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            return Ok(None);
        }
        let mut list = OriginList::default();
        for value in values {
            if value == "*" {
                list.any = true;
                continue;
            }
            let value = value.trim_end_matches('/').to_ascii_lowercase();
            let bad =
                || anyhow::anyhow!("--{flag} {value:?} must look like https://host[:port] or https://*.domain[:port]");
            let (scheme, host, port) = split_origin(&value).ok_or_else(bad)?;
            if let Some(suffix) = host.strip_prefix("*.") {
                anyhow::ensure!(
                    is_dns_name(suffix) && suffix.contains('.'),
                    "--{flag} {value:?}: after `*.` must come a domain of at least two labels, e.g. https://*.mybinder.org"
                );
                list.wildcards.push(Wildcard {
                    scheme: scheme.into(),
                    suffix: suffix.into(),
                    port: port.map(Into::into),
                });
            } else {
                anyhow::ensure!(
                    !host.contains('*'),
                    "--{flag} {value:?}: `*` may only stand first, as in https://*.mybinder.org"
                );
                HeaderValue::from_str(&value).map_err(|_| bad())?;
                list.exact.push(value);
            }
        }
        Ok(Some(list))
    }

    /// Whether a request's `Origin` header is allowed.
    pub fn allows(&self, origin: &[u8]) -> bool {
        if self.any {
            return true;
        }
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        let origin = origin.to_ascii_lowercase();
        if self.exact.contains(&origin) {
            return true;
        }
        let Some((scheme, host, port)) = split_origin(&origin) else {
            return false;
        };
        self.wildcards.iter().any(|w| {
            w.scheme == scheme
                && w.port.as_deref() == port
                && host
                    .strip_suffix(w.suffix.as_str())
                    .and_then(|rest| rest.strip_suffix('.'))
                    .is_some_and(is_dns_name)
        })
    }

    fn allow_origin(&self) -> AllowOrigin {
        if self.any {
            return AllowOrigin::any();
        }
        let list = self.clone();
        AllowOrigin::predicate(move |origin, _| list.allows(origin.as_bytes()))
    }
}

/// `scheme://host[:port]` (no user, path, query or fragment) -> its three parts.
fn split_origin(origin: &str) -> Option<(&str, &str, Option<&str>)> {
    let (scheme, authority) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https")
        || authority.is_empty()
        || authority.contains(['/', '?', '#', '@', ' ', '\\'])
    {
        return None;
    }
    // A bracketed IPv6 host has colons of its own; the port comes after `]`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if host.is_empty() || port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some((scheme, host, port))
}

/// Dot-separated labels of letters, digits and inner hyphens.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether a request is a legacy GET (or HEAD, or the preflight for one): those follow
/// `--legacy-allow-origin`, everything else `--allow-origin`.
pub fn is_legacy_request(req: &Request) -> bool {
    let method: &[u8] = if req.method() == Method::OPTIONS {
        match req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD) {
            Some(m) => m.as_bytes(),
            None => return false,
        }
    } else {
        req.method().as_str().as_bytes()
    };
    matches!(method, b"GET" | b"HEAD") && is_legacy_path(req.uri().path())
}

/// `/{ua}/{lesson}/{level}/{question}/{answer}` or `/test/` + the same (the routes of
/// `crate::app::router`; `/sdk/` files are routed before them).
fn is_legacy_path(path: &str) -> bool {
    if path.starts_with("/sdk/") {
        return false;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    match rest.split('/').count() {
        5 => true,
        6 => rest.starts_with("test/"),
        _ => false,
    }
}

/// Both rules as one layer: each request meets the rule for its kind
/// ([`is_legacy_request`]): `--legacy-allow-origin` for the legacy GETs,
/// `--allow-origin` (or no CORS at all when it is not given) for the rest.
#[derive(Clone)]
pub struct ByKindLayer {
    sdk: Option<CorsLayer>,
    legacy: CorsLayer,
}

impl ByKindLayer {
    pub fn new(sdk: Option<&OriginList>, legacy: &OriginList) -> Self {
        ByKindLayer {
            sdk: sdk.map(sdk_layer),
            legacy: legacy_layer(legacy),
        }
    }
}

impl<S: Clone> Layer<S> for ByKindLayer {
    type Service = ByKind<S>;

    fn layer(&self, inner: S) -> ByKind<S> {
        ByKind {
            sdk: match &self.sdk {
                Some(cors) => Either::Left(cors.layer(inner.clone())),
                None => Either::Right(inner.clone()),
            },
            legacy: self.legacy.layer(inner),
        }
    }
}

/// See [`ByKindLayer`]. Both sides wrap clones of the same inner service (a route).
#[derive(Clone)]
pub struct ByKind<S> {
    sdk: Either<Cors<S>, S>,
    legacy: Cors<S>,
}

type CorsFuture<F> = tower_http::cors::ResponseFuture<F>;

impl<S, E> Service<Request> for ByKind<S>
where
    S: Service<Request, Response = Response, Error = E>,
{
    type Response = Response;
    type Error = E;
    type Future = Either<CorsFuture<S::Future>, Either<CorsFuture<S::Future>, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        // Either side may take the next request: ready when both are (routes always are).
        if self.legacy.poll_ready(cx)?.is_pending() {
            return Poll::Pending;
        }
        match &mut self.sdk {
            Either::Left(cors) => cors.poll_ready(cx),
            Either::Right(plain) => plain.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if is_legacy_request(&req) {
            return Either::Left(self.legacy.call(req));
        }
        Either::Right(match &mut self.sdk {
            Either::Left(cors) => Either::Left(cors.call(req)),
            Either::Right(plain) => Either::Right(plain.call(req)),
        })
    }
}

/// CORS for the SDK routes (`--allow-origin`): its POST headers, and Retry-After readable.
fn sdk_layer(origins: &OriginList) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(origins.allow_origin())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-client-time"),
            HeaderName::from_static("x-learner-id"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(24 * 3600))
}

/// CORS for the legacy GET routes (`--legacy-allow-origin`, default `*`).
fn legacy_layer(origins: &OriginList) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(origins.allow_origin())
        .allow_methods([Method::GET, Method::HEAD])
        .max_age(Duration::from_secs(24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(values: &[&str]) -> OriginList {
        OriginList::parse(
            &values.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "allow-origin",
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn wildcard_matches_whole_labels_same_scheme_and_port() {
        let l = list(&["https://*.mybinder.org", "https://lab.example.org/"]);
        for ok in [
            "https://hub.mybinder.org",
            "https://a.b-c.mybinder.org",
            "HTTPS://Hub.MyBinder.org",
            "https://lab.example.org",
        ] {
            assert!(l.allows(ok.as_bytes()), "{ok}");
        }
        for no in [
            "https://mybinder.org",
            "https://.mybinder.org",
            "https://a..mybinder.org",
            "https://evilmybinder.org",
            "https://evil.mybinder.org.attacker.com",
            "http://hub.mybinder.org",
            "https://hub.mybinder.org:8443",
            "https://user@hub.mybinder.org",
            "https://hub.mybinder.org/path",
            "https://x_y.mybinder.org",
            "null",
            "https://lab.example.org.evil.example",
            "http://lab.example.org",
        ] {
            assert!(!l.allows(no.as_bytes()), "{no}");
        }
        let with_port = list(&["http://*.example.test:8888"]);
        assert!(with_port.allows(b"http://a.example.test:8888"));
        assert!(!with_port.allows(b"http://a.example.test"));
        assert!(!with_port.allows(b"http://a.example.test:88889"));
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "*.mybinder.org",
            "https://*.org",
            "https://a.*.org",
            "https://*mybinder.org",
            "ftp://x.org",
            "https://x.org/path",
            "https://*.-x.org",
        ] {
            assert!(OriginList::parse(&[bad.to_string()], "allow-origin").is_err(), "{bad}");
        }
        assert_eq!(OriginList::parse(&[], "allow-origin").unwrap(), None);
        assert!(list(&["https://a.org", "*"]).allows(b"https://anything.example"));
    }

    #[test]
    fn legacy_requests_are_gets_heads_and_their_preflights_on_event_paths() {
        let req = |method: &str, path: &str, acrm: Option<&str>| {
            let mut b = Request::builder().method(method).uri(path);
            if let Some(m) = acrm {
                b = b.header("access-control-request-method", m);
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        assert!(is_legacy_request(&req("GET", "/ua/gateway/beginner/1A/true", None)));
        assert!(is_legacy_request(&req(
            "HEAD",
            "/test/ua/gateway/beginner/1A/true",
            None
        )));
        assert!(is_legacy_request(&req(
            "OPTIONS",
            "/ua/gateway/beginner/1A/true",
            Some("GET")
        )));
        assert!(!is_legacy_request(&req(
            "OPTIONS",
            "/ua/gateway/beginner/1A/true",
            Some("POST")
        )));
        assert!(!is_legacy_request(&req("POST", "/ua/gateway/beginner/1A/true", None)));
        assert!(!is_legacy_request(&req("GET", "/sdk/a/b/c/d", None)));
        assert!(!is_legacy_request(&req("GET", "/x/ua/gateway/beginner/1A/true", None)));
        assert!(!is_legacy_request(&req("GET", "/", None)));
        assert!(!is_legacy_request(&req("GET", "/healthz", None)));
    }
}
