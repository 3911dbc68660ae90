//! The values the state store keeps and is asked with: token and client records, filters,
//! revocations, usage batches, per-client statistics, counter windows and identity entries.

use std::net::IpAddr;

use serde::Serialize;

/// Access token or refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access" => Some(TokenKind::Access),
            "refresh" => Some(TokenKind::Refresh),
            _ => None,
        }
    }
}

/// How a token travels: a JWT signed by the gateway, or a random string stored hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    Jwt,
    Opaque,
}

impl TokenFormat {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TokenFormat::Jwt => "jwt",
            TokenFormat::Opaque => "opaque",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jwt" => Some(TokenFormat::Jwt),
            "opaque" => Some(TokenFormat::Opaque),
            _ => None,
        }
    }
}

/// How a token has been used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub count: u64,
    pub first_used_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_ip: Option<String>,
    pub distinct_ips: u64,
}

/// One issued token. `id` is the JWT's `jti`, or the hex SHA-256 of an opaque token (the
/// token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    pub format: TokenFormat,
    pub client_id: String,
    /// The resource owner: the role account of a jwt-bearer grant, or the client itself.
    pub subject: String,
    /// Space-separated, as in OAuth.
    pub scope: String,
    pub grant_type: String,
    /// The refresh token issued with this access token (or, for a refresh token, the one it
    /// replaced).
    pub refresh_id: Option<String>,
    /// Refresh rotation family: every token descended from one grant.
    pub family_id: Option<String>,
    /// What the token was exchanged for: `iss` and `jti` of the assertion.
    pub source: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Who revoked it: `provider`, `app_owner`, `subscriber`, `client`, `reuse`, `anomaly`.
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    /// A refresh token that has been exchanged (it is dead from then on).
    pub rotated_at: Option<i64>,
    pub usage: Usage,
    /// Why its usage looks unusual, once it does.
    pub flagged: Option<String>,
}

impl TokenRecord {
    /// Not revoked, not rotated, not expired at `now`.
    #[must_use]
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.rotated_at.is_none() && now < self.expires_at
    }

    /// `active`, `revoked`, `rotated` or `expired`.
    #[must_use]
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.rotated_at.is_some() {
            "rotated"
        } else if now >= self.expires_at {
            "expired"
        } else {
            "active"
        }
    }
}

/// A registered client as the store keeps it (the secret only as a digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRecord {
    pub id: String,
    #[serde(skip)]
    pub secret_sha256: Option<[u8; 32]>,
    pub grants: Vec<String>,
    pub scopes: Vec<String>,
    pub token_format: TokenFormat,
}

/// Which tokens a listing, export or bulk revocation is about. Empty fields match all.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub id: Option<String>,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub grant_type: Option<String>,
    pub family_id: Option<String>,
    pub kind: Option<TokenKind>,
    /// `active`, `revoked`, `rotated` or `expired`, judged at `now`.
    pub status: Option<String>,
    pub flagged: Option<bool>,
    pub now: i64,
    pub limit: usize,
    pub offset: usize,
}

impl TokenFilter {
    /// True when a record passes the filter (backends that cannot query use this).
    #[must_use]
    pub fn matches(&self, t: &TokenRecord) -> bool {
        self.id.as_ref().is_none_or(|v| *v == t.id)
            && self.client_id.as_ref().is_none_or(|v| *v == t.client_id)
            && self.subject.as_ref().is_none_or(|v| *v == t.subject)
            && self.grant_type.as_ref().is_none_or(|v| *v == t.grant_type)
            && self
                .family_id
                .as_ref()
                .is_none_or(|v| t.family_id.as_deref() == Some(v.as_str()))
            && self.kind.is_none_or(|k| k == t.kind)
            && self.status.as_ref().is_none_or(|s| s == t.status(self.now))
            && self.flagged.is_none_or(|f| f == t.flagged.is_some())
    }

    /// True when the filter names at least one of client, subject, family or id: bulk
    /// revocation refuses an empty filter (it would revoke everything).
    #[must_use]
    pub fn is_targeted(&self) -> bool {
        self.id.is_some()
            || self.client_id.is_some()
            || self.subject.is_some()
            || self.family_id.is_some()
    }
}

/// Who revokes and why.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub at: i64,
    pub by: String,
    pub reason: Option<String>,
}

/// Usage seen for one token since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub token_id: String,
    pub count: u64,
    pub first_used_at: i64,
    pub last_used_at: i64,
    pub last_ip: IpAddr,
    /// Addresses seen in this batch (deduplicated; the store counts the new ones).
    pub ips: Vec<IpAddr>,
}

/// Per-client totals for the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    pub client_id: String,
    pub tokens: u64,
    pub active: u64,
    pub revoked: u64,
    pub uses: u64,
    pub last_used_at: Option<i64>,
    pub flagged: u64,
}

impl ClientStats {
    /// Per-client totals of `tokens` at `now`, by client id (for backends that hold every
    /// record in hand; SQLite counts in SQL).
    pub fn tally<'a>(tokens: impl Iterator<Item = &'a TokenRecord>, now: i64) -> Vec<ClientStats> {
        let mut by: std::collections::HashMap<&str, ClientStats> = std::collections::HashMap::new();
        for t in tokens {
            let s = by.entry(&t.client_id).or_insert_with(|| ClientStats {
                client_id: t.client_id.clone(),
                ..ClientStats::default()
            });
            s.tokens += 1;
            s.active += u64::from(t.is_active(now));
            s.revoked += u64::from(t.revoked_at.is_some());
            s.uses += t.usage.count;
            s.flagged += u64::from(t.flagged.is_some());
            if let Some(l) = t.usage.last_used_at {
                s.last_used_at = Some(s.last_used_at.map_or(l, |x| x.max(l)));
            }
        }
        let mut out: Vec<ClientStats> = by.into_values().collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }
}

/// A counter's count in its current window and when that window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CounterWindow {
    pub count: u64,
    /// Unix seconds; from then on the next charge starts a new window at zero.
    pub resets_at: i64,
}

/// What a [`crate::store::CounterStore::charge`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CounterCharge {
    /// False when the charge would have passed the limit (nothing was added).
    pub allowed: bool,
    /// The window after the charge (or as it stands, when refused).
    pub window: CounterWindow,
}

/// Who is behind a client address, as an identity source (a VPN concentrator, a captive
/// portal) reported it, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityEntry {
    pub ip: IpAddr,
    pub username: String,
    pub groups: Vec<String>,
    /// The interface or zone the address was seen on, when the source says.
    pub interface: Option<String>,
    /// The longest the session may last, in seconds, as the source set it.
    pub session_timeout_secs: Option<i64>,
    /// How long the session may stay idle, in seconds, as the source set it.
    pub idle_timeout_secs: Option<i64>,
    /// Unix seconds; the entry is gone (not returned, purged) from then on. With an idle
    /// timeout it is the earlier of the session's end and the idle deadline, and traffic
    /// moves it on ([`super::IdentityStore::touch_identities`]).
    pub expires_at: i64,
    /// Unix seconds: the session's hard end, which traffic never moves.
    pub session_ends_at: i64,
}

/// Traffic seen from an active identity's address, to be written behind: it moves the
/// entry's idle deadline on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityTouch {
    pub ip: IpAddr,
    /// The user the traffic was admitted for: a touch never extends an entry that has been
    /// replaced by another user's since.
    pub username: String,
    /// Unix seconds of the last request seen.
    pub seen_at: i64,
}

impl IdentityEntry {
    /// When the entry expires if traffic is seen at `seen_at`: the idle deadline from then,
    /// never past the session's end, never earlier than it stands (touches arrive late and
    /// out of order).
    #[must_use]
    pub fn touched_expiry(&self, seen_at: i64) -> i64 {
        match self.idle_timeout_secs {
            Some(idle) => self
                .expires_at
                .max(seen_at.saturating_add(idle).min(self.session_ends_at)),
            None => self.expires_at,
        }
    }
}
