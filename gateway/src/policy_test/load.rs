//! Reading a test file and preparing what its cases run against: the policy loaded as a
//! dry run with a settable clock, key sets standing in for remote ones, identities and
//! tokens in the in-memory state store, and each case's request built.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::http::RequestHeader;

use super::simulate::{SimRequest, StubAnswer};
use super::spec::{CaseSpec, FileRefSpec, RequestSpec, StubSpec, TestFileSpec};
use crate::clock::SettableClock;
use crate::config::yaml::Location;
use crate::config::{Carry, Diagnostic};
use crate::runtime::Runtime;

/// Largest body `body_bytes` makes.
const MAX_GENERATED_BODY: usize = 64 * 1024 * 1024;

/// A test file, read and checked.
pub struct TestFile {
    pub path: Arc<Path>,
    pub spec: TestFileSpec,
    /// The policy, resolved against the test file's folder.
    pub policy: PathBuf,
    /// Values for `${secret.NAME}` and `${token.NAME}`.
    pub values: BTreeMap<String, String>,
}

/// A located problem in a test file.
pub(crate) fn diagnostic(file: &Arc<Path>, loc: Option<Location>, message: String) -> Diagnostic {
    Diagnostic {
        file: file.clone(),
        loc,
        path: String::new(),
        message,
    }
}

/// Reads and parses a test file; every mistake comes back as `file:line:col: message`.
///
/// # Errors
/// What is wrong with the file.
pub fn read_test_file(path: &Path) -> Result<TestFile, Vec<Diagnostic>> {
    let file: Arc<Path> = Arc::from(path);
    let text = crate::files::read_bounded_text(path, crate::files::FileKind::Policy)
        .map_err(|e| vec![diagnostic(&file, None, e.to_string())])?;
    let mut errors = Vec::new();
    let parsed = crate::config::parse_text::<TestFileSpec>(file.clone(), &text, &mut errors);
    let Some(parsed) = parsed.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let spec = parsed.spec;
    let base = base_of(path);
    let policy = base.join(&spec.policy.value);
    let mut values = BTreeMap::new();
    for (name, file_ref) in &spec.secrets {
        match read_relative(&base, file_ref) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                values.insert(
                    format!("secret.{name}"),
                    text.trim_end_matches('\r').to_owned(),
                );
            }
            Err(message) => errors.push(diagnostic(&file, Some(file_ref.file.loc), message)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(TestFile {
        path: file,
        spec,
        policy,
        values,
    })
}

/// True when `path` holds a YAML mapping with a top-level `cases:` (a test file, not a
/// policy), for finding test files in a folder.
#[must_use]
pub fn looks_like_test_file(path: &Path) -> bool {
    let Ok(text) = crate::files::read_bounded_text(path, crate::files::FileKind::Policy) else {
        return false;
    };
    let Ok(node) = crate::config::yaml::parse(&text, &crate::config::yaml::Limits::default())
    else {
        return false;
    };
    match node.kind {
        crate::config::yaml::NodeKind::Map(entries) => entries.iter().any(|(key, _)| {
            matches!(&key.kind, crate::config::yaml::NodeKind::Scalar { value, .. } if value == "cases")
        }),
        _ => false,
    }
}

/// `a/tests/../demo.yaml` as `a/demo.yaml`, for reports only: the file system is not asked,
/// so through a symbolic link it may name another file than the one loaded.
pub(crate) fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn base_of(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn read_relative(base: &Path, file_ref: &FileRefSpec) -> Result<Vec<u8>, String> {
    let path = base.join(&file_ref.file.value);
    crate::files::read_bounded(&path, crate::files::FileKind::Request)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads the file's policy with a settable clock and its stand-ins fed.
///
/// # Errors
/// The policy's own diagnostics, or the test file's when a stand-in cannot be fed.
pub async fn load_policy(
    test: &mut TestFile,
    clock: &Arc<SettableClock>,
) -> Result<Runtime, Vec<Diagnostic>> {
    let carry = Carry {
        clock: Some(clock.clone()),
        ..Carry::default()
    };
    let base = base_of(&test.path);
    let mut errors = Vec::new();
    for (url, file_ref) in &test.spec.key_sets {
        match read_relative(&base, file_ref) {
            Ok(document) => {
                if let Err(message) = stand_in_key_set(&carry, url, &document) {
                    errors.push(diagnostic(&test.path, Some(file_ref.file.loc), message));
                }
            }
            Err(message) => errors.push(diagnostic(&test.path, Some(file_ref.file.loc), message)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let runtime =
        crate::config::load_dry_run_with(&test.policy, &carry).map_err(|invalid| invalid.0)?;
    put_identities(test, &runtime, &mut errors).await;
    issue_tokens(test, &runtime, &mut errors).await;
    if errors.is_empty() {
        Ok(runtime)
    } else {
        Err(errors)
    }
}

/// Puts a key set that never fetches where the policy's steps will look for `url`'s.
fn stand_in_key_set(carry: &Carry, url: &str, document: &[u8]) -> Result<(), String> {
    use crate::oauth::remote::{KeysFormat, RemoteKeySet};
    let mut sets = carry
        .key_sets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut reasons = Vec::new();
    for format in [KeysFormat::Jwks, KeysFormat::X509Map] {
        match RemoteKeySet::stand_in(url, format, document) {
            Ok(set) => {
                sets.insert((url.to_owned(), format), Arc::new(set));
            }
            Err(reason) => reasons.push(reason),
        }
    }
    if reasons.len() == 2 {
        return Err(format!(
            "{url}: neither a JWKS nor an X.509 map: {}",
            reasons.join("; ")
        ));
    }
    Ok(())
}

async fn put_identities(test: &TestFile, runtime: &Runtime, errors: &mut Vec<Diagnostic>) {
    // The identity directory judges expiry on the system clock: registrations last from now.
    let now = crate::store::now_secs();
    for identity in &test.spec.identities {
        let Ok(ip) = identity.ip.value.parse::<IpAddr>() else {
            errors.push(diagnostic(
                &test.path,
                Some(identity.ip.loc),
                format!("{:?} is not an IP address", identity.ip.value),
            ));
            continue;
        };
        let lasts = i64::try_from(identity.session_timeout.unwrap_or(86_400)).unwrap_or(86_400);
        let entry = crate::store::IdentityEntry {
            ip,
            username: identity.user.clone(),
            groups: identity.groups.clone(),
            interface: identity.interface.clone(),
            session_timeout_secs: Some(lasts),
            idle_timeout_secs: None,
            expires_at: now + lasts,
            session_ends_at: now + lasts,
        };
        if let Err(e) = runtime.store.identities().put_identity(&entry).await {
            errors.push(diagnostic(&test.path, Some(identity.loc), e.to_string()));
        }
    }
}

async fn issue_tokens(test: &mut TestFile, runtime: &Runtime, errors: &mut Vec<Diagnostic>) {
    for token in &test.spec.tokens {
        let Some(service) = runtime.token_service.as_ref() else {
            errors.push(diagnostic(
                &test.path,
                Some(token.loc),
                "tokens: the policy has no token_service".to_owned(),
            ));
            continue;
        };
        let subject = token
            .subject
            .clone()
            .unwrap_or_else(|| token.client.value.clone());
        let Some((format, allowed, grant_type)) = grantable(service, &token.client.value, &subject)
        else {
            let known: Vec<&str> = service.clients.keys().map(String::as_str).collect();
            errors.push(diagnostic(
                &test.path,
                Some(token.client.loc),
                format!(
                    "no client {:?} in the policy's token_service (clients: {}; or the client of a trusted issuer, with the subject it lists)",
                    token.client.value,
                    known.join(", ")
                ),
            ));
            continue;
        };
        if let Some(scope) = token.scopes.iter().find(|s| !allowed.contains(*s)) {
            errors.push(diagnostic(
                &test.path,
                Some(token.loc),
                format!(
                    "client {:?} may not have scope {scope:?}",
                    token.client.value
                ),
            ));
            continue;
        }
        let grant = crate::oauth::Grant {
            client_id: token.client.value.clone(),
            subject,
            scope: token.scopes.join(" "),
            grant_type,
            format,
            refresh: false,
            family_id: None,
            previous_refresh: None,
            source: None,
            once: None,
        };
        match service.issue(&grant).await {
            Ok(issued) => {
                test.values
                    .insert(format!("token.{}", token.name), issued.access_token);
            }
            Err(e) => errors.push(diagnostic(
                &test.path,
                Some(token.loc),
                format!("cannot issue the token: {e:?}"),
            )),
        }
    }
}

/// How the token service would grant `client` a token for `subject`: its format, the scopes
/// it may have, and the grant: a listed client's own (client_credentials), or a trusted
/// issuer's client for a subject it lists (jwt-bearer, saml2-bearer).
fn grantable(
    service: &crate::oauth::TokenService,
    client: &str,
    subject: &str,
) -> Option<(crate::store::TokenFormat, Vec<String>, &'static str)> {
    if let Some(listed) = service.clients.get(client) {
        return Some((
            listed.token_format,
            listed.scopes.clone(),
            "client_credentials",
        ));
    }
    for issuer in &service.trusted {
        if issuer.client_id == client {
            if let Some(scopes) = issuer.accounts.get(subject) {
                let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
                return Some((issuer.token_format, scopes.clone(), grant));
            }
        }
    }
    for issuer in &service.saml_trusted {
        if issuer.client_id == client {
            if let Some(scopes) = issuer.subjects.get(subject) {
                let grant = "urn:ietf:params:oauth:grant-type:saml2-bearer";
                return Some((issuer.token_format, scopes.clone(), grant));
            }
        }
    }
    None
}

/// Replaces `${secret.NAME}` and `${token.NAME}` in `text`.
fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed ${{ in {text:?}"));
        };
        let name = &after[..end];
        if name.starts_with("secret.") || name.starts_with("token.") {
            let value = values
                .get(name)
                .ok_or_else(|| format!("${{{name}}} is not defined in this test file"))?;
            out.push_str(value);
        } else {
            // Not ours: left as written (a policy template in a body, say).
            out.push_str(&rest[start..start + 2 + end + 1]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The request a case sends, and the time it arrives.
///
/// # Errors
/// A located message for what cannot be built.
pub fn build_request(test: &TestFile, case: &CaseSpec) -> Result<SimRequest, (Location, String)> {
    let spec: &RequestSpec = &case.request;
    let loc = case.request.loc;
    let sub = |text: &str| substitute(text, &test.values).map_err(|m| (loc, m));
    let method = spec
        .method
        .as_ref()
        .map_or("GET", |m| m.value.as_str())
        .to_ascii_uppercase();
    let mut target = sub(&spec.path.value)?;
    if let Some(query) = &spec.query {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(&sub(query)?);
    }
    let mut head = RequestHeader::build(method.as_str(), target.as_bytes(), None)
        .map_err(|e| (spec.path.loc, format!("not a request line: {e}")))?;
    head.set_version(http::Version::HTTP_11);
    let host = spec.host.as_deref().unwrap_or("gateway.test");
    head.append_header(http::header::HOST, host)
        .map_err(|e| (loc, format!("host: {e}")))?;
    for (name, value) in &spec.headers {
        let value = sub(value)?;
        head.append_header(name.clone(), value.as_str())
            .map_err(|e| (loc, format!("header {name}: {e}")))?;
    }
    let given = usize::from(spec.body.is_some())
        + usize::from(spec.body_file.is_some())
        + usize::from(spec.body_bytes.is_some());
    if given > 1 {
        return Err((loc, "body, body_file and body_bytes: give one".to_owned()));
    }
    let body = match (&spec.body, &spec.body_file, &spec.body_bytes) {
        (Some(text), _, _) => sub(text)?.into_bytes(),
        (_, Some(file), _) => {
            read_relative(&base_of(&test.path), &FileRefSpec { file: file.clone() })
                .map_err(|m| (file.loc, m))?
        }
        (_, _, Some(size)) if size.value > MAX_GENERATED_BODY => {
            return Err((
                size.loc,
                format!("body_bytes: at most {MAX_GENERATED_BODY}"),
            ));
        }
        (_, _, Some(size)) => vec![b'x'; size.value],
        (None, None, None) => Vec::new(),
    };
    if !body.is_empty() && !head.headers.contains_key(http::header::CONTENT_LENGTH) {
        let _ = head.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    }
    let peer = match &spec.client {
        Some(client) => client.value.parse().map_err(|_| {
            (
                client.loc,
                format!("{:?} is not an IP address", client.value),
            )
        })?,
        None => IpAddr::from([127, 0, 0, 1]),
    };
    Ok(SimRequest {
        head,
        body,
        peer,
        https: spec.https,
    })
}

/// The upstream's stubbed answer for a case.
///
/// # Errors
/// A located message for a body file that cannot be read.
pub fn build_stub(
    test: &TestFile,
    stub: Option<&StubSpec>,
) -> Result<StubAnswer, (Location, String)> {
    let Some(stub) = stub else {
        return Ok(StubAnswer::default());
    };
    let status = match &stub.status {
        Some(status) => http::StatusCode::from_u16(status.value).map_err(|_| {
            (
                status.loc,
                format!("{} is not an HTTP status", status.value),
            )
        })?,
        None => http::StatusCode::OK,
    };
    let body = match (&stub.body, &stub.body_file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(file)) => {
            read_relative(&base_of(&test.path), &FileRefSpec { file: file.clone() })
                .map_err(|m| (file.loc, m))?
        }
        (None, None) => Vec::new(),
    };
    Ok(StubAnswer {
        status,
        headers: stub
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_replaces_ours_and_keeps_templates() {
        let mut values = BTreeMap::new();
        values.insert("secret.key".to_owned(), "k1".to_owned());
        assert_eq!(
            substitute("a ${secret.key} ${client.id}", &values).expect("ok"),
            "a k1 ${client.id}"
        );
        assert!(substitute("${token.none}", &values).is_err());
        assert!(substitute("${secret.key", &values).is_err());
    }
}
