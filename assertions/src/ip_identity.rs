//! `require_ip_identity`: the client's address must belong to a user an identity source (a
//! DHCP server, a NAC, through the userauth API) registered as active, optionally in one of
//! the step's groups and on one of its interfaces.
//!
//! The client address is the one trusted-proxy resolution left in the [`Exchange`]. Who is
//! behind an address is the [`IdentityDirectory`]'s business: the gateway supplies one that
//! answers from a small, short-lived local cache and otherwise reads its state store. The
//! store read is the step's own awaited I/O ([`Assertion::awaits`]), so only a cache miss
//! costs a round trip, and the step itself stays synchronous. A request from an active
//! user is reported back ([`IdentityDirectory::seen`]) as traffic for the idle timeout,
//! which the directory writes behind in batches.
//!
//! Sets `${identity.user}`, `${identity.groups}` (comma-separated, as the userauth API
//! shows them) and `${identity.interface}` (unset when the source named none). Refusals are
//! 403 with a code per reason (`ip-identity-unknown`, `ip-identity-group`,
//! `ip-identity-interface`); a store that cannot answer is 503 `ip-identity-unavailable`
//! (fail closed).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::StatusCode;

use crate::{Assertion, AwaitedWork, Exchange, Phases, Rejection, Request, VarId, Verdict};

/// An active user, as the directory knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveIdentity {
    pub user: Arc<str>,
    pub groups: Vec<Arc<str>>,
    /// The groups joined with `,`, made once: the value of `${identity.groups}`.
    pub groups_joined: Arc<str>,
    pub interface: Option<Arc<str>>,
}

impl ActiveIdentity {
    #[must_use]
    pub fn new(user: &str, groups: &[String], interface: Option<&str>) -> ActiveIdentity {
        ActiveIdentity {
            user: Arc::from(user),
            groups: groups.iter().map(|g| Arc::from(g.as_str())).collect(),
            groups_joined: Arc::from(groups.join(",")),
            interface: interface.map(Arc::from),
        }
    }
}

/// Who is behind an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityLookup {
    Active(Arc<ActiveIdentity>),
    /// No active user has this address.
    Unknown,
    /// The store could not be asked.
    Unavailable,
}

/// A future that reads one address's identity.
pub type IdentityFetch = Pin<Box<dyn Future<Output = IdentityLookup> + Send + 'static>>;

/// Answers who is behind an address, for `require_ip_identity`.
pub trait IdentityDirectory: Send + Sync + fmt::Debug {
    /// What is known about `ip` without I/O; `None` when the store must be asked.
    fn cached(&self, ip: IpAddr) -> Option<IdentityLookup>;

    /// Asks the store about `ip` (and remembers the answer for [`Self::cached`]).
    fn fetch(&self, ip: IpAddr) -> IdentityFetch;

    /// A request from `ip` came while `identity` was active there: traffic, for the idle
    /// timeout. Must be cheap (the directory writes it behind).
    fn seen(&self, ip: IpAddr, identity: &ActiveIdentity);
}

/// The variables `require_ip_identity` sets.
#[derive(Debug, Clone, Copy)]
pub struct IpIdentityVars {
    pub user: VarId,
    pub groups: VarId,
    pub interface: VarId,
}

/// The compiled `require_ip_identity` step.
#[derive(Debug)]
pub struct RequireIpIdentity {
    /// Any one of these groups lets the user in; empty: any active user.
    groups: Vec<String>,
    /// Any one of these interfaces; empty: any.
    interfaces: Vec<String>,
    directory: Arc<dyn IdentityDirectory>,
    vars: IpIdentityVars,
}

impl RequireIpIdentity {
    #[must_use]
    pub fn new(
        groups: Vec<String>,
        interfaces: Vec<String>,
        directory: Arc<dyn IdentityDirectory>,
        vars: IpIdentityVars,
    ) -> RequireIpIdentity {
        RequireIpIdentity {
            groups,
            interfaces,
            directory,
            vars,
        }
    }

    fn decide(&self, lookup: IdentityLookup, x: &mut Exchange) -> Verdict {
        let client = x.client_ip;
        let identity = match lookup {
            IdentityLookup::Active(identity) => identity,
            IdentityLookup::Unknown => {
                x.note(|| format!("no active user at {client}"));
                return Verdict::Reject(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "ip-identity-unknown",
                    "the client address does not belong to an active user",
                ));
            }
            IdentityLookup::Unavailable => {
                return Verdict::Reject(Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ip-identity-unavailable",
                    "the identity table cannot be read now; try again shortly",
                ));
            }
        };
        // Any request from the address is traffic, whatever this step's groups say.
        self.directory.seen(client, &identity);
        x.note(|| format!("{client} is {}", identity.user));
        if !self.groups.is_empty()
            && !identity
                .groups
                .iter()
                .any(|g| self.groups.iter().any(|wanted| **g == **wanted))
        {
            return Verdict::Reject(Rejection::new(
                StatusCode::FORBIDDEN,
                "ip-identity-group",
                format!(
                    "the user at the client address is in none of the groups {}",
                    self.groups.join(", ")
                ),
            ));
        }
        if !self.interfaces.is_empty()
            && !identity
                .interface
                .as_deref()
                .is_some_and(|i| self.interfaces.iter().any(|wanted| wanted == i))
        {
            return Verdict::Reject(Rejection::new(
                StatusCode::FORBIDDEN,
                "ip-identity-interface",
                format!(
                    "the user at the client address is on none of the interfaces {}",
                    self.interfaces.join(", ")
                ),
            ));
        }
        x.set(self.vars.user, identity.user.clone());
        x.set(self.vars.groups, identity.groups_joined.clone());
        if let Some(interface) = &identity.interface {
            x.set(self.vars.interface, interface.clone());
        }
        Verdict::Continue
    }
}

impl Assertion for RequireIpIdentity {
    fn kind(&self) -> &'static str {
        "require_ip_identity"
    }

    /// It reads no credential of the caller's, but it authenticated the caller: the
    /// service strips the caller's `Authorization` by default, as after any other such step.
    fn credential_places(&self) -> Option<crate::CredentialPlaces> {
        Some(crate::CredentialPlaces::of(self.kind()))
    }

    fn phases(&self) -> Phases {
        Phases {
            awaits_io: true,
            ..Phases::REQUEST
        }
    }

    fn awaits(&self, _req: &Request<'_>, x: &mut Exchange) -> Option<AwaitedWork> {
        if self.directory.cached(x.client_ip).is_some() {
            return None;
        }
        let fetch = self.directory.fetch(x.client_ip);
        Some(Box::pin(
            async move { Box::new(fetch.await) as crate::Awaited },
        ))
    }

    fn on_request(&self, _req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let lookup = x
            .take_awaited::<IdentityLookup>()
            .or_else(|| self.directory.cached(x.client_ip))
            // Neither fetched nor cached (the cache entry went between the two calls):
            // fail as a store failure does.
            .unwrap_or(IdentityLookup::Unavailable);
        self.decide(lookup, x)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::VarRegistry;

    /// A directory over a fixed table that counts store reads and traffic.
    #[derive(Debug, Default)]
    struct Table {
        users: HashMap<IpAddr, Arc<ActiveIdentity>>,
        cache: Mutex<HashMap<IpAddr, IdentityLookup>>,
        fetches: Mutex<usize>,
        seen: Mutex<Vec<IpAddr>>,
        down: bool,
    }

    impl IdentityDirectory for Table {
        fn cached(&self, ip: IpAddr) -> Option<IdentityLookup> {
            self.cache.lock().expect("lock").get(&ip).cloned()
        }
        fn fetch(&self, ip: IpAddr) -> IdentityFetch {
            *self.fetches.lock().expect("lock") += 1;
            let answer = if self.down {
                IdentityLookup::Unavailable
            } else {
                self.users.get(&ip).map_or(IdentityLookup::Unknown, |u| {
                    IdentityLookup::Active(u.clone())
                })
            };
            self.cache.lock().expect("lock").insert(ip, answer.clone());
            Box::pin(async move { answer })
        }
        fn seen(&self, ip: IpAddr, _identity: &ActiveIdentity) {
            self.seen.lock().expect("lock").push(ip);
        }
    }

    fn table(down: bool) -> Arc<Table> {
        let mut users = HashMap::new();
        users.insert(
            "203.0.113.5".parse().expect("ip"),
            Arc::new(ActiveIdentity::new(
                "alice",
                &["staff".to_owned(), "wifi".to_owned()],
                Some("wan"),
            )),
        );
        users.insert(
            "2001:db8::5".parse().expect("ip"),
            Arc::new(ActiveIdentity::new("bob", &[], None)),
        );
        Arc::new(Table {
            users,
            down,
            ..Table::default()
        })
    }

    /// Runs the step as the gateway's driver does: the awaited work first, when it has any.
    fn run(step: &RequireIpIdentity, ip: &str, registry: &VarRegistry) -> (Verdict, Exchange) {
        let ip: IpAddr = ip.parse().expect("ip");
        let mut x = Exchange::new(registry.len(), ip, ip);
        let mut parts = http::Request::new(()).into_parts().0;
        let mut req = Request {
            head: &mut parts,
            body: None,
        };
        if let Some(work) = step.awaits(&req, &mut x) {
            let answer = futures_lite(work);
            x.put_awaited(answer);
        }
        let verdict = step.on_request(&mut req, &mut x);
        (verdict, x)
    }

    /// The awaited futures here are ready at once.
    fn futures_lite(work: AwaitedWork) -> crate::Awaited {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut work = work;
        match work.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(answer) => answer,
            std::task::Poll::Pending => panic!("the test directory answers at once"),
        }
    }

    fn step(
        groups: &[&str],
        interfaces: &[&str],
        directory: Arc<Table>,
    ) -> (RequireIpIdentity, VarRegistry) {
        let mut registry = VarRegistry::new();
        let vars = IpIdentityVars {
            user: registry.define("identity.user"),
            groups: registry.define("identity.groups"),
            interface: registry.define("identity.interface"),
        };
        (
            RequireIpIdentity::new(
                groups.iter().map(|g| (*g).to_owned()).collect(),
                interfaces.iter().map(|i| (*i).to_owned()).collect(),
                directory,
                vars,
            ),
            registry,
        )
    }

    fn code(verdict: &Verdict) -> Option<(StatusCode, &'static str)> {
        match verdict {
            Verdict::Continue => None,
            Verdict::Reject(r) => Some((r.status, r.code)),
        }
    }

    #[test]
    fn an_active_user_passes_and_sets_the_variables() {
        let directory = table(false);
        let (step, registry) = step(&[], &[], directory.clone());
        let (verdict, x) = run(&step, "203.0.113.5", &registry);
        assert!(verdict.is_continue());
        let var = |name: &str| {
            x.get(registry.lookup(name).expect("var"))
                .map(str::to_owned)
        };
        assert_eq!(var("identity.user").as_deref(), Some("alice"));
        assert_eq!(var("identity.groups").as_deref(), Some("staff,wifi"));
        assert_eq!(var("identity.interface").as_deref(), Some("wan"));
        // The second request is answered from the cache, and both count as traffic.
        assert!(run(&step, "203.0.113.5", &registry).0.is_continue());
        assert_eq!(*directory.fetches.lock().expect("lock"), 1);
        assert_eq!(directory.seen.lock().expect("lock").len(), 2);
        let (verdict, x) = run(&step, "2001:db8::5", &registry);
        assert!(verdict.is_continue());
        assert_eq!(
            x.get(registry.lookup("identity.groups").expect("var")),
            Some("")
        );
        assert_eq!(
            x.get(registry.lookup("identity.interface").expect("var")),
            None
        );
    }

    #[test]
    fn unknown_addresses_wrong_groups_and_interfaces_are_refused_each_with_its_code() {
        let (any, registry) = step(&[], &[], table(false));
        assert_eq!(
            code(&run(&any, "203.0.113.6", &registry).0),
            Some((StatusCode::FORBIDDEN, "ip-identity-unknown"))
        );
        let (group, registry) = step(&["admins", "wifi"], &[], table(false));
        assert!(run(&group, "203.0.113.5", &registry).0.is_continue());
        assert_eq!(
            code(&run(&group, "2001:db8::5", &registry).0),
            Some((StatusCode::FORBIDDEN, "ip-identity-group"))
        );
        let (interface, registry) = step(&[], &["lan", "wan"], table(false));
        assert!(run(&interface, "203.0.113.5", &registry).0.is_continue());
        let (verdict, x) = run(&interface, "2001:db8::5", &registry);
        assert_eq!(
            code(&verdict),
            Some((StatusCode::FORBIDDEN, "ip-identity-interface"))
        );
        assert_eq!(
            x.get(registry.lookup("identity.user").expect("var")),
            None,
            "a refused user sets nothing"
        );
        let (lan_only, registry) = step(&[], &["lan"], table(false));
        assert_eq!(
            code(&run(&lan_only, "203.0.113.5", &registry).0),
            Some((StatusCode::FORBIDDEN, "ip-identity-interface"))
        );
    }

    #[test]
    fn a_store_that_cannot_answer_fails_closed() {
        let (any, registry) = step(&[], &[], table(true));
        assert_eq!(
            code(&run(&any, "203.0.113.5", &registry).0),
            Some((StatusCode::SERVICE_UNAVAILABLE, "ip-identity-unavailable"))
        );
        assert_eq!(any.phases().beyond_heads().len(), 1, "never inside any/all");
    }
}
