//! Quotas in the admin API: what a client (or any key a quota counts by) has used, and a
//! reset. `GET /api/quotas?key=acme` and `POST /api/quotas/reset?key=acme[&service=S][&quota=Q]`.

use http::{Method, Response, StatusCode};
use portcullis_assertions::quota::{key_prefix, split_store_key};

use super::answers::{json, problem};
use crate::runtime::Runtime;
use crate::state::GatewayState;
use crate::store::{now_secs, CounterWindow, StoreError};

/// Answers a quota route; `None` when the path is not one.
pub async fn route(
    state: &GatewayState,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Response<Vec<u8>>> {
    let action = match path {
        "/api/quotas" => Action::List,
        "/api/quotas/reset" => Action::Reset,
        _ => return None,
    };
    let expected = match action {
        Action::List => Method::GET,
        Action::Reset => Method::POST,
    };
    if method != expected {
        return Some(problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "this route does not take that method",
        ));
    }
    let params = match Params::parse(query) {
        Ok(params) => params,
        Err(message) => return Some(problem(StatusCode::BAD_REQUEST, "invalid-query", message)),
    };
    let rt = state.current();
    Some(match action {
        Action::List => list(&rt, &params).await,
        Action::Reset => reset(&rt, &params).await,
    })
}

enum Action {
    List,
    Reset,
}

struct Params {
    key: String,
    service: Option<String>,
    quota: Option<String>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, String> {
        let mut key = None;
        let mut service = None;
        let mut quota = None;
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*name {
                "key" => key = Some(value.into_owned()),
                "service" => service = Some(value.into_owned()),
                "quota" => quota = Some(value.into_owned()),
                other => {
                    return Err(format!(
                        "unknown parameter \"{other}\": use key, service, quota"
                    ))
                }
            }
        }
        let key = key
            .filter(|key| !key.is_empty())
            .ok_or("key is required: the client id (or whatever the quota counts by)")?;
        Ok(Params {
            key,
            service,
            quota,
        })
    }

    fn selects(&self, service: &str, quota: &str) -> bool {
        self.service
            .as_deref()
            .is_none_or(|wanted| wanted == service)
            && self.quota.as_deref().is_none_or(|wanted| wanted == quota)
    }
}

/// One counted quota of the key: its service and name from the store key's parts.
struct Counted {
    store_key: String,
    service: String,
    quota: String,
    window: CounterWindow,
}

async fn counted(rt: &Runtime, key: &str) -> Result<Vec<Counted>, StoreError> {
    let prefix = key_prefix(key);
    let windows = rt.store.counters().counters(&prefix, now_secs()).await?;
    Ok(windows
        .into_iter()
        .filter_map(|(store_key, window)| {
            let (service, quota) = split_store_key(&store_key, key)?;
            Some(Counted {
                service,
                quota,
                store_key,
                window,
            })
        })
        .collect())
}

/// Every quota the policy has (those not counted yet show 0 used), with the key's use.
async fn list(rt: &Runtime, params: &Params) -> Response<Vec<u8>> {
    let counted = match counted(rt, &params.key).await {
        Ok(counted) => counted,
        Err(error) => return unavailable(&error),
    };
    let quotas: Vec<serde_json::Value> = rt
        .quotas
        .iter()
        .filter(|quota| params.selects(&quota.service, &quota.name))
        .map(|quota| {
            let window = counted
                .iter()
                .find(|c| c.service == quota.service && c.quota == quota.name)
                .map(|c| c.window);
            serde_json::json!({
                "service": quota.service,
                "quota": quota.name,
                "limit": quota.limit,
                "period": quota.period,
                "used": window.map_or(0, |w| w.count),
                "remaining": quota.limit.saturating_sub(window.map_or(0, |w| w.count)),
                "resets_at": window.map(|w| w.resets_at),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({"key": params.key, "quotas": quotas}),
    )
}

/// Ends the key's running windows (all, or one service's, or one quota's).
async fn reset(rt: &Runtime, params: &Params) -> Response<Vec<u8>> {
    let counted = match counted(rt, &params.key).await {
        Ok(counted) => counted,
        Err(error) => return unavailable(&error),
    };
    let mut reset = Vec::new();
    for quota in counted
        .iter()
        .filter(|c| params.selects(&c.service, &c.quota))
    {
        match rt
            .store
            .counters()
            .reset_counter(&quota.store_key, now_secs())
            .await
        {
            Ok(true) => {
                reset.push(serde_json::json!({"service": quota.service, "quota": quota.quota}))
            }
            Ok(false) => {}
            Err(error) => return unavailable(&error),
        }
    }
    log::info!(
        "admin API: {} quota window(s) reset for one key",
        reset.len()
    );
    json(
        StatusCode::OK,
        &serde_json::json!({"key": params.key, "reset": reset}),
    )
}

fn unavailable(error: &StoreError) -> Response<Vec<u8>> {
    log::warn!("admin API: quotas could not be read: {error}");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "the state store did not answer",
    )
}
