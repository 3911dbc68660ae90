//! The userauth protocol, byte for byte as the cOS Core REST API speaks it: parsing the
//! three operations' parameters (every bad input a 400 naming the parameter, before
//! anything changes), running them against the state store, and the compact JSON answers
//! with their keys in the API's order. Access control is [`super::serve`]'s.
//!
//! Addresses are normalised before they are keys: `::ffff:192.0.2.1` is `192.0.2.1`, IPv6
//! is written in its compressed lower-case form, so one host never has two entries.

use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use portcullis_assertions::ip::canonical_ip;
use serde::Serialize;

use super::directory::StoreIdentityDirectory;
use crate::store::{now_secs, IdentityEntry, IdentityStore};

/// The path of the resource.
pub const PATH: &str = "/api/oper/userauth";
/// `agent_type` of every entry added through the API.
pub const AGENT_TYPE: &str = "Identity Awareness";
/// Users listed when `num` is not given.
pub const DEFAULT_NUM: usize = 100;
/// The longest timeout, seconds: 31 days (the longest month).
pub const MAX_TIMEOUT_SECS: i64 = 31 * 24 * 3600;
/// Largest request body.
pub const MAX_BODY: usize = 8 * 1024;
/// Longest user name, group name and interface name, bytes; most groups per entry.
const MAX_USERNAME_BYTES: usize = 256;
const MAX_GROUP_BYTES: usize = 128;
const MAX_GROUPS: usize = 64;
const MAX_INTERFACE_BYTES: usize = 64;

/// An answer: HTTP status and body.
pub type Answer = (StatusCode, Vec<u8>);

/// A refusal before anything changed: status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub StatusCode, pub String);

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

/// True for an interface name the API and the policy accept.
#[must_use]
pub fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The parameters of a query or form, each at most once, only those `allowed`.
fn params(text: &str, allowed: &[&str]) -> Result<Vec<(String, String)>, Refusal> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(text.as_bytes()) {
        if !allowed.contains(&&*name) {
            return Err(bad(if allowed.is_empty() {
                format!("unknown parameter \"{name}\": this request takes none")
            } else {
                format!("unknown parameter \"{name}\": use {}", allowed.join(", "))
            }));
        }
        if out.iter().any(|(seen, _)| *seen == name) {
            return Err(bad(format!("parameter \"{name}\" is given twice")));
        }
        out.push((name.into_owned(), value.into_owned()));
    }
    Ok(out)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// An address as the table keys it.
fn parse_ip(text: Option<&str>) -> Result<IpAddr, Refusal> {
    let text = text.ok_or_else(|| bad("parameter \"ip\" is required"))?;
    let ip: IpAddr = text.parse().map_err(|_| {
        bad("parameter \"ip\" is not an IPv4 or IPv6 address (e.g. 203.0.113.5 or 2001:db8::5)")
    })?;
    let ip = canonical_ip(ip);
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(bad("parameter \"ip\" is not a host address"));
    }
    Ok(ip)
}

/// An optional interface, which must be configured when the API lists interfaces.
fn parse_interface(text: Option<&str>, interfaces: &[String]) -> Result<Option<String>, Refusal> {
    let Some(name) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if !valid_interface(name) {
        return Err(bad(format!("parameter \"interface\" is 1 to {MAX_INTERFACE_BYTES} letters, digits, '-', '_', '.' or ':'")));
    }
    if !interfaces.is_empty() && !interfaces.iter().any(|i| i == name) {
        return Err(bad(format!(
            "parameter \"interface\": unknown interface \"{name}\" (known: {})",
            interfaces.join(", ")
        )));
    }
    Ok(Some(name.to_owned()))
}

/// Whole seconds, 1 to [`MAX_TIMEOUT_SECS`].
fn parse_timeout(name: &str, text: &str) -> Result<i64, Refusal> {
    let refused = || {
        bad(format!(
            "parameter \"{name}\" must be a whole number of seconds from 1 to {MAX_TIMEOUT_SECS} (31 days)"
        ))
    };
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    let secs: i64 = text.parse().map_err(|_| refused())?;
    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(refused());
    }
    Ok(secs)
}

fn parse_groups(text: Option<&str>) -> Result<Vec<String>, Refusal> {
    let text =
        text.ok_or_else(|| bad("parameter \"groups\" is required (it may be empty: groups=)"))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let groups: Vec<String> = text.split(',').map(str::to_owned).collect();
    if groups.len() > MAX_GROUPS
        || groups
            .iter()
            .any(|g| g.is_empty() || g.len() > MAX_GROUP_BYTES || g.chars().any(char::is_control))
    {
        return Err(bad(format!(
            "parameter \"groups\" is a comma-separated list of at most {MAX_GROUPS} names of 1 to {MAX_GROUP_BYTES} bytes, without control characters"
        )));
    }
    Ok(groups)
}

/// The entry a `POST` form adds, as of `now`.
///
/// # Errors
/// The first bad parameter.
pub fn parse_add(form: &str, interfaces: &[String], now: i64) -> Result<IdentityEntry, Refusal> {
    let params = params(
        form,
        &[
            "ip",
            "username",
            "interface",
            "session_timeout",
            "idle_timeout",
            "groups",
        ],
    )?;
    let ip = parse_ip(param(&params, "ip"))?;
    let username = param(&params, "username")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("parameter \"username\" is required"))?;
    if username.len() > MAX_USERNAME_BYTES || username.chars().any(char::is_control) {
        return Err(bad(format!("parameter \"username\" is at most {MAX_USERNAME_BYTES} bytes, without control characters")));
    }
    let interface = parse_interface(param(&params, "interface"), interfaces)?;
    let session = parse_timeout(
        "session_timeout",
        param(&params, "session_timeout")
            .ok_or_else(|| bad("parameter \"session_timeout\" is required"))?,
    )?;
    let idle = match param(&params, "idle_timeout") {
        Some(text) => parse_timeout("idle_timeout", text)?,
        None => session,
    };
    let groups = parse_groups(param(&params, "groups"))?;
    Ok(IdentityEntry {
        ip,
        username: username.to_owned(),
        groups,
        interface,
        session_timeout_secs: Some(session),
        idle_timeout_secs: Some(idle),
        expires_at: now + idle.min(session),
        session_ends_at: now + session,
    })
}

/// What a `GET` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub num: usize,
    /// One address (with, optionally, the interface it must be on).
    pub only: Option<(IpAddr, Option<String>)>,
}

/// # Errors
/// The first bad parameter.
pub fn parse_list(query: &str, interfaces: &[String]) -> Result<ListQuery, Refusal> {
    let params = params(query, &["num", "ip", "interface"])?;
    let num = match param(&params, "num") {
        None => DEFAULT_NUM,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad("parameter \"num\" must be a whole number of users"))?,
    };
    let only = match (param(&params, "ip"), param(&params, "interface")) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(bad(
                "parameter \"interface\" goes with \"ip\": name the address to look up",
            ))
        }
        (ip, interface) => Some((parse_ip(ip)?, parse_interface(interface, interfaces)?)),
    };
    Ok(ListQuery { num, only })
}

/// The address (and interface) a `DELETE` names.
///
/// # Errors
/// The first bad parameter.
pub fn parse_delete(
    query: &str,
    interfaces: &[String],
) -> Result<(IpAddr, Option<String>), Refusal> {
    let params = params(query, &["ip", "interface"])?;
    Ok((
        parse_ip(param(&params, "ip"))?,
        parse_interface(param(&params, "interface"), interfaces)?,
    ))
}

#[derive(Serialize)]
struct UserJson<'a> {
    username: &'a str,
    ip: String,
    groups: String,
    interface: &'a str,
    agent_type: &'static str,
    session_timeout: i64,
    idle_timeout: i64,
}

impl<'a> UserJson<'a> {
    fn of(e: &'a IdentityEntry) -> UserJson<'a> {
        let session = e.session_timeout_secs.unwrap_or(0);
        UserJson {
            username: &e.username,
            ip: e.ip.to_string(),
            groups: e.groups.join(","),
            interface: e.interface.as_deref().unwrap_or(""),
            agent_type: AGENT_TYPE,
            session_timeout: session,
            idle_timeout: e.idle_timeout_secs.unwrap_or(session),
        }
    }
}

#[derive(Serialize)]
struct ListJson<'a> {
    error: bool,
    active_users_count: usize,
    active_users: Vec<UserJson<'a>>,
}

#[derive(Serialize)]
struct AddedJson<'a> {
    error: bool,
    user: UserJson<'a>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    error: bool,
    error_code: u16,
    error_message: &'a str,
}

fn compact(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// `{"error":false,"active_users_count":N,"active_users":[...]}`.
#[must_use]
pub fn render_list(total: usize, users: &[IdentityEntry]) -> Vec<u8> {
    compact(&ListJson {
        error: false,
        active_users_count: total,
        active_users: users.iter().map(UserJson::of).collect(),
    })
}

/// `{"error":false,"user":{...}}`.
#[must_use]
pub fn render_added(entry: &IdentityEntry) -> Vec<u8> {
    compact(&AddedJson {
        error: false,
        user: UserJson::of(entry),
    })
}

/// `{"error":true,"error_code":N,"error_message":"..."}`.
#[must_use]
pub fn render_error(status: StatusCode, message: &str) -> Vec<u8> {
    compact(&ErrorJson {
        error: true,
        error_code: status.as_u16(),
        error_message: message,
    })
}

/// A refusal as the API answers it.
#[must_use]
pub fn refused(refusal: &Refusal) -> Answer {
    (refusal.0, render_error(refusal.0, &refusal.1))
}

fn unavailable(error: &crate::store::StoreError) -> Answer {
    log::error!("userauth: the state store failed: {error}");
    let status = StatusCode::SERVICE_UNAVAILABLE;
    (
        status,
        render_error(
            status,
            "the identity table cannot be reached now; nothing was changed",
        ),
    )
}

/// `GET`: the list (cut to `num`; the count is every active user) or one address.
pub async fn list(store: &Arc<dyn IdentityStore>, query: &ListQuery) -> Answer {
    let all = match store.identities(now_secs()).await {
        Ok(all) => all,
        Err(error) => return unavailable(&error),
    };
    let chosen: Vec<IdentityEntry> = all
        .iter()
        .filter(|e| match &query.only {
            None => true,
            Some((ip, interface)) => {
                e.ip == *ip && (interface.is_none() || e.interface == *interface)
            }
        })
        .take(query.num)
        .cloned()
        .collect();
    (StatusCode::OK, render_list(all.len(), &chosen))
}

/// `POST`: adds the entry, replacing any for its address.
pub async fn add(
    store: &Arc<dyn IdentityStore>,
    directory: Option<&StoreIdentityDirectory>,
    entry: &IdentityEntry,
) -> Answer {
    if let Err(error) = store.put_identity(entry).await {
        return unavailable(&error);
    }
    if let Some(directory) = directory {
        directory.forget(entry.ip);
    }
    log::info!(
        "userauth: {} added ({} groups)",
        entry.ip,
        entry.groups.len()
    );
    (StatusCode::OK, render_added(entry))
}

/// `DELETE`: removes the address's active entry (only when on `interface`, if one is named).
pub async fn delete(
    store: &Arc<dyn IdentityStore>,
    directory: Option<&StoreIdentityDirectory>,
    ip: IpAddr,
    interface: Option<&str>,
) -> Answer {
    // An entry that expired but was not purged yet does not exist either.
    match store.identity(ip, now_secs()).await {
        Ok(Some(e)) if interface.is_none() || e.interface.as_deref() == interface => {}
        Ok(_) => return not_found(),
        Err(error) => return unavailable(&error),
    }
    let removed = store.remove_identity(ip).await;
    if let Some(directory) = directory {
        directory.forget(ip);
    }
    match removed {
        Ok(true) => {
            log::info!("userauth: {ip} deleted");
            (StatusCode::OK, b"{\"error\":false}".to_vec())
        }
        Ok(false) => not_found(),
        Err(error) => unavailable(&error),
    }
}

fn not_found() -> Answer {
    (
        StatusCode::NOT_FOUND,
        render_error(StatusCode::NOT_FOUND, "User does not exist"),
    )
}

#[cfg(test)]
mod tests;
