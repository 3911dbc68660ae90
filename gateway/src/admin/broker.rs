//! The outbound broker's pages on the admin listener (behind the admin token, which a
//! browser sends as HTTP Basic: any user name, the token as password):
//!
//! - `GET /broker/{provider}`: the session (status, scope, access-token expiry, last
//!   refresh, last error) and a "Connect / Reset handshake" button;
//! - `POST /broker/{provider}/connect`: starts a handshake bound to this browser (a
//!   cookie), redirects to the provider;
//! - `GET /broker/callback`: the provider's redirect back; on success, back to the page.

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::answers::sized;
use crate::broker::outbound::{session_id, OutboundBroker, SessionStatus};
use crate::state::GatewayState;
use crate::store::now_secs;

/// The cookie binding a handshake to the administrator's browser.
const COOKIE: &str = "portcullis_broker";

fn escape(text: &str) -> String {
    crate::oproxy::registration::escape(text)
}

fn page(status: StatusCode, title: &str, body_html: &str) -> Response<Vec<u8>> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1>{body_html}</body></html>",
        title = escape(title)
    );
    let mut response = sized(status, "text/html; charset=utf-8", html.into_bytes());
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // No `form-action`: it would also block the Connect form's redirect to the provider.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn message(status: StatusCode, text: &str) -> Response<Vec<u8>> {
    page(status, "OAuth broker", &format!("<p>{}</p>", escape(text)))
}

fn redirect(location: &str) -> Response<Vec<u8>> {
    let mut response = sized(StatusCode::SEE_OTHER, "text/plain", Vec::new());
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Serves a `/broker/...` route (already authenticated).
pub async fn serve(
    state: &GatewayState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response<Vec<u8>> {
    let runtime = state.current();
    let Some(broker) = runtime.outbound_broker.clone() else {
        return message(
            StatusCode::NOT_FOUND,
            "This gateway has no outbound_broker section.",
        );
    };
    let rest = path.strip_prefix("/broker/").unwrap_or_default();
    if rest == "callback" {
        return callback(&broker, query.unwrap_or(""), headers).await;
    }
    let (provider, action) = match rest.split_once('/') {
        Some((provider, "connect")) => (provider, Some("connect")),
        Some(_) => return message(StatusCode::NOT_FOUND, "No such page."),
        None => (rest, None),
    };
    if !broker.providers.contains_key(provider) {
        return message(
            StatusCode::NOT_FOUND,
            "No session is configured for this provider.",
        );
    }
    // `?session=KEY`: the session of one calling identity (`session_key`).
    let session_key = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(name, _)| name == "session")
        .map(|(_, value)| value.into_owned());
    let session_key = session_key.as_deref();
    match (method, action) {
        (&Method::GET, None) => status_page(&broker, provider, session_key).await,
        (&Method::POST, Some("connect")) => connect(&broker, provider, session_key, headers).await,
        _ => message(
            StatusCode::METHOD_NOT_ALLOWED,
            "This page does not take that method.",
        ),
    }
}

async fn status_page(
    broker: &OutboundBroker,
    provider: &str,
    session_key: Option<&str>,
) -> Response<Vec<u8>> {
    let now = now_secs();
    let id = session_id(provider, session_key);
    let rows = match broker.session(&id).await {
        Ok(Some((_, session))) => {
            let status = match session.status {
                SessionStatus::Connected if session.access_expires_at > now => "connected",
                SessionStatus::Connected => {
                    "connected (access token expired; it is refreshed on the next call)"
                }
                SessionStatus::Broken => {
                    "broken: the provider refused the refresh token. A new handshake is needed."
                }
            };
            let time = |t: Option<i64>| {
                t.map_or_else(|| "never".to_owned(), |t| format!("{t} (unix seconds)"))
            };
            format!(
                "<table><tr><th>State</th><td id=\"state\">{}</td></tr>\
                 <tr><th>Subject</th><td>unknown</td></tr>\
                 <tr><th>Scopes</th><td>{}</td></tr>\
                 <tr><th>Access token expires</th><td>{}</td></tr>\
                 <tr><th>Connected</th><td>{}</td></tr>\
                 <tr><th>Last refresh</th><td>{}</td></tr>\
                 <tr><th>Refreshes</th><td id=\"refreshes\">{}</td></tr>\
                 <tr><th>Last error</th><td id=\"last-error\">{}</td></tr></table>",
                escape(status),
                escape(session.scope.as_deref().unwrap_or("-")),
                time(Some(session.access_expires_at)),
                time(Some(session.connected_at)),
                time(session.last_refresh_at),
                session.refreshes,
                escape(session.last_error.as_deref().unwrap_or("none")),
            )
        }
        Ok(None) => "<p id=\"state\">not connected: no handshake was made yet.</p>".to_owned(),
        Err(error) => format!(
            "<p id=\"state\">the session store does not answer: {}</p>",
            escape(&error.to_string())
        ),
    };
    page(
        StatusCode::OK,
        &format!("Provider session: {id}"),
        &format!(
            "{rows}<form method=\"post\" action=\"/broker/{p}/connect{q}\"><button id=\"connect\" type=\"submit\">Connect / Reset handshake</button></form>\
             <p>The callback to register at the provider: <code>{cb}</code></p>",
            p = escape(provider),
            q = escape(&session_key.map_or_else(String::new, |key| {
                format!("?session={}", form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>())
            })),
            cb = escape(&broker.callback_url),
        ),
    )
}

async fn connect(
    broker: &OutboundBroker,
    provider: &str,
    session_key: Option<&str>,
    headers: &HeaderMap,
) -> Response<Vec<u8>> {
    // A cross-site form cannot start a handshake in the administrator's name.
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site");
    if cross_site {
        return message(
            StatusCode::FORBIDDEN,
            "Start the handshake from this gateway's own page.",
        );
    }
    match broker.start_handshake(provider, session_key).await {
        Ok((location, browser)) => {
            let mut response = redirect(&location);
            let secure = if broker.secure_cookie { "; Secure" } else { "" };
            if let Ok(cookie) = HeaderValue::from_str(&format!(
                "{COOKIE}={browser}; Path=/broker; Max-Age=600; HttpOnly; SameSite=Lax{secure}"
            )) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(why) => message(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn callback(broker: &OutboundBroker, query: &str, headers: &HeaderMap) -> Response<Vec<u8>> {
    let mut state = None;
    let mut code = None;
    let mut error = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "state" => state = Some(value.into_owned()),
            "code" => code = Some(value.into_owned()),
            "error" => error = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(state) = state.filter(|s| !s.is_empty() && s.len() <= 128) else {
        return message(
            StatusCode::BAD_REQUEST,
            "The provider's answer carries no state.",
        );
    };
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_owned())
        });
    match broker
        .complete_handshake(&state, code.as_deref(), error.as_deref(), cookie.as_deref())
        .await
    {
        Ok((provider, None)) => redirect(&format!("/broker/{provider}")),
        Ok((provider, Some(key))) => redirect(&format!(
            "/broker/{provider}?session={}",
            form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
        )),
        Err(why) => message(
            StatusCode::BAD_REQUEST,
            &format!("The handshake failed: {why}"),
        ),
    }
}
