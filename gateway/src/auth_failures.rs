//! Brute-force protection for the gateway's own credentials: failed client authentications
//! at the token endpoint, failed admin tokens and failed users at the SAML issuer are
//! counted per client address and per client id or user name (GCRA buckets,
//! `client_limits.failed_auth_per_ip` / `failed_auth_per_client`).
//! Once a bucket is empty, every attempt from that address or for that id is answered `429`
//! with `Retry-After` before its credentials are even looked at, so guessing runs at the
//! refill rate whatever the attacker sends. Successful attempts count nothing.
//!
//! The buckets live in the gateway state, not the policy, so a reload does not unlock anyone.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use portcullis_assertions::gcra::{decide, Limit};
use portcullis_assertions::local_limiter::{Charge, LocalLimiter, Outcome};
use portcullis_assertions::rate_limit::{MonotonicClock, ProcessClock};

use crate::runtime::ClientLimits;

/// Addresses and ids tracked at most (idle ones are dropped first).
const MAX_TRACKED: usize = 100_000;

/// The failed-authentication buckets of this process.
#[derive(Debug)]
pub struct AuthFailures {
    limiter: LocalLimiter,
    clock: ProcessClock,
    /// Failures that could not be counted against their own buckets because the tracker was
    /// full of live ones (a flood of fresh ids or addresses), as one shared bucket at the
    /// per-client rate. Once it is empty, attempts whose buckets are not tracked wait too:
    /// under such a flood newcomers are refused rather than guessing freely (fail closed).
    overflow: Mutex<Option<u64>>,
}

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures {
            limiter: LocalLimiter::new(MAX_TRACKED),
            clock: ProcessClock,
            overflow: Mutex::new(None),
        }
    }
}

/// Which of the gateway's own credentials an attempt is against. Each surface counts its
/// addresses apart, so failures at the (public) token endpoint never lock an address out of
/// the admin API, nor the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The token service's client authentication (token, introspection, revocation).
    TokenEndpoint,
    /// The admin API's bearer token.
    Admin,
    /// The SAML issuer's HTTP Basic users (`/saml/token`); the id is the user name.
    SamlIssuer,
    /// The userauth API's HTTP Basic users and admin token (`/api/oper/userauth`); the id
    /// is the user name.
    Userauth,
    /// The OProxy broker's token endpoint; the id is the registration id.
    OProxy,
}

impl Surface {
    fn name(self) -> &'static str {
        match self {
            Surface::TokenEndpoint => "token",
            Surface::Admin => "admin",
            Surface::SamlIssuer => "saml",
            Surface::Userauth => "userauth",
            Surface::OProxy => "oproxy",
        }
    }
}

/// Who is trying: the client's address and, at the token endpoint, the client id it names.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub surface: Surface,
    pub ip: IpAddr,
    pub client_id: Option<&'a str>,
}

/// What an address's failures count against: an IPv4 address as it is, an IPv6 one by its
/// /64 (what one host or one site is given), so a guesser cannot take a fresh bucket for
/// each of the 2^64 addresses it holds.
fn address_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        v4 => v4,
    }
}

impl AuthFailures {
    fn buckets(&self, limits: &ClientLimits, attempt: &Attempt<'_>) -> [Option<Charge>; 2] {
        let charge = |limit: Limit, text: &str| Charge {
            limit,
            key: self.limiter.key(text),
            cost: 1,
        };
        [
            Some(charge(
                limits.failed_auth_per_ip,
                &format!(
                    "ip\0{}\0{}",
                    attempt.surface.name(),
                    address_bucket(attempt.ip)
                ),
            )),
            // Ids of different surfaces are different things (a client id, a user name).
            attempt.client_id.map(|id| {
                charge(
                    limits.failed_auth_per_client,
                    &format!("client\0{}\0{id}", attempt.surface.name()),
                )
            }),
        ]
    }

    /// How long the attempt must wait, when its address or client id has used up its
    /// failures; `None` when it may try.
    #[must_use]
    pub fn locked(&self, limits: &ClientLimits, attempt: &Attempt<'_>) -> Option<Duration> {
        let now = self.clock.now_nanos();
        let buckets = self.buckets(limits, attempt);
        let own = buckets
            .iter()
            .flatten()
            .filter_map(|bucket| {
                let decision = self.limiter.peek(bucket, now);
                (!decision.allowed).then(|| decision.retry_after.unwrap_or(decision.reset_after))
            })
            .max();
        if own.is_some() {
            return own;
        }
        let untracked = buckets
            .iter()
            .flatten()
            .any(|bucket| !self.limiter.tracks(bucket.key, now));
        if !untracked {
            return None;
        }
        let stored = *lock(&self.overflow);
        let decision = decide(limits.failed_auth_per_client, stored, now, 1);
        (!decision.allowed).then(|| decision.retry_after.unwrap_or(decision.reset_after))
    }

    /// Counts a failed attempt against its address and its client id.
    pub fn failed(&self, limits: &ClientLimits, attempt: &Attempt<'_>) {
        let now = self.clock.now_nanos();
        let mut uncounted = false;
        for bucket in self.buckets(limits, attempt).iter().flatten() {
            // Each bucket on its own: an address already locked still counts against the id.
            let outcome = self.limiter.charge(std::slice::from_ref(bucket), now);
            uncounted |= outcome == Outcome::Full;
        }
        if uncounted {
            let mut stored = lock(&self.overflow);
            if let Some(tat) = decide(limits.failed_auth_per_client, *stored, now, 1).new_tat {
                *stored = Some(tat);
            }
        }
    }
}

/// What an endpoint needs to apply the protection: the buckets, the policy's limits and who
/// is asking.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    pub failures: &'a AuthFailures,
    pub limits: &'a ClientLimits,
    pub surface: Surface,
    pub ip: IpAddr,
}

impl Gate<'_> {
    /// The wait for an attempt naming `client_id` (if it must wait).
    #[must_use]
    pub fn locked(&self, client_id: Option<&str>) -> Option<Duration> {
        self.failures.locked(
            self.limits,
            &Attempt {
                surface: self.surface,
                ip: self.ip,
                client_id,
            },
        )
    }

    /// Counts a failed attempt naming `client_id`.
    pub fn failed(&self, client_id: Option<&str>) {
        self.failures.failed(
            self.limits,
            &Attempt {
                surface: self.surface,
                ip: self.ip,
                client_id,
            },
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whole seconds for `Retry-After`, at least 1.
#[must_use]
pub fn retry_after_secs(wait: Duration) -> u64 {
    portcullis_assertions::rate_limit::headers::whole_seconds(wait).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_the_address_and_the_id_but_successes_count_nothing() {
        let failures = AuthFailures::default();
        let limits = ClientLimits {
            failed_auth_per_ip: Limit::per_minute(3),
            failed_auth_per_client: Limit::per_minute(2),
            ..ClientLimits::default()
        };
        let from = |ip: &str, id: Option<&'static str>| Attempt {
            surface: Surface::TokenEndpoint,
            ip: ip.parse().expect("ip"),
            client_id: id,
        };
        let attacker = from("203.0.113.9", Some("victim"));
        assert_eq!(failures.locked(&limits, &attacker), None);
        failures.failed(&limits, &attacker);
        failures.failed(&limits, &attacker);
        // The id has used its two failures: locked from any address.
        let wait = failures
            .locked(&limits, &from("198.51.100.1", Some("victim")))
            .expect("id locked");
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), wait.as_secs() + 1);
        // The address has one failure left for another id, then it is locked too.
        assert_eq!(
            failures.locked(&limits, &from("203.0.113.9", Some("other"))),
            None
        );
        failures.failed(&limits, &from("203.0.113.9", Some("other")));
        assert!(failures
            .locked(&limits, &from("203.0.113.9", None))
            .is_some());
        // Other addresses and ids are untouched.
        assert_eq!(
            failures.locked(&limits, &from("198.51.100.1", Some("other"))),
            None
        );
    }

    #[test]
    fn a_user_name_at_the_saml_issuer_is_not_the_client_id_of_the_same_name() {
        let failures = AuthFailures::default();
        let limits = ClientLimits {
            failed_auth_per_ip: Limit::per_minute(1000),
            failed_auth_per_client: Limit::per_minute(1),
            ..ClientLimits::default()
        };
        let at = |surface| Attempt {
            surface,
            ip: "198.51.100.3".parse().expect("ip"),
            client_id: Some("billing-app"),
        };
        failures.failed(&limits, &at(Surface::SamlIssuer));
        assert!(failures.locked(&limits, &at(Surface::SamlIssuer)).is_some());
        assert_eq!(failures.locked(&limits, &at(Surface::TokenEndpoint)), None);
    }

    #[test]
    fn an_ipv6_guesser_cannot_take_a_fresh_bucket_for_each_address_of_its_prefix() {
        let failures = AuthFailures::default();
        let limits = ClientLimits {
            failed_auth_per_ip: Limit::per_minute(3),
            failed_auth_per_client: Limit::per_minute(1000),
            ..ClientLimits::default()
        };
        // One host holds a whole /64: 2^64 addresses, each a fresh bucket if counted alone.
        for n in 1..=3u16 {
            let attempt = Attempt {
                surface: Surface::TokenEndpoint,
                ip: std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, 7, 0, 0, 0, n)),
                client_id: None,
            };
            failures.failed(&limits, &attempt);
        }
        let next = Attempt {
            surface: Surface::TokenEndpoint,
            ip: "2001:db8:7:7::9".parse().expect("ip"),
            client_id: Some("billing-app"),
        };
        assert!(
            failures.locked(&limits, &next).is_some(),
            "a fourth address of the same /64 is still the same guesser"
        );
        // Another /64 is another client.
        let other = Attempt {
            surface: Surface::TokenEndpoint,
            ip: "2001:db8:7:8::1".parse().expect("ip"),
            client_id: None,
        };
        assert_eq!(failures.locked(&limits, &other), None);
    }

    #[test]
    fn a_flood_of_fresh_ids_does_not_switch_the_protection_off() {
        fn from(id: &str) -> Attempt<'_> {
            Attempt {
                surface: Surface::TokenEndpoint,
                ip: "2001:db8::1".parse().expect("ip"),
                client_id: Some(id),
            }
        }
        let failures = AuthFailures::default();
        let limits = ClientLimits {
            failed_auth_per_ip: Limit::per_minute(u64::MAX),
            failed_auth_per_client: Limit::per_minute(1),
            ..ClientLimits::default()
        };
        // More fresh ids than the limiter tracks, each live for a minute after one failure.
        for n in 0..(MAX_TRACKED + MAX_TRACKED / 10) {
            failures.failed(&limits, &from(&format!("filler-{n}")));
        }
        failures.failed(&limits, &from("victim"));
        assert!(
            failures.locked(&limits, &from("victim")).is_some(),
            "the victim's failure was not counted: its shard was full"
        );
    }
}
