//! The OProxy broker's registrations in the admin API, without secrets:
//! `GET /api/oproxy/registrations` (all), `GET /api/oproxy/registrations/{id}` (one, with
//! its usage) and `DELETE /api/oproxy/registrations/{id}` (revoke: the registration is
//! deleted, so its Token and Key are refused from then on, by every gateway sharing the
//! store).

use http::{Method, Response, StatusCode};

use super::answers::{json, problem};
use crate::oproxy::records::{self, Registration, REGISTRATIONS};
use crate::state::GatewayState;

const PREFIX: &str = "/api/oproxy/registrations";

/// What is shown of a registration: never its Key or hashes.
fn shown(id: &str, record: &Registration) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "app_name": record.app,
        "created_at": record.created_at,
        "last_used_at": record.last_used_at,
        "use_count": record.use_count,
        "rotations": record.rotations,
        "rotated_at": record.rotated_at,
        "rotation_grace_until": record.previous.as_ref().map(|previous| previous.until),
    })
}

/// Answers a registration route; `None` when the path is not one.
pub async fn route(state: &GatewayState, method: &Method, path: &str) -> Option<Response<Vec<u8>>> {
    let rest = path.strip_prefix(PREFIX)?;
    let runtime = state.current();
    let Some(broker) = runtime.oproxy.as_ref() else {
        return Some(problem(
            StatusCode::NOT_FOUND,
            "no-oproxy",
            "this gateway has no oproxy section",
        ));
    };
    let store = &broker.store;
    let unavailable = |error: crate::store::StoreError| {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            format!("the state store failed: {error}"),
        )
    };
    if rest.is_empty() {
        if method != Method::GET {
            return Some(problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route takes GET",
            ));
        }
        return Some(match records::registrations(store).await {
            Ok(all) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "registrations": all.iter().map(|(id, record)| shown(id, record)).collect::<Vec<_>>(),
                }),
            ),
            Err(error) => unavailable(error),
        });
    }
    let id = rest
        .strip_prefix('/')
        .filter(|id| !id.is_empty() && !id.contains('/'))?;
    Some(match *method {
        Method::GET => match records::registration(store, id).await {
            Ok(Some(found)) => json(StatusCode::OK, &shown(id, &found.record)),
            Ok(None) => problem(
                StatusCode::NOT_FOUND,
                "unknown-registration",
                "no such registration",
            ),
            Err(error) => unavailable(error),
        },
        Method::DELETE => match store.documents().delete_document(REGISTRATIONS, id).await {
            Ok(true) => {
                log::info!(
                    "oproxy: registration {} revoked through the admin API",
                    crate::oproxy::masked(id)
                );
                json(StatusCode::OK, &serde_json::json!({ "revoked": id }))
            }
            Ok(false) => problem(
                StatusCode::NOT_FOUND,
                "unknown-registration",
                "no such registration",
            ),
            Err(error) => unavailable(error),
        },
        _ => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "this route takes GET or DELETE",
        ),
    })
}
