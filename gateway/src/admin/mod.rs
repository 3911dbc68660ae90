//! The admin API, on its own listener: health, Prometheus metrics, reload and the effective
//! configuration. Every route requires `Authorization: Bearer <admin token>`; the token is
//! compared in constant time (over SHA-256 digests, so its length does not leak either).

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::GatewayState;

pub use answers::{json, problem, refusal, sized};

mod answers;
mod broker;
mod oproxy;
mod quotas;
mod tokens;
pub mod userauth;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// The admin application.
pub struct AdminApp {
    pub state: Arc<GatewayState>,
}

/// True when `presented` is HTTP Basic with the admin token as password (any user name):
/// how a browser presents it on the broker's pages.
#[must_use]
pub fn basic_token_matches(presented: Option<&[u8]>, token: &str) -> bool {
    use base64::Engine as _;
    let Some(encoded) = presented.and_then(|value| {
        value
            .strip_prefix(b"Basic ")
            .or_else(|| value.strip_prefix(b"basic "))
    }) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let a = Sha256::digest(&decoded[colon + 1..]);
    let b = Sha256::digest(token.as_bytes());
    a.ct_eq(&b).into()
}

/// True when `presented` is `Bearer <token>` for the configured token.
#[must_use]
pub fn token_matches(presented: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = presented else { return false };
    let Some(given) = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
    else {
        return false;
    };
    let a = Sha256::digest(given.trim_ascii());
    let b = Sha256::digest(token.as_bytes());
    a.ct_eq(&b).into()
}

impl AdminApp {
    async fn route(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Response<Vec<u8>> {
        if let Some(resp) = quotas::route(&self.state, method, path, query).await {
            return resp;
        }
        if let Some(resp) = tokens::route(&self.state, method, path, query, body).await {
            return resp;
        }
        if let Some(resp) = oproxy::route(&self.state, method, path).await {
            return resp;
        }
        match (method, path) {
            (&Method::GET, "/healthz") => {
                let rt = self.state.current();
                // Not ready while a key set some step relies on has never been fetched.
                let waiting: Vec<serde_json::Value> = rt
                    .key_sets
                    .iter()
                    .filter(|k| !k.is_ready())
                    .map(|k| serde_json::json!({"url": k.url, "error": k.last_error()}))
                    .collect();
                // The store answers within its call timeout (Redis: 50 ms by default).
                let store_error = rt.store.revocations().revocation_epoch().await.err();
                let breaker_open = rt
                    .store
                    .redis_client()
                    .is_some_and(|client| client.stats().breaker.open > 0);
                let store = serde_json::json!({
                    "url": rt.store.describe(),
                    "status": if store_error.is_none() { "ok" } else { "unavailable" },
                    "error": store_error.map(|error| error.to_string()),
                    "circuit_breaker": if breaker_open { "open" } else { "closed" },
                });
                let ready = waiting.is_empty() && store["status"] == "ok";
                // A service with no target to take requests makes the gateway degraded, not
                // unready: taking the gateway out of its balancer would not bring the
                // service's backends back.
                let no_healthy_target: Vec<&str> = rt
                    .services
                    .iter()
                    .filter(|service| !service.upstream.pool.any_available())
                    .map(|service| &*service.name)
                    .collect();
                json(
                    if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    },
                    &serde_json::json!({
                        "status": if ready && no_healthy_target.is_empty() { "ok" } else { "degraded" },
                        "services_without_healthy_target": no_healthy_target,
                        "generation": rt.generation,
                        "services": rt.services.len(),
                        "state": rt.store.describe(),
                        "state_store": store,
                        "key_sets_unavailable": waiting,
                    }),
                )
            }
            (&Method::GET, "/metrics") => {
                let live = &self.state.carry().live;
                let mut text = self
                    .state
                    .metrics
                    .render_with_rate_limits(&self.state.current().rate_limits);
                let rt = self.state.current();
                text.extend_from_slice(
                    crate::upstream::report::metrics_text(
                        rt.services
                            .iter()
                            .map(|service| (&*service.name, &*service.upstream.pool)),
                    )
                    .as_bytes(),
                );
                if let Some(tls) = &rt.tls {
                    text.extend_from_slice(tls.metrics_text().as_bytes());
                }
                text.extend_from_slice(
                    crate::metrics::Metrics::render_usage_buffer(
                        live.usage_buffered(),
                        live.usage_dropped(),
                    )
                    .as_bytes(),
                );
                sized(StatusCode::OK, "text/plain; version=0.0.4", text)
            }
            (&Method::POST, "/api/reload") => {
                match self.state.reload_off_runtime().await {
                    Ok((rt, warnings)) => {
                        log::info!(
                            "policy reloaded through the admin API: generation {}",
                            rt.generation
                        );
                        json(
                            StatusCode::OK,
                            &serde_json::json!({
                                "reloaded": true,
                                "generation": rt.generation,
                                "services": rt.services.len(),
                                "warnings": warnings,
                            }),
                        )
                    }
                    Err(invalid) => {
                        let errors: Vec<String> =
                            invalid.0.iter().map(ToString::to_string).collect();
                        log::warn!("reload refused: {} problem(s) in the policy; the old policy keeps serving", errors.len());
                        json(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            &serde_json::json!({
                                "reloaded": false,
                                "generation": self.state.current().generation,
                                "errors": errors,
                            }),
                        )
                    }
                }
            }
            (&Method::GET, "/api/upstreams") => {
                let rt = self.state.current();
                let wanted = query.and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(name, _)| name == "service")
                        .map(|(_, value)| value.into_owned())
                });
                let pools: Vec<serde_json::Value> = rt
                    .services
                    .iter()
                    .filter(|service| wanted.as_deref().is_none_or(|name| *service.name == *name))
                    .map(|service| {
                        crate::upstream::report::describe(&service.name, &service.upstream.pool)
                    })
                    .collect();
                if pools.is_empty() && wanted.is_some() {
                    problem(
                        StatusCode::NOT_FOUND,
                        "no-such-service",
                        "no service has that name",
                    )
                } else {
                    json(StatusCode::OK, &serde_json::json!({ "upstreams": pools }))
                }
            }
            (&Method::GET, "/api/config") => json(
                StatusCode::OK,
                &serde_json::from_str(&self.state.current().effective_config()).unwrap_or_default(),
            ),
            (_, "/healthz" | "/metrics" | "/api/reload" | "/api/config" | "/api/upstreams") => {
                problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method-not-allowed",
                    "this route does not take that method",
                )
            }
            _ => problem(StatusCode::NOT_FOUND, "no-route", "no such admin route"),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // The userauth API has its own access rules (source addresses, Basic users or the
        // admin token) and its own answer shapes.
        if session.req_header().uri.path() == crate::identity::userauth::PATH {
            return userauth::serve(&self.state, session).await;
        }
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_owned();
        let query = req.uri.query().map(str::to_owned);
        let presented = req
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let rt = self.state.current();
        let Some(token) = rt.admin_token.as_ref() else {
            return problem(
                StatusCode::FORBIDDEN,
                "admin-disabled",
                "no admin token is configured",
            );
        };
        // Brute-force protection: an address that sent too many wrong tokens waits, whatever
        // it sends now. The admin listener sees its peers directly (no forwarding headers).
        let gate = crate::auth_failures::Gate {
            failures: &self.state.auth_failures,
            limits: &rt.client_limits,
            surface: crate::auth_failures::Surface::Admin,
            ip: session
                .client_addr()
                .and_then(|addr| addr.as_inet())
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |addr| addr.ip()),
        };
        if let Some(wait) = gate.locked(None) {
            let seconds = crate::auth_failures::retry_after_secs(wait);
            let mut resp = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failed-authentications",
                format!("too many wrong admin tokens from this address; retry in {seconds} s"),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            return resp;
        }
        let browser_page = path.starts_with("/broker/");
        let authenticated = token_matches(presented.as_deref(), token.expose())
            || (browser_page && basic_token_matches(presented.as_deref(), token.expose()));
        if !authenticated {
            gate.failed(None);
            let mut resp = problem(
                StatusCode::UNAUTHORIZED,
                "admin-unauthorized",
                "a valid admin bearer token is required",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(if browser_page {
                    "Basic realm=\"portcullis-admin\""
                } else {
                    "Bearer realm=\"portcullis-admin\""
                }),
            );
            return resp;
        }
        // Read the body (bounded), so the connection stays usable and POSTs can use it.
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            if body.len() + chunk.len() > MAX_ADMIN_BODY {
                return problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "admin requests carry at most 64 KiB",
                );
            }
            body.extend_from_slice(&chunk);
        }
        if browser_page {
            let headers = session.req_header().headers.clone();
            return broker::serve(&self.state, &method, &path, query.as_deref(), &headers).await;
        }
        self.route(&method, &path, query.as_deref(), &body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_compare() {
        assert!(token_matches(Some(b"Bearer s3cret"), "s3cret"));
        assert!(!token_matches(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!token_matches(Some(b"s3cret"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
    }
}
