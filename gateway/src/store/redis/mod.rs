//! The Redis store: the state of a fleet of gateways in one Redis (standalone or
//! Cluster), so a token issued by one gateway is known to all, a revocation reaches all,
//! and a one-time marker is used once across all.
//!
//! **Key layout and hash tags.** Every key starts with the configured prefix `P`.
//! - Tokens, clients and the revocation epoch share the hash tag `{P:tokens}`: a
//!   revocation by filter changes many tokens and the epoch in one step, a rotation must
//!   see the revocation, so they must live in one slot (a Cluster gives them failover,
//!   not sharding). `{P:tokens}:tok:ID` (a hash per token), `:ips:ID` (its addresses),
//!   `:ids` (every id by insertion), `:seq`, `:epoch`, `:clients`.
//! - One-time markers, counters and identities, written per request or per login, are
//!   spread over [`BUCKETS`] buckets by a hash of their name, each bucket its own tag
//!   (`{P:once:N}`, `{P:count:N}`, `{P:ident:N}`), so they spread over a Cluster's masters;
//!   an entry and its bucket's expiry index (`:exp`, for the purge) move together.
//!
//! **Time.** Expiry is judged by the `now` the caller passes, against the expiry stored
//! with each entry, as in the other backends; the TTL Redis keeps on a marker or identity
//! only lets it drop what is surely dead without waiting for the purge.
//!
//! Every call goes through [`RedisClient`]: a deadline per call and the circuit breaker;
//! an unreachable Redis is [`StoreError::Unavailable`], and callers fail closed on it.

mod documents;
mod records;
mod scripts;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    ClientRecord, ClientStats, CounterCharge, CounterStore, CounterWindow, IdentityEntry,
    IdentityStore, IdentityTouch, OnceStore, Revocation, RevocationStore, Revoked, StoreError,
    StoreResult, TokenFilter, TokenRecord, TokenStore, UsageDelta, MAX_LISTED_COUNTERS,
};
use crate::redis::{RedisClient, RedisSettings, RedisUnavailable, RedisUrl};

/// Buckets one-time markers and identities are spread over (each its own hash tag).
pub const BUCKETS: u64 = 16;

/// The least deadline of a script that walks a whole key space (listing, revoking by
/// filter, purging): off the request path, it may take longer than a request may wait.
const BULK_DEADLINE: Duration = Duration::from_secs(2);

/// The pub/sub channel on which a revocation announces the epoch it moved the store to.
/// Channels are global to a Redis deployment (not per database): the prefix keeps two
/// deployments sharing one Redis apart.
#[must_use]
pub fn revocation_channel(prefix: &str) -> String {
    format!("{prefix}:revocations")
}

/// The key prefix unless the policy sets `redis.key_prefix`.
pub const DEFAULT_PREFIX: &str = "portcullis";

impl From<RedisUnavailable> for StoreError {
    fn from(error: RedisUnavailable) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}

/// What `state: redis://...` and the policy's `redis:` block say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    pub settings: RedisSettings,
    pub key_prefix: String,
}

impl RedisStoreConfig {
    /// Default options for a URL.
    #[must_use]
    pub fn new(url: RedisUrl) -> RedisStoreConfig {
        RedisStoreConfig {
            settings: RedisSettings::new(url),
            key_prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Connects and waits (up to the connect timeout) for `PING`. Synchronous: it runs
    /// when a policy is first loaded.
    ///
    /// # Errors
    /// Redis does not answer, or the options cannot make a client.
    pub fn open(&self) -> StoreResult<RedisStore> {
        let client = RedisClient::connect(&self.settings)?;
        let deadline = self.settings.connect_timeout.max(self.settings.timeout);
        super::wait(async { Ok(client.ping_within(deadline).await?) })?;
        RedisStore::new(client, &self.key_prefix)
    }

    /// `check --connect`: `PING`, then how many tokens the prefix holds; writes nothing.
    ///
    /// # Errors
    /// Redis does not answer.
    pub fn verify(&self) -> StoreResult<String> {
        let store = self.open()?;
        let mut count = ::redis::cmd("ZCARD");
        count.arg(store.tokens_key("ids"));
        let tokens: u64 = super::wait(async { Ok(store.client.query(count).await?) })?;
        let mut info = ::redis::cmd("INFO");
        info.arg("server");
        let info: String = super::wait(async { Ok(store.client.query(info).await?) })?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map_or("unknown", str::trim)
                .to_owned()
        };
        Ok(format!(
            "answered PING; Redis {} ({} mode); {tokens} token record(s) under key prefix \"{}\"",
            field("redis_version"),
            field("redis_mode"),
            self.key_prefix
        ))
    }
}

#[derive(Debug, Clone)]
pub struct RedisStore {
    client: RedisClient,
    prefix: String,
    /// `{P:tokens}`: the tag and base of every token key.
    tokens: String,
}

/// Which bucketed kind of entry.
#[derive(Clone, Copy)]
enum Bucketed {
    Once,
    Counter,
    Identity,
}

impl Bucketed {
    fn name(self) -> &'static str {
        match self {
            Bucketed::Once => "once",
            Bucketed::Counter => "count",
            Bucketed::Identity => "ident",
        }
    }
}

impl RedisStore {
    /// A store over `client` whose keys all start with `prefix`.
    ///
    /// # Errors
    /// The prefix holds `{` or `}` (it would break the hash tags).
    pub fn new(client: RedisClient, prefix: &str) -> StoreResult<RedisStore> {
        if prefix.contains(['{', '}']) || prefix.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "redis key prefix \"{prefix}\" must be non-empty, without braces"
            )));
        }
        Ok(RedisStore {
            client,
            prefix: prefix.to_owned(),
            tokens: format!("{{{prefix}:tokens}}"),
        })
    }

    #[must_use]
    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    fn bulk_deadline(&self) -> Duration {
        self.client.timeout().max(BULK_DEADLINE)
    }

    fn token_key(&self, id: &str) -> String {
        format!("{}:tok:{id}", self.tokens)
    }

    fn tokens_key(&self, name: &str) -> String {
        format!("{}:{name}", self.tokens)
    }

    /// The bucket of `name`: (entry key base, expiry index key). FNV-1a, so every gateway
    /// (whatever its build) puts a name in the same bucket.
    fn bucket(&self, kind: Bucketed, name: &str) -> (String, String) {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.bucket_keys(kind, hash % BUCKETS)
    }

    fn bucket_keys(&self, kind: Bucketed, n: u64) -> (String, String) {
        let tag = format!("{{{}:{}:{n}}}", self.prefix, kind.name());
        (format!("{tag}:e:"), format!("{tag}:exp"))
    }

    async fn purge_buckets(&self, kind: Bucketed, before: i64) -> StoreResult<u64> {
        let mut gone = 0;
        for n in 0..BUCKETS {
            let (base, index) = self.bucket_keys(kind, n);
            gone += self
                .client
                .run_script_within::<u64>(
                    self.bulk_deadline(),
                    &scripts::PURGE_BUCKET,
                    vec![index],
                    vec![base.into_bytes(), before.to_string().into_bytes()],
                )
                .await?;
        }
        Ok(gone)
    }

    async fn all_tokens(&self) -> StoreResult<Vec<(TokenRecord, u64)>> {
        let hashes: Vec<HashMap<String, String>> = self
            .client
            .run_script_within(
                self.bulk_deadline(),
                &scripts::ALL_TOKENS,
                vec![self.tokens_key("ids")],
                vec![self.tokens.clone().into_bytes()],
            )
            .await?;
        hashes.into_iter().map(records::token_from_fields).collect()
    }
}

/// Milliseconds from `now` to `expires_at` (0 when already past), for a key's TTL.
fn ttl_ms(expires_at: i64, now: i64) -> i64 {
    expires_at.saturating_sub(now).max(0).saturating_mul(1000)
}

fn arg(value: impl ToString) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn put_client(&self, client: &ClientRecord) -> StoreResult<()> {
        let mut command = ::redis::cmd("HSET");
        command
            .arg(self.tokens_key("clients"))
            .arg(&client.id)
            .arg(records::client_json(client)?);
        Ok(self.client.query::<()>(command).await?)
    }

    async fn client(&self, id: &str) -> StoreResult<Option<ClientRecord>> {
        let mut command = ::redis::cmd("HGET");
        command.arg(self.tokens_key("clients")).arg(id);
        let json: Option<String> = self.client.query(command).await?;
        json.as_deref().map(records::client_from_json).transpose()
    }

    async fn clients(&self) -> StoreResult<Vec<ClientRecord>> {
        let mut command = ::redis::cmd("HVALS");
        command.arg(self.tokens_key("clients"));
        let all: Vec<String> = self.client.query(command).await?;
        let mut clients = all
            .iter()
            .map(|json| records::client_from_json(json))
            .collect::<StoreResult<Vec<_>>>()?;
        clients.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(clients)
    }

    async fn insert_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let mut args = vec![arg(&token.id)];
        for (name, value) in records::token_fields(token) {
            args.push(arg(name));
            args.push(value.into_bytes());
        }
        let inserted: u64 = self
            .client
            .run_script(
                &scripts::INSERT_TOKEN,
                vec![
                    self.token_key(&token.id),
                    self.tokens_key("ids"),
                    self.tokens_key("seq"),
                ],
                args,
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Corrupt(format!(
                "token id {} already exists",
                token.id
            )));
        }
        Ok(())
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let mut command = ::redis::cmd("HGETALL");
        command.arg(self.token_key(id));
        let fields: HashMap<String, String> = self.client.query(command).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        records::token_from_fields(fields).map(|(token, _)| Some(token))
    }

    async fn find_tokens(&self, filter: &TokenFilter) -> StoreResult<Vec<TokenRecord>> {
        let mut found: Vec<(TokenRecord, u64)> = self
            .all_tokens()
            .await?
            .into_iter()
            .filter(|(t, _)| filter.matches(t))
            .collect();
        found.sort_by(|a, b| b.0.issued_at.cmp(&a.0.issued_at).then(b.1.cmp(&a.1)));
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        Ok(found
            .into_iter()
            .skip(filter.offset)
            .take(limit)
            .map(|(t, _)| t)
            .collect())
    }

    async fn mark_rotated(&self, id: &str, at: i64) -> StoreResult<bool> {
        let rotated: u64 = self
            .client
            .run_script(
                &scripts::MARK_ROTATED,
                vec![self.token_key(id)],
                vec![arg(at)],
            )
            .await?;
        Ok(rotated == 1)
    }

    async fn record_usage(&self, batch_id: &str, batch: &[UsageDelta]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut args = vec![
            self.tokens.clone().into_bytes(),
            arg(super::usage_batch_marker(batch_id)),
            arg(super::USAGE_BATCH_MEMORY_SECS),
        ];
        for d in batch {
            args.extend([
                arg(&d.token_id),
                arg(d.count),
                arg(d.first_used_at),
                arg(d.last_used_at),
                arg(d.last_ip),
                arg(d.ips.len()),
            ]);
            args.extend(d.ips.iter().map(arg));
        }
        Ok(self
            .client
            .run_script::<()>(&scripts::RECORD_USAGE, vec![self.tokens_key("ids")], args)
            .await?)
    }

    async fn flag(&self, id: &str, reason: &str) -> StoreResult<()> {
        Ok(self
            .client
            .run_script::<()>(&scripts::FLAG, vec![self.token_key(id)], vec![arg(reason)])
            .await?)
    }

    async fn client_stats(&self, now: i64) -> StoreResult<Vec<ClientStats>> {
        let tokens = self.all_tokens().await?;
        Ok(ClientStats::tally(tokens.iter().map(|(t, _)| t), now))
    }

    async fn purge_expired_tokens(&self, before: i64) -> StoreResult<u64> {
        Ok(self
            .client
            .run_script_within(
                self.bulk_deadline(),
                &scripts::PURGE_TOKENS,
                vec![self.tokens_key("ids")],
                vec![self.tokens.clone().into_bytes(), arg(before)],
            )
            .await?)
    }
}

#[async_trait]
impl RevocationStore for RedisStore {
    async fn revoke(&self, filter: &TokenFilter, how: &Revocation) -> StoreResult<Revoked> {
        let mut args = vec![
            self.tokens.clone().into_bytes(),
            arg(how.at),
            arg(&how.by),
            arg(how.reason.as_deref().unwrap_or("")),
            arg(u8::from(how.reason.is_some())),
            arg(filter.now),
            arg(filter.status.as_deref().unwrap_or("")),
            arg(match filter.flagged {
                None => "",
                Some(true) => "1",
                Some(false) => "0",
            }),
        ];
        let equal = [
            ("id", filter.id.as_deref()),
            ("client_id", filter.client_id.as_deref()),
            ("subject", filter.subject.as_deref()),
            ("grant_type", filter.grant_type.as_deref()),
            ("family_id", filter.family_id.as_deref()),
            ("kind", filter.kind.map(super::TokenKind::as_str)),
        ];
        for (field, value) in equal {
            if let Some(value) = value {
                args.push(arg(field));
                args.push(arg(value));
            }
        }
        let (epoch, mut ids): (u64, Vec<String>) = self
            .client
            .run_script_within(
                self.bulk_deadline(),
                &scripts::REVOKE,
                vec![self.tokens_key("ids"), self.tokens_key("epoch")],
                args,
            )
            .await?;
        ids.sort();
        // Every gateway following the channel drops its verified tokens now; one that misses
        // the message sees the epoch move on its next poll.
        let announce = ::redis::cmd("PUBLISH")
            .arg(revocation_channel(&self.prefix))
            .arg(epoch)
            .clone();
        if let Err(error) = self.client.query::<i64>(announce).await {
            log::warn!("revocation epoch {epoch} not announced ({error}); other gateways will see it when they poll");
        }
        Ok(Revoked { ids, epoch })
    }

    async fn revocation_epoch(&self) -> StoreResult<u64> {
        let mut command = ::redis::cmd("GET");
        command.arg(self.tokens_key("epoch"));
        let epoch: Option<u64> = self.client.query(command).await?;
        Ok(epoch.unwrap_or(0))
    }
}

#[async_trait]
impl OnceStore for RedisStore {
    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> StoreResult<bool> {
        let (base, index) = self.bucket(Bucketed::Once, key);
        let used: u64 = self
            .client
            .run_script(
                &scripts::USE_ONCE,
                vec![format!("{base}{key}"), index],
                vec![
                    arg(key),
                    arg(expires_at),
                    arg(now),
                    arg(ttl_ms(expires_at, now)),
                ],
            )
            .await?;
        Ok(used == 1)
    }

    async fn purge_expired_markers(&self, before: i64) -> StoreResult<u64> {
        self.purge_buckets(Bucketed::Once, before).await
    }
}

#[async_trait]
impl CounterStore for RedisStore {
    async fn charge(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window_end: i64,
        now: i64,
    ) -> StoreResult<CounterCharge> {
        let (base, index) = self.bucket(Bucketed::Counter, key);
        let (allowed, count, resets_at): (u8, u64, i64) = self
            .client
            .run_script(
                &scripts::CHARGE,
                vec![format!("{base}{key}"), index],
                vec![
                    arg(key),
                    arg(by),
                    arg(limit),
                    arg(window_end),
                    arg(now),
                    arg(ttl_ms(window_end, now).max(1)),
                ],
            )
            .await?;
        Ok(CounterCharge {
            allowed: allowed == 1,
            window: CounterWindow { count, resets_at },
        })
    }

    async fn counter(&self, key: &str, now: i64) -> StoreResult<Option<CounterWindow>> {
        let (base, _) = self.bucket(Bucketed::Counter, key);
        let mut command = ::redis::cmd("HMGET");
        command
            .arg(format!("{base}{key}"))
            .arg("count")
            .arg("resets_at");
        let (count, resets_at): (Option<u64>, Option<i64>) = self.client.query(command).await?;
        Ok(count
            .zip(resets_at)
            .filter(|(_, resets_at)| *resets_at > now)
            .map(|(count, resets_at)| CounterWindow { count, resets_at }))
    }

    async fn counters(&self, prefix: &str, now: i64) -> StoreResult<Vec<(String, CounterWindow)>> {
        let mut running = Vec::new();
        for n in 0..BUCKETS {
            let (base, index) = self.bucket_keys(Bucketed::Counter, n);
            let found: Vec<(String, u64, i64)> = self
                .client
                .run_script_within(
                    self.bulk_deadline(),
                    &scripts::COUNTERS_IN_BUCKET,
                    vec![index],
                    vec![
                        base.into_bytes(),
                        arg(now),
                        arg(prefix),
                        arg(MAX_LISTED_COUNTERS),
                    ],
                )
                .await?;
            running.extend(
                found
                    .into_iter()
                    .map(|(key, count, resets_at)| (key, CounterWindow { count, resets_at })),
            );
        }
        running.sort_by(|a, b| a.0.cmp(&b.0));
        running.truncate(MAX_LISTED_COUNTERS);
        Ok(running)
    }

    async fn reset_counter(&self, key: &str, now: i64) -> StoreResult<bool> {
        let (base, index) = self.bucket(Bucketed::Counter, key);
        let reset: u8 = self
            .client
            .run_script(
                &scripts::RESET_COUNTER,
                vec![format!("{base}{key}"), index],
                vec![arg(key), arg(now)],
            )
            .await?;
        Ok(reset == 1)
    }

    async fn purge_expired_counters(&self, before: i64) -> StoreResult<u64> {
        self.purge_buckets(Bucketed::Counter, before).await
    }
}

#[async_trait]
impl IdentityStore for RedisStore {
    async fn put_identity(&self, entry: &IdentityEntry) -> StoreResult<()> {
        let name = entry.ip.to_string();
        let (base, index) = self.bucket(Bucketed::Identity, &name);
        // The TTL is reckoned from this gateway's clock (put has no `now`); reads judge
        // expiry by the stored `expires_at` whatever the TTL says.
        let ttl = ttl_ms(entry.expires_at, super::now_secs());
        Ok(self
            .client
            .run_script::<()>(
                &scripts::PUT_EXPIRING,
                vec![format!("{base}{name}"), index],
                vec![
                    arg(&name),
                    records::identity_json(entry)?.into_bytes(),
                    arg(entry.expires_at),
                    arg(ttl),
                ],
            )
            .await?)
    }

    async fn identity(&self, ip: IpAddr, now: i64) -> StoreResult<Option<IdentityEntry>> {
        let name = ip.to_string();
        let (base, _) = self.bucket(Bucketed::Identity, &name);
        let mut command = ::redis::cmd("GET");
        command.arg(format!("{base}{name}"));
        let json: Option<String> = self.client.query(command).await?;
        Ok(json
            .as_deref()
            .map(records::identity_from_json)
            .transpose()?
            .filter(|entry| entry.expires_at > now))
    }

    async fn remove_identity(&self, ip: IpAddr) -> StoreResult<bool> {
        let name = ip.to_string();
        let (base, index) = self.bucket(Bucketed::Identity, &name);
        let removed: u64 = self
            .client
            .run_script(
                &scripts::REMOVE_EXPIRING,
                vec![format!("{base}{name}"), index],
                vec![arg(&name)],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn identities(&self, now: i64) -> StoreResult<Vec<IdentityEntry>> {
        let mut live = Vec::new();
        for n in 0..BUCKETS {
            let (base, index) = self.bucket_keys(Bucketed::Identity, n);
            let values: Vec<String> = self
                .client
                .run_script_within(
                    self.bulk_deadline(),
                    &scripts::LIVE_IN_BUCKET,
                    vec![index],
                    vec![base.into_bytes(), arg(now)],
                )
                .await?;
            for json in values {
                let entry = records::identity_from_json(&json)?;
                if entry.expires_at > now {
                    live.push(entry);
                }
            }
        }
        live.sort_by_key(|entry| entry.ip);
        Ok(live)
    }

    async fn touch_identities(&self, touches: &[IdentityTouch]) -> StoreResult<u64> {
        // One script per bucket (its entries share a hash tag, so one call may hold them),
        // at most TOUCHES_PER_CALL at a time so one call never holds Redis for long.
        const TOUCHES_PER_CALL: usize = 256;
        let mut by_bucket: HashMap<String, Vec<(String, [Vec<u8>; 3])>> = HashMap::new();
        for touch in touches {
            let name = touch.ip.to_string();
            let (base, index) = self.bucket(Bucketed::Identity, &name);
            let key = format!("{base}{name}");
            by_bucket
                .entry(index)
                .or_default()
                .push((key, [arg(&name), arg(&touch.username), arg(touch.seen_at)]));
        }
        let mut moved = 0;
        for (index, entries) in by_bucket {
            for chunk in entries.chunks(TOUCHES_PER_CALL) {
                let mut keys = vec![index.clone()];
                let mut args = vec![arg(super::now_secs())];
                for (key, touch) in chunk {
                    keys.push(key.clone());
                    args.extend(touch.iter().cloned());
                }
                moved += self
                    .client
                    .run_script::<u64>(&scripts::TOUCH_IDENTITIES, keys, args)
                    .await?;
            }
        }
        Ok(moved)
    }

    async fn purge_expired_identities(&self, before: i64) -> StoreResult<u64> {
        self.purge_buckets(Bucketed::Identity, before).await
    }
}

#[cfg(test)]
mod tests;
