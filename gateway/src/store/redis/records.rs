//! How records are written in Redis: a token is a hash with one field per value (so the
//! scripts can test and change single values: `revoked_at`, `count`, `flagged`), a client
//! and an identity one JSON string each (they are only ever replaced whole).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::store::{
    ClientRecord, IdentityEntry, StoreError, StoreResult, TokenFormat, TokenKind, TokenRecord,
    Usage,
};

/// A token's hash fields (absent options are absent fields). `seq` is added by the insert
/// script.
pub(super) fn token_fields(t: &TokenRecord) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", t.id.clone()),
        ("kind", t.kind.as_str().to_owned()),
        ("format", t.format.as_str().to_owned()),
        ("client_id", t.client_id.clone()),
        ("subject", t.subject.clone()),
        ("scope", t.scope.clone()),
        ("grant_type", t.grant_type.clone()),
        ("issued_at", t.issued_at.to_string()),
        ("expires_at", t.expires_at.to_string()),
        ("count", t.usage.count.to_string()),
        ("distinct_ips", t.usage.distinct_ips.to_string()),
    ];
    let optional = [
        ("refresh_id", t.refresh_id.clone()),
        ("family_id", t.family_id.clone()),
        ("source", t.source.clone()),
        ("revoked_at", t.revoked_at.map(|v| v.to_string())),
        ("revoked_by", t.revoked_by.clone()),
        ("revoke_reason", t.revoke_reason.clone()),
        ("rotated_at", t.rotated_at.map(|v| v.to_string())),
        (
            "first_used_at",
            t.usage.first_used_at.map(|v| v.to_string()),
        ),
        ("last_used_at", t.usage.last_used_at.map(|v| v.to_string())),
        ("last_ip", t.usage.last_ip.clone()),
        ("flagged", t.flagged.clone()),
    ];
    fields.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name, value))),
    );
    fields
}

/// A token from its hash fields, and its insertion sequence (for a stable order).
pub(super) fn token_from_fields(mut f: HashMap<String, String>) -> StoreResult<(TokenRecord, u64)> {
    let id = f.remove("id").unwrap_or_default();
    let corrupt = |what: &str| StoreError::Corrupt(format!("token {id}: bad or missing {what}"));
    let mut text = |name: &str| f.remove(name);
    let kind = text("kind")
        .as_deref()
        .and_then(TokenKind::parse)
        .ok_or_else(|| corrupt("kind"))?;
    let format = text("format")
        .as_deref()
        .and_then(TokenFormat::parse)
        .ok_or_else(|| corrupt("format"))?;
    let client_id = text("client_id").ok_or_else(|| corrupt("client_id"))?;
    let subject = text("subject").ok_or_else(|| corrupt("subject"))?;
    let scope = text("scope").unwrap_or_default();
    let grant_type = text("grant_type").unwrap_or_default();
    let refresh_id = text("refresh_id");
    let family_id = text("family_id");
    let source = text("source");
    let revoked_by = text("revoked_by");
    let revoke_reason = text("revoke_reason");
    let last_ip = text("last_ip");
    let flagged = text("flagged");
    let number = |f: &mut HashMap<String, String>, name: &str| -> StoreResult<Option<i64>> {
        f.remove(name)
            .map(|v| v.parse::<i64>().map_err(|_| corrupt(name)))
            .transpose()
    };
    let issued_at = number(&mut f, "issued_at")?.ok_or_else(|| corrupt("issued_at"))?;
    let expires_at = number(&mut f, "expires_at")?.ok_or_else(|| corrupt("expires_at"))?;
    let revoked_at = number(&mut f, "revoked_at")?;
    let rotated_at = number(&mut f, "rotated_at")?;
    let first_used_at = number(&mut f, "first_used_at")?;
    let last_used_at = number(&mut f, "last_used_at")?;
    let unsigned = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
    let count = unsigned(number(&mut f, "count")?);
    let distinct_ips = unsigned(number(&mut f, "distinct_ips")?);
    let seq = unsigned(number(&mut f, "seq")?);
    Ok((
        TokenRecord {
            id,
            kind,
            format,
            client_id,
            subject,
            scope,
            grant_type,
            refresh_id,
            family_id,
            source,
            issued_at,
            expires_at,
            revoked_at,
            revoked_by,
            revoke_reason,
            rotated_at,
            usage: Usage {
                count,
                first_used_at,
                last_used_at,
                last_ip,
                distinct_ips,
            },
            flagged,
        },
        seq,
    ))
}

/// A client as its JSON string holds it (the secret as the hex of its digest).
#[derive(Serialize, Deserialize)]
struct StoredClient {
    id: String,
    secret_sha256: Option<String>,
    grants: Vec<String>,
    scopes: Vec<String>,
    token_format: String,
}

pub(super) fn client_json(c: &ClientRecord) -> StoreResult<String> {
    serde_json::to_string(&StoredClient {
        id: c.id.clone(),
        secret_sha256: c.secret_sha256.map(hex::encode),
        grants: c.grants.clone(),
        scopes: c.scopes.clone(),
        token_format: c.token_format.as_str().to_owned(),
    })
    .map_err(|e| StoreError::Corrupt(format!("client {}: {e}", c.id)))
}

pub(super) fn client_from_json(json: &str) -> StoreResult<ClientRecord> {
    let corrupt = |what: String| StoreError::Corrupt(format!("a client record: {what}"));
    let stored: StoredClient = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    let secret_sha256 = stored
        .secret_sha256
        .map(|h| {
            hex::decode(&h)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| corrupt(format!("{}: bad secret digest", stored.id)))
        })
        .transpose()?;
    Ok(ClientRecord {
        token_format: TokenFormat::parse(&stored.token_format)
            .ok_or_else(|| corrupt(format!("{}: bad token format", stored.id)))?,
        id: stored.id,
        secret_sha256,
        grants: stored.grants,
        scopes: stored.scopes,
    })
}

/// An identity as its JSON string holds it.
#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    ip: IpAddr,
    username: String,
    groups: Vec<String>,
    interface: Option<String>,
    session_timeout_secs: Option<i64>,
    idle_timeout_secs: Option<i64>,
    expires_at: i64,
    /// Absent in a record written before sessions had their own end: its expiry was it.
    #[serde(default)]
    session_ends_at: Option<i64>,
}

pub(super) fn identity_json(e: &IdentityEntry) -> StoreResult<String> {
    serde_json::to_string(&StoredIdentity {
        ip: e.ip,
        username: e.username.clone(),
        groups: e.groups.clone(),
        interface: e.interface.clone(),
        session_timeout_secs: e.session_timeout_secs,
        idle_timeout_secs: e.idle_timeout_secs,
        expires_at: e.expires_at,
        session_ends_at: Some(e.session_ends_at),
    })
    .map_err(|error| StoreError::Corrupt(format!("identity {}: {error}", e.ip)))
}

pub(super) fn identity_from_json(json: &str) -> StoreResult<IdentityEntry> {
    let s: StoredIdentity = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("an identity record: {e}")))?;
    Ok(IdentityEntry {
        ip: s.ip,
        username: s.username,
        groups: s.groups,
        interface: s.interface,
        session_timeout_secs: s.session_timeout_secs,
        idle_timeout_secs: s.idle_timeout_secs,
        expires_at: s.expires_at,
        session_ends_at: s.session_ends_at.unwrap_or(s.expires_at),
    })
}

#[cfg(test)]
mod tests {
    use super::{token_fields, token_from_fields};
    use crate::store::conformance::sample;

    #[test]
    fn a_token_survives_its_hash_fields() {
        let mut t = sample("t", "app", "alice");
        t.revoked_at = Some(i64::MAX);
        t.revoke_reason = Some(String::new());
        t.usage.count = 9;
        t.usage.last_ip = Some("::1".to_owned());
        let mut fields: std::collections::HashMap<String, String> = token_fields(&t)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        fields.insert("seq".to_owned(), "4".to_owned());
        assert_eq!(token_from_fields(fields).expect("decode"), (t, 4));
    }
}
