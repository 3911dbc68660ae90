//! The request as it goes upstream: its target, the peer, and the headers the gateway sets.

use std::fmt::Write as _;

use http::header::HOST;
use http::{HeaderName, HeaderValue, Uri};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::ErrorType;
use portcullis_assertions::Exchange;

use crate::credentials::{CredentialOutcome, CredentialPlan};
use crate::runtime::ForwardedHeaders;
use crate::runtime::{Service, Upstream};
use crate::upstream::Target;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// How the request reached the gateway, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The peer is a trusted proxy whose forwarding headers are kept.
    pub trusted_peer: bool,
    /// The client connection is TLS (a `tls:` listener).
    pub https: bool,
}

/// From a trusted proxy the chain so far is kept (every header line, in order) and the
/// peer appended; from anyone else the client's claims are dropped.
fn set_forwarding(
    req: &mut RequestHeader,
    mode: ForwardedHeaders,
    exchange: &Exchange,
    Arrival {
        trusted_peer,
        https,
    }: Arrival,
    original_host: Option<&HeaderValue>,
) -> Result<()> {
    let bad = |what: &str| Error::explain(ErrorType::InvalidHTTPHeader, format!("bad {what}"));
    let chain = |req: &RequestHeader, name: &HeaderName| {
        let mut out = String::new();
        if trusted_peer {
            for prior in req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
            {
                out.push_str(prior);
                out.push_str(", ");
            }
        }
        out
    };
    let proto = req
        .headers
        .get(&X_FORWARDED_PROTO)
        .filter(|_| trusted_peer)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(if https { "https" } else { "http" }));
    // X-Forwarded-Host only when the upstream's Host is not the client's.
    let host_replaced = req.headers.get(HOST) != original_host;
    let forwarded_host = original_host.filter(|_| host_replaced).cloned();
    if mode.forwarded {
        let mut value = chain(req, &FORWARDED);
        let node = match exchange.peer_ip {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
        };
        let _ = write!(
            value,
            "for={node};proto={}",
            proto.to_str().unwrap_or("http")
        );
        if let Some(host) = original_host.and_then(|h| h.to_str().ok()) {
            if host
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                let _ = write!(value, ";host=\"{host}\"");
            }
        }
        req.insert_header(
            FORWARDED,
            HeaderValue::from_str(&value).map_err(|_| bad("Forwarded"))?,
        )?;
    } else {
        req.remove_header(&FORWARDED);
    }
    if mode.x_forwarded {
        let mut value = chain(req, &X_FORWARDED_FOR);
        let _ = write!(value, "{}", exchange.peer_ip);
        req.insert_header(
            X_FORWARDED_FOR,
            HeaderValue::from_str(&value).map_err(|_| bad("X-Forwarded-For"))?,
        )?;
        req.insert_header(X_FORWARDED_PROTO, proto)?;
        // The upstream sees its own name in Host; tell it which one the client used.
        match forwarded_host {
            Some(host) => {
                req.insert_header(X_FORWARDED_HOST, host)?;
            }
            None => {
                req.remove_header(&X_FORWARDED_HOST);
            }
        }
        req.insert_header(X_REAL_IP, exchange.client_ip.to_string())?;
    } else {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_REAL_IP,
        ] {
            req.remove_header(name);
        }
    }
    Ok(())
}

/// The path and query to send upstream: the canonical `path` with the route's segments
/// taken off under `strip_prefix`, behind the upstream's base path.
#[must_use]
pub fn upstream_path(svc: &Service, path: &str, query: Option<&str>) -> String {
    let up = &svc.upstream;
    let rest = if up.strip_prefix {
        crate::path::strip_segments(path, svc.route_segments)
    } else {
        path
    };
    let mut out = String::with_capacity(up.base_path.len() + rest.len() + 1);
    out.push_str(&up.base_path);
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Builds the Pingora peer for one target of an upstream.
#[must_use]
pub fn peer_for(up: &Upstream, target: &Target) -> HttpPeer {
    let mut peer = HttpPeer::new(target.addr, up.tls, target.sni.clone());
    peer.options.connection_timeout = Some(up.connect_timeout);
    peer.options.read_timeout = Some(up.read_timeout);
    peer.options.verify_cert = up.verify_tls;
    peer.options.verify_hostname = up.verify_tls;
    peer.options.ca.clone_from(&up.ca);
    peer.group_key = up.pool_group;
    peer
}

/// Rewrites the head that goes upstream: path (the canonical one the router matched, so
/// the upstream reads what was routed), `Host` (the chosen target's `host`), the forwarding headers `mode` asks for
/// (`arrival`: whether the peer is a trusted proxy, whether the client came over TLS), and the
/// caller's credentials as `credentials` decided (stripped or forwarded; what happened is
/// returned for the log). Outbound signing runs after this, so a signature the gateway adds
/// is never stripped and covers the head as it goes.
pub fn prepare_upstream_request(
    svc: &Service,
    host: &HeaderValue,
    forwarded_path: Option<&str>,
    req: &mut RequestHeader,
    exchange: &Exchange,
    (mode, arrival): (ForwardedHeaders, Arrival),
    credentials: &CredentialPlan,
) -> Result<Option<CredentialOutcome>> {
    let up = &svc.upstream;
    // An absolute-form target (Pingora has checked that its authority is the Host) goes
    // upstream in origin form; the upstream is told the host in Host / X-Forwarded-Host.
    let absolute = !req.raw_path().starts_with(b"/");
    let original_host = req.headers.get(HOST).cloned();
    if up.strip_prefix || !up.base_path.is_empty() || forwarded_path.is_some() || absolute {
        let path = forwarded_path.unwrap_or_else(|| req.uri.path());
        let target = upstream_path(svc, path, req.uri.query());
        req.set_uri(
            target
                .parse::<Uri>()
                .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad upstream path"))?,
        );
    }
    if !up.preserve_host {
        req.insert_header(HOST, host.clone())?;
    }
    set_forwarding(req, mode, exchange, arrival, original_host.as_ref())?;
    let outcome = credentials.apply(&svc.credentials, req)?;
    // Hop-by-hop (RFC 9110 §11.7.2): meant for this gateway whatever the policy says. Pingora
    // drops it on its own path; the buffering forwarder sends this head as it is.
    req.remove_header(&http::header::PROXY_AUTHORIZATION);
    Ok(outcome)
}
