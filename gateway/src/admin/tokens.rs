//! Token management on the admin listener: list and search tokens with their usage, revoke
//! one token or every token of a client, a subscriber or a client+subscriber pair (on
//! behalf of the API provider, the app owner or the subscriber), per-client statistics,
//! and an export (JSON lines or CSV) for BI tools.
//!
//! Pending usage is flushed before anything is read, so the numbers are current.

use http::{Method, Response, StatusCode};
use serde::Deserialize;

use super::answers::{json, problem, sized};
use crate::state::GatewayState;
use crate::store::{now_secs, StateStore, TokenFilter, TokenKind, TokenRecord};

/// Most tokens one listing returns.
const MAX_PAGE: usize = 1000;

/// Who may ask for a revocation, recorded with it.
const REVOKERS: &[&str] = &["provider", "app_owner", "subscriber", "admin"];

fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query.map_or_else(Vec::new, |q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
}

fn filter_from(params: &[(String, String)], paged: bool) -> Result<TokenFilter, String> {
    let mut f = TokenFilter {
        now: now_secs(),
        limit: if paged { 100 } else { 0 },
        ..TokenFilter::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "client" | "client_id" => f.client_id = Some(v.clone()),
            "subject" | "sub" => f.subject = Some(v.clone()),
            "grant" | "grant_type" => f.grant_type = Some(v.clone()),
            "family" => f.family_id = Some(v.clone()),
            "kind" => {
                f.kind = Some(TokenKind::parse(v).ok_or("kind is access or refresh")?);
            }
            "status" => {
                if !["active", "revoked", "rotated", "expired"].contains(&v.as_str()) {
                    return Err("status is active, revoked, rotated or expired".to_owned());
                }
                f.status = Some(v.clone());
            }
            "flagged" => f.flagged = Some(v == "true" || v == "1"),
            "limit" if paged => {
                f.limit = v
                    .parse::<usize>()
                    .map_err(|_| "limit is a number")?
                    .clamp(1, MAX_PAGE);
            }
            "offset" if paged => f.offset = v.parse().map_err(|_| "offset is a number")?,
            "format" if !paged => {}
            other => return Err(format!("unknown parameter {other}")),
        }
    }
    Ok(f)
}

/// A token as the API shows it: the record and its status now.
fn token_json(t: &TokenRecord, now: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("status".to_owned(), serde_json::json!(t.status(now)));
    }
    v
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    client: Option<String>,
    subject: Option<String>,
    by: Option<String>,
    reason: Option<String>,
}

fn bad_request(detail: &str) -> Response<Vec<u8>> {
    problem(
        StatusCode::BAD_REQUEST,
        "invalid-request",
        detail.to_owned(),
    )
}

/// Answers a token-management route; `None` when the path is not one.
pub async fn route(
    state: &GatewayState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Option<Response<Vec<u8>>> {
    let rest = path.strip_prefix("/api/")?;
    if !(rest.starts_with("tokens") || rest.starts_with("clients") || rest == "stats/clients") {
        return None;
    }
    let rt = state.current();
    if rt.token_service.is_none() {
        return Some(problem(
            StatusCode::NOT_FOUND,
            "no-token-service",
            "this policy has no token_service",
        ));
    }
    // The listing shows every use so far, including those not flushed yet.
    state.flush_usage_now().await;
    let store = &rt.store;
    let now = now_secs();
    let params = query_params(query);
    let unavailable = |e: crate::store::StoreError| store_unavailable(&e);
    let segments: Vec<&str> = rest.split('/').collect();
    Some(match (method, segments.as_slice()) {
        (&Method::GET, ["tokens"]) => match filter_from(&params, true) {
            Ok(f) => match store.tokens().find_tokens(&f).await {
                Ok(list) => json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "count": list.len(),
                        "limit": f.limit,
                        "offset": f.offset,
                        "tokens": list.iter().map(|t| token_json(t, now)).collect::<Vec<_>>(),
                    }),
                ),
                Err(e) => unavailable(e),
            },
            Err(e) => bad_request(&e),
        },
        (&Method::GET, ["tokens", "export"]) => export(state, &params).await,
        (&Method::POST, ["tokens", "revoke"]) => revoke_by_owner(state, body, now).await,
        (&Method::GET, ["tokens", id]) => match store.tokens().token(id).await {
            Ok(Some(t)) => json(StatusCode::OK, &token_json(&t, now)),
            Ok(None) => problem(
                StatusCode::NOT_FOUND,
                "no-such-token",
                "no token has this id",
            ),
            Err(e) => unavailable(e),
        },
        (&Method::POST, ["tokens", id, "revoke"]) => revoke_one(state, id, body, now).await,
        (&Method::GET, ["clients"]) => clients_with_stats(store, now).await,
        (&Method::GET, ["stats", "clients"]) => match store.tokens().client_stats(now).await {
            Ok(stats) => json(StatusCode::OK, &serde_json::json!({"clients": stats})),
            Err(e) => unavailable(e),
        },
        (&Method::GET, ["clients", id, "stats"]) => match store.tokens().client_stats(now).await {
            Ok(stats) => match stats.into_iter().find(|s| s.client_id == *id) {
                Some(s) => json(StatusCode::OK, &serde_json::to_value(s).unwrap_or_default()),
                None => problem(
                    StatusCode::NOT_FOUND,
                    "no-such-client",
                    "no token was issued to this client",
                ),
            },
            Err(e) => unavailable(e),
        },
        _ => problem(StatusCode::NOT_FOUND, "no-route", "no such admin route"),
    })
}

/// The revocation request's body: empty for the defaults, else JSON.
/// The refusal, when there is one, says what is wrong with the body.
fn revoke_body(body: &[u8]) -> Result<(RevokeBody, String), String> {
    let request: RevokeBody = if body.is_empty() {
        RevokeBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?
    };
    let by = request.by.clone().unwrap_or_else(|| "provider".to_owned());
    if !REVOKERS.contains(&by.as_str()) {
        return Err("by is provider, app_owner, subscriber or admin".to_owned());
    }
    Ok((request, by))
}

/// `POST /api/tokens/revoke`: every token of a client, a subject, or both.
async fn revoke_by_owner(state: &GatewayState, body: &[u8], now: i64) -> Response<Vec<u8>> {
    let (request, by) = match revoke_body(body) {
        Ok(parsed) => parsed,
        Err(why) => return bad_request(&why),
    };
    let filter = TokenFilter {
        client_id: request.client,
        subject: request.subject,
        now,
        ..TokenFilter::default()
    };
    if !filter.is_targeted() {
        return bad_request(
            "name a client, a subject, or both: revoking every token needs more than one empty request",
        );
    }
    revoke(state, &filter, &by, request.reason).await
}

/// `POST /api/tokens/{id}/revoke`.
async fn revoke_one(state: &GatewayState, id: &str, body: &[u8], now: i64) -> Response<Vec<u8>> {
    let (request, by) = match revoke_body(body) {
        Ok(parsed) => parsed,
        Err(why) => return bad_request(&why),
    };
    match state.current().store.tokens().token(id).await {
        Ok(Some(_)) => {
            let filter = TokenFilter {
                id: Some(id.to_owned()),
                now,
                ..TokenFilter::default()
            };
            revoke(state, &filter, &by, request.reason).await
        }
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "no-such-token",
            "no token has this id",
        ),
        Err(e) => store_unavailable(&e),
    }
}

/// `GET /api/clients`: each registered client with its token statistics.
async fn clients_with_stats(store: &StateStore, now: i64) -> Response<Vec<u8>> {
    match (
        store.tokens().clients().await,
        store.tokens().client_stats(now).await,
    ) {
        (Ok(clients), Ok(stats)) => {
            let list: Vec<serde_json::Value> = clients
                .iter()
                .map(|client| {
                    let client_stats = stats.iter().find(|s| s.client_id == client.id);
                    serde_json::json!({"client": client, "stats": client_stats})
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({"clients": list}))
        }
        (Err(e), _) | (_, Err(e)) => store_unavailable(&e),
    }
}

fn store_unavailable(error: &crate::store::StoreError) -> Response<Vec<u8>> {
    log::error!("admin: {error}");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "the state store is unavailable",
    )
}

async fn revoke(
    state: &GatewayState,
    filter: &TokenFilter,
    by: &str,
    reason: Option<String>,
) -> Response<Vec<u8>> {
    let rt = state.current();
    let Some(token_service) = rt.token_service.as_ref() else {
        return problem(
            StatusCode::NOT_FOUND,
            "no-token-service",
            "this policy has no token_service",
        );
    };
    match token_service.revoke(filter, by, reason).await {
        Ok(n) => {
            log::info!(
                "admin: {n} token(s) revoked on behalf of the {by} (client {}, subject {})",
                filter.client_id.as_deref().unwrap_or("*"),
                filter.subject.as_deref().unwrap_or("*")
            );
            json(StatusCode::OK, &serde_json::json!({"revoked": n, "by": by}))
        }
        Err(e) => {
            log::error!("admin: {e}");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the state store is unavailable",
            )
        }
    }
}

const CSV_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "format",
    "client_id",
    "subject",
    "scope",
    "grant_type",
    "status",
    "issued_at",
    "expires_at",
    "revoked_at",
    "revoked_by",
    "use_count",
    "first_used_at",
    "last_used_at",
    "last_ip",
    "distinct_ips",
    "flagged",
];

/// One CSV field: quoted when needed, and a leading `=`, `+`, `-` or `@` defused so a
/// spreadsheet does not run it as a formula.
fn csv_field(v: &str, out: &mut String) {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&v);
    }
}

fn csv_row(t: &TokenRecord, now: i64, out: &mut String) {
    let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let fields = [
        t.id.clone(),
        t.kind.as_str().to_owned(),
        t.format.as_str().to_owned(),
        t.client_id.clone(),
        t.subject.clone(),
        t.scope.clone(),
        t.grant_type.clone(),
        t.status(now).to_owned(),
        t.issued_at.to_string(),
        t.expires_at.to_string(),
        opt(t.revoked_at),
        t.revoked_by.clone().unwrap_or_default(),
        t.usage.count.to_string(),
        opt(t.usage.first_used_at),
        opt(t.usage.last_used_at),
        t.usage.last_ip.clone().unwrap_or_default(),
        t.usage.distinct_ips.to_string(),
        t.flagged.clone().unwrap_or_default(),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(f, out);
    }
    out.push_str("\r\n");
}

async fn export(state: &GatewayState, params: &[(String, String)]) -> Response<Vec<u8>> {
    let format = params
        .iter()
        .find(|(k, _)| k == "format")
        .map_or("jsonl", |(_, v)| v.as_str());
    let filter = match filter_from(params, false) {
        Ok(f) => f,
        Err(e) => return bad_request(&e),
    };
    let now = filter.now;
    let tokens = match state.current().store.tokens().find_tokens(&filter).await {
        Ok(t) => t,
        Err(e) => {
            log::error!("admin: {e}");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the state store is unavailable",
            );
        }
    };
    match format {
        "csv" => {
            let mut out = CSV_COLUMNS.join(",");
            out.push_str("\r\n");
            for t in &tokens {
                csv_row(t, now, &mut out);
            }
            sized(StatusCode::OK, "text/csv; charset=utf-8", out.into_bytes())
        }
        "jsonl" | "ndjson" => {
            let mut out = Vec::new();
            for t in &tokens {
                if serde_json::to_writer(&mut out, &token_json(t, now)).is_ok() {
                    out.push(b'\n');
                }
            }
            sized(StatusCode::OK, "application/x-ndjson", out)
        }
        _ => bad_request("format is jsonl or csv"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        let mut s = String::new();
        csv_field("a,b", &mut s);
        s.push('|');
        csv_field("say \"hi\"", &mut s);
        s.push('|');
        csv_field("=HYPERLINK(1)", &mut s);
        s.push('|');
        csv_field("plain", &mut s);
        assert_eq!(s, "\"a,b\"|\"say \"\"hi\"\"\"|'=HYPERLINK(1)|plain");
    }

    #[test]
    fn filters_parse_and_refuse_unknown_parameters() {
        let p = query_params(Some("client=app&status=active&limit=5000&flagged=true"));
        let f = filter_from(&p, true).expect("filter");
        assert_eq!(f.client_id.as_deref(), Some("app"));
        assert_eq!(f.limit, MAX_PAGE);
        assert_eq!(f.flagged, Some(true));
        assert!(filter_from(&query_params(Some("colour=red")), true).is_err());
        assert!(filter_from(&query_params(Some("status=odd")), true).is_err());
    }
}
