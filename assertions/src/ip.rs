//! `allow_ip` / `deny_ip`, and the client-address resolution they rely on.
//!
//! The client address is the TCP peer unless the peer is a trusted proxy, in which case
//! `X-Forwarded-For` is walked from the right, skipping trusted hops: the first untrusted
//! address is the client. An attacker can prepend anything to that header, so nothing left
//! of the first untrusted hop is believed.

use std::net::IpAddr;

use http::StatusCode;
use ipnet::IpNet;

use crate::exchange::Exchange;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, Request};

/// A list of CIDR blocks, IPv4 and IPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList {
    nets: Vec<IpNet>,
}

/// Treats `::ffff:a.b.c.d` as `a.b.c.d`, so IPv4 rules hold on dual-stack listeners.
#[must_use]
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl IpList {
    #[must_use]
    pub fn new(nets: Vec<IpNet>) -> Self {
        IpList {
            nets: nets.iter().map(IpNet::trunc).collect(),
        }
    }

    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// The client address for a request from `peer` carrying `forwarded_for` headers.
#[must_use]
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &IpList,
) -> IpAddr {
    let peer = canonical_ip(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // An unparseable hop ends the chain we can believe.
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical_ip(sock.ip()));
    }
    None
}

/// The compiled `allow_ip` step: only listed client addresses pass.
#[derive(Debug)]
pub struct AllowIp {
    list: IpList,
    refusal: Rejection,
}

impl AllowIp {
    #[must_use]
    pub fn new(list: IpList) -> Self {
        AllowIp {
            list,
            refusal: Rejection::new(
                StatusCode::FORBIDDEN,
                "ip-not-allowed",
                "the client address is not allowed",
            ),
        }
    }
}

impl Assertion for AllowIp {
    fn kind(&self) -> &'static str {
        "allow_ip"
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::REQUEST
    }

    fn on_request(&self, _req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let client = x.client_ip;
        x.note(|| format!("client address {client}"));
        if self.list.contains(x.client_ip) {
            Verdict::Continue
        } else {
            Verdict::Reject(self.refusal.clone())
        }
    }
}

/// The compiled `deny_ip` step: listed client addresses are refused.
#[derive(Debug)]
pub struct DenyIp {
    list: IpList,
    refusal: Rejection,
}

impl DenyIp {
    #[must_use]
    pub fn new(list: IpList) -> Self {
        DenyIp {
            list,
            refusal: Rejection::new(
                StatusCode::FORBIDDEN,
                "ip-denied",
                "the client address is denied",
            ),
        }
    }
}

impl Assertion for DenyIp {
    fn kind(&self) -> &'static str {
        "deny_ip"
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::REQUEST
    }

    fn on_request(&self, _req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let client = x.client_ip;
        x.note(|| format!("client address {client}"));
        if self.list.contains(x.client_ip) {
            Verdict::Reject(self.refusal.clone())
        } else {
            Verdict::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(cidrs: &[&str]) -> IpList {
        IpList::new(cidrs.iter().map(|c| c.parse().expect("cidr")).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn lists_match_v4_v6_and_mapped_addresses() {
        let l = list(&["10.0.0.0/8", "2001:db8::/32", "192.168.1.7/32"]);
        assert!(l.contains(ip("10.1.2.3")));
        assert!(l.contains(ip("::ffff:10.1.2.3")));
        assert!(l.contains(ip("2001:db8:1::5")));
        assert!(l.contains(ip("192.168.1.7")));
        assert!(!l.contains(ip("192.168.1.8")));
        assert!(!l.contains(ip("11.0.0.1")));
        assert!(!l.contains(ip("2001:db9::1")));
    }

    #[test]
    fn host_bits_in_a_cidr_are_ignored() {
        assert!(list(&["10.1.2.3/8"]).contains(ip("10.200.0.1")));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = list(&["10.0.0.0/8"]);
        let xff = ["203.0.113.9, 10.0.0.2"];
        // From an untrusted peer the header is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.1"), xff.into_iter(), &trusted),
            ip("198.51.100.1")
        );
        // From a trusted peer: the rightmost untrusted hop.
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff.into_iter(), &trusted),
            ip("203.0.113.9")
        );
        // A spoofed left part is not believed.
        let spoofed = ["1.1.1.1, 203.0.113.9, 10.0.0.2"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), spoofed.into_iter(), &trusted),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last good hop.
        let garbage = ["nonsense, 10.0.0.2"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), garbage.into_iter(), &trusted),
            ip("10.0.0.2")
        );
        // Several header lines, ports and brackets.
        let lines = ["203.0.113.9:5555", "[2001:db8::1]:443"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), lines.into_iter(), &list(&["10.0.0.0/8"])),
            ip("2001:db8::1")
        );
    }
}
