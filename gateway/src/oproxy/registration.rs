//! Registration in the browser: `GET /oproxy/{app}/start` sends the browser to the
//! provider (with `state`, PKCE, and a cookie that binds the flow to this browser);
//! `GET /oproxy/callback` takes the `state` once, checks the cookie, exchanges the code
//! (or, for an admin-consent app, takes the consented tenant), creates the registration
//! and shows its Configuration Settings — ID, Token, Key — once: an HTML page with copy
//! buttons, or JSON for `Accept: application/json`. Nothing shown here is kept but the
//! Token's keyed hash and the Key sealed.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::StatusCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::records::{self, Pending, Registration};
use super::token::KEY_PURPOSE;
use super::{masked, AppGrant, OProxy, REGISTRATION_TIMEOUT_SECS};
use crate::broker::provider::Grant;
use crate::broker::sealing::random_bytes;
use crate::oauth::endpoint::Answer;

/// The cookie that binds a registration flow to the browser that started it.
pub const COOKIE: &str = "portcullis_oproxy";

fn page(status: StatusCode, reason: &'static str, title: &str, message: &str) -> Answer {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>",
        title = escape(title),
        message = escape(message),
    );
    let mut answer = html(status, body);
    answer.reason = Some(reason);
    answer
}

fn html(status: StatusCode, body: String) -> Answer {
    Answer {
        status,
        body: body.into_bytes(),
        content_type: "text/html; charset=utf-8",
        headers: vec![
            ("referrer-policy", "no-referrer".to_owned()),
            ("x-frame-options", "DENY".to_owned()),
            ("x-content-type-options", "nosniff".to_owned()),
        ],
        reason: None,
    }
}

fn random_text<const N: usize>() -> Option<String> {
    random_bytes::<N>()
        .ok()
        .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `GET {base}/{app}/start`.
pub async fn start(broker: &OProxy, app_name: &str, now: i64) -> Answer {
    let Some(app) = broker.apps.get(app_name) else {
        return page(
            StatusCode::NOT_FOUND,
            "unknown-app",
            "Unknown app",
            "The gateway registers no app of that name.",
        );
    };
    let (Some(state), Some(browser)) = (random_text::<32>(), random_text::<32>()) else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-randomness",
            "Try again",
            "The gateway could not make a random value.",
        );
    };
    // Browsers that never came back leave pending records behind: they go first, and a
    // flood of starts is refused once too many are in progress.
    match records::purge_pending(&broker.store, now).await {
        Ok(live) if live < records::MAX_PENDING => {}
        Ok(_) => {
            log::warn!("oproxy: too many registrations in progress; a start was refused");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-registrations",
                "Try again later",
                "Too many registrations are in progress.",
            );
        }
        Err(error) => {
            log::warn!("oproxy: a registration could not be started: {error}");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Try again",
                "The gateway could not record the registration.",
            );
        }
    }
    let verifier = if app.provider.pkce {
        random_text::<32>()
    } else {
        None
    };
    let pending = Pending {
        app: app.name.clone(),
        verifier: verifier.clone(),
        browser: sha256_hex(&browser),
        expires_at: now + REGISTRATION_TIMEOUT_SECS,
    };
    if let Err(error) = records::put_pending(&broker.store, &state, &pending).await {
        log::warn!("oproxy: a registration could not be started: {error}");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Try again",
            "The gateway could not record the registration.",
        );
    }
    let Some(location) = app.provider.authorization_url(
        &broker.callback_url,
        &state,
        verifier.as_deref(),
        &app.scopes,
    ) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no-authorize-url",
            "Not available",
            "This app's provider has no authorization URL.",
        );
    };
    let mut answer = page(
        StatusCode::FOUND,
        "redirected",
        "Redirecting",
        "Continue at the provider.",
    );
    answer.reason = None;
    answer.headers.push(("location", location));
    answer.headers.push((
        "set-cookie",
        cookie(broker, &browser, REGISTRATION_TIMEOUT_SECS),
    ));
    answer
}

fn cookie(broker: &OProxy, value: &str, max_age: i64) -> String {
    let secure = if broker.secure_cookie { "; Secure" } else { "" };
    // SameSite=Lax: the provider's redirect back is a top-level navigation from another
    // site, which Lax lets the cookie ride on; nothing else cross-site does.
    format!(
        "{COOKIE}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        broker.base_path
    )
}

/// The browser's binding cookie, from a `Cookie` header.
fn browser_cookie(header: Option<&str>) -> Option<&str> {
    header?.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then_some(value)
    })
}

/// `GET {base}/callback?state=...&code=...` (or `&tenant=...`, or `&error=...`).
pub async fn callback(
    broker: &OProxy,
    query: &str,
    cookie_header: Option<&str>,
    wants_json: bool,
    now: i64,
) -> Answer {
    let mut state = None;
    let mut code = None;
    let mut tenant = None;
    let mut error = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "state" => state = Some(value.into_owned()),
            "code" => code = Some(value.into_owned()),
            "tenant" => tenant = Some(value.into_owned()),
            "error" => error = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(state) = state.filter(|s| !s.is_empty() && s.len() <= 128) else {
        return page(
            StatusCode::BAD_REQUEST,
            "missing-state",
            "Registration failed",
            "The provider's answer carries no state.",
        );
    };
    let pending = match records::take_pending(&broker.store, &state).await {
        Ok(Some(pending)) if pending.expires_at >= now => pending,
        Ok(_) => return page(
            StatusCode::BAD_REQUEST,
            "unknown-state",
            "Registration failed",
            "This registration is unknown, was already completed, or took too long. Start again.",
        ),
        Err(error) => {
            log::warn!("oproxy: a callback could not be checked: {error}");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Try again",
                "The gateway could not read the registration.",
            );
        }
    };
    let presented = browser_cookie(cookie_header)
        .map(sha256_hex)
        .unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(pending.browser.as_bytes())) {
        return page(
            StatusCode::FORBIDDEN,
            "wrong-browser",
            "Registration failed",
            "This registration was started in another browser. Start again here.",
        );
    }
    if let Some(error) = error {
        let shown: String = error.chars().take(64).collect();
        return page(
            StatusCode::BAD_REQUEST,
            "provider-refused",
            "Registration failed",
            &format!("The provider answered: {shown}"),
        );
    }
    let Some(app) = broker.apps.get(&pending.app) else {
        return page(
            StatusCode::NOT_FOUND,
            "unknown-app",
            "Registration failed",
            "The gateway no longer registers this app.",
        );
    };
    let token = match app.grant {
        AppGrant::RefreshToken => {
            let Some(code) = code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "missing-code",
                    "Registration failed",
                    "The provider's answer carries no code.",
                );
            };
            let exchanged = app
                .provider
                .token(&Grant::AuthorizationCode {
                    code: &code,
                    redirect_uri: &broker.callback_url,
                    verifier: pending.verifier.as_deref(),
                })
                .await;
            match exchanged {
                Ok(tokens) => match tokens.refresh_token {
                    Some(refresh) => refresh,
                    None => {
                        return page(
                            StatusCode::BAD_GATEWAY,
                            "no-refresh-token",
                            "Registration failed",
                            "The provider issued no refresh token (does the app ask for offline access?).",
                        )
                    }
                },
                Err(failure) => {
                    return page(
                        StatusCode::BAD_GATEWAY,
                        "provider-failure",
                        "Registration failed",
                        &format!("The provider refused the code: {}", failure.code()),
                    )
                }
            }
        }
        AppGrant::ClientCredentials => {
            let Some(tenant) = tenant.filter(|t| is_tenant(t)) else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "missing-tenant",
                    "Registration failed",
                    "The provider's answer carries no valid tenant.",
                );
            };
            // The consent is proven by a token for the tenant.
            let scope = app.scopes.join(" ");
            if let Err(failure) = app
                .provider
                .token(&Grant::ClientCredentials {
                    tenant: Some(&tenant),
                    scope: Some(&scope),
                })
                .await
            {
                return page(
                    StatusCode::BAD_GATEWAY,
                    "provider-failure",
                    "Registration failed",
                    &format!(
                        "The provider gives no token for this tenant: {}",
                        failure.code()
                    ),
                );
            }
            tenant
        }
    };
    match create(broker, &app.name, &token, now).await {
        Ok(settings) => {
            log::info!(
                "oproxy: registration {} created for app {}",
                masked(&settings.id),
                app.name
            );
            let mut answer = if wants_json {
                Answer {
                    status: StatusCode::OK,
                    body: serde_json::to_vec(&serde_json::json!({
                        "app_name": app.name,
                        "ID": settings.id,
                        "Token": token,
                        "Key": settings.key,
                    }))
                    .unwrap_or_default(),
                    content_type: "application/json",
                    headers: Vec::new(),
                    reason: None,
                }
            } else {
                settings_page(&app.name, &settings.id, &token, &settings.key)
            };
            answer.headers.push(("set-cookie", cookie(broker, "", 0)));
            answer
        }
        Err(why) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Registration failed",
            why,
        ),
    }
}

/// A tenant as providers name them (a GUID or a domain).
fn is_tenant(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// What the integration is given once.
pub struct Settings {
    pub id: String,
    pub key: String,
}

/// Creates a registration for `token`: a new ID and Key; stores the Key sealed and the
/// Token's keyed hash.
///
/// # Errors
/// No randomness, or the store refused.
pub async fn create(
    broker: &OProxy,
    app: &str,
    token: &str,
    now: i64,
) -> Result<Settings, &'static str> {
    let unavailable = "The gateway could not store the registration.";
    let id = uuid_v4().ok_or(unavailable)?;
    let key = random_bytes::<32>().map_err(|_| unavailable)?;
    let record = Registration {
        app: app.to_owned(),
        key_sealed: broker
            .seal
            .seal(KEY_PURPOSE, &key)
            .map_err(|_| unavailable)?,
        token_hash: hex::encode(broker.token_hash(token)),
        previous: None,
        created_at: now,
        rotated_at: None,
        last_used_at: None,
        use_count: 0,
        rotations: 0,
    };
    match records::put_registration(&broker.store, &id, 0, &record).await {
        Ok(true) => Ok(Settings {
            id,
            key: STANDARD.encode(key),
        }),
        Ok(false) | Err(_) => Err(unavailable),
    }
}

/// A random (version 4) UUID.
fn uuid_v4() -> Option<String> {
    let mut bytes = random_bytes::<16>().ok()?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// The Configuration Settings page: each value in a read-only field with a copy button.
fn settings_page(app: &str, id: &str, token: &str, key: &str) -> Answer {
    let script_nonce = random_text::<16>().unwrap_or_default();
    let field = |label: &str, name: &str, value: &str| {
        format!(
            "<p><label for=\"{name}\">{label}</label><br>\
             <input id=\"{name}\" readonly size=\"70\" value=\"{value}\"> \
             <button type=\"button\" data-copy=\"{name}\">Copy</button></p>",
            value = escape(value)
        )
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Configuration Settings</title></head><body>\
         <h1>Configuration Settings for {app}</h1>\
         <p><strong>Shown once.</strong> Copy these into the integration's configuration now: \
         the gateway keeps no copy of the Token or the Key it could show again.</p>\
         {id_field}{token_field}{key_field}\
         <script nonce=\"{script_nonce}\">\
         document.querySelectorAll('button[data-copy]').forEach(function (b) {{\
           b.addEventListener('click', function () {{\
             var f = document.getElementById(b.dataset.copy); f.select();\
             navigator.clipboard.writeText(f.value); b.textContent = 'Copied';\
           }});\
         }});\
         </script></body></html>",
        app = escape(app),
        id_field = field("ID", "id", id),
        token_field = field("Token", "token", token),
        key_field = field("Key", "key", key),
    );
    let mut answer = html(StatusCode::OK, body);
    answer.headers.push((
        "content-security-policy",
        format!("default-src 'none'; script-src 'nonce-{script_nonce}'; base-uri 'none'; form-action 'none'"),
    ));
    answer
}

/// HTML-escapes text for element content and quoted attributes.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let id = uuid_v4().expect("uuid");
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid_v4(), Some(id));
    }

    #[test]
    fn the_binding_cookie_is_found_among_others() {
        assert_eq!(
            browser_cookie(Some("a=1; portcullis_oproxy=xyz; b=2")),
            Some("xyz")
        );
        assert_eq!(browser_cookie(Some("portcullis_oproxyx=1")), None);
        assert_eq!(browser_cookie(None), None);
    }

    #[test]
    fn tenants_are_plain_names() {
        assert!(is_tenant("7a2c8b1e-4d3f-4b2a-9c1d-0e5f6a7b8c9d"));
        assert!(is_tenant("contoso.onmicrosoft.com"));
        assert!(!is_tenant("a/b"));
        assert!(!is_tenant(""));
    }
}
