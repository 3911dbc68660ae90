//! `upstream:` → [`Upstream`]: the settings its targets share and its [`Pool`] (targets,
//! balancing, health checks, retries).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use portcullis_assertions::template::Template;

use crate::config::context::CompileContext;
use crate::config::gather::upstream_target;
use crate::config::spec::{
    BalanceSpec, HealthCheckSpec, PassiveHealthSpec, RetriesSpec, TargetSpec, UpstreamDetail,
    UpstreamSpec,
};
use crate::config::yaml::{Location, Spanned};
use crate::runtime::Upstream;
use crate::upstream::{
    ActiveCheck, Balance, Passive, Pool, PoolSettings, Resolve, RetryPolicy, Target, MAX_TARGETS,
    MAX_WEIGHT,
};

/// One target URL, taken apart.
struct ParsedTarget {
    tls: bool,
    host: String,
    port: u16,
    authority: HeaderValue,
    base_path: String,
    weight: u32,
}

pub(super) fn compile_upstream(
    spec: &Spanned<UpstreamSpec>,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<Upstream> {
    let detail = spec.value.detail();
    let loc = spec.loc;
    let written: Vec<Spanned<TargetSpec>> = match (&detail.url, &detail.targets) {
        (Some(url), None) => vec![Spanned {
            value: TargetSpec::Url(url.clone()),
            loc,
        }],
        (None, Some(targets)) if !targets.is_empty() => targets.clone(),
        (None, Some(_)) => {
            context.err(loc, path, "targets needs at least one target URL");
            return None;
        }
        (Some(_), Some(_)) => {
            context.err(
                loc,
                path,
                "an upstream has either `url` or `targets`, not both",
            );
            return None;
        }
        (None, None) => {
            context.err(loc, path, "an upstream needs `url` or `targets`");
            return None;
        }
    };
    if written.len() > MAX_TARGETS {
        context.err(
            loc,
            path,
            format!("an upstream has at most {MAX_TARGETS} targets"),
        );
        return None;
    }
    let mut parsed = Vec::new();
    for (index, target) in written.iter().enumerate() {
        let at = if detail.targets.is_some() {
            format!("{path}.targets[{index}]")
        } else {
            path.to_owned()
        };
        parsed.push(parse_target(&target.value, target.loc, &at, context)?);
    }
    let first = &parsed[0];
    for (index, other) in parsed.iter().enumerate().skip(1) {
        if other.tls != first.tls || other.base_path != first.base_path {
            context.err(
                written[index].loc,
                &format!("{path}.targets[{index}]"),
                "every target of an upstream needs the same scheme and base path as the first",
            );
            return None;
        }
    }
    let resolve = detail.resolve_every.as_ref().map(|every| every.value.0);
    let target_locs: Vec<Location> = written.iter().map(|target| target.loc).collect();
    let targets = pool_targets(
        &parsed,
        &target_locs,
        resolve.is_some(),
        &detail,
        path,
        context,
    )?;
    let settings = pool_settings(&detail, first, resolve, loc, path, context)?;
    let retries = retry_policy(detail.retries.as_ref(), path, context);

    let mut pool_group = 0;
    let ca = match &detail.ca_file {
        Some(file) => match parse_ca_file(
            &context.base.join(file),
            context.gathered.file(&context.base.join(file)),
        ) {
            Ok((ca, group)) => {
                pool_group = group;
                Some(ca)
            }
            Err(message) => {
                context.err(loc, path, message);
                None
            }
        },
        None => None,
    };
    let url = written
        .iter()
        .map(|target| target.value.url())
        .collect::<Vec<_>>()
        .join(", ");
    Some(Upstream {
        url,
        tls: first.tls,
        verify_tls: detail.verify_tls.unwrap_or(true),
        preserve_host: detail.preserve_host.unwrap_or(false),
        base_path: first.base_path.clone(),
        strip_prefix: detail.strip_prefix.unwrap_or(false),
        connect_timeout: detail
            .connect_timeout
            .map_or(Duration::from_secs(5), |t| t.0),
        read_timeout: detail.read_timeout.map_or(Duration::from_secs(60), |t| t.0),
        ca,
        pool_group,
        pool: Arc::new(Pool::new(settings, retries, targets)),
    })
}

fn parse_target(
    target: &TargetSpec,
    loc: Location,
    at: &str,
    context: &mut CompileContext<'_>,
) -> Option<ParsedTarget> {
    let url = target.url();
    let Ok(uri) = url.parse::<http::Uri>() else {
        context.err(
            loc,
            at,
            format!("\"{url}\" is not a URL (e.g. http://127.0.0.1:9000)"),
        );
        return None;
    };
    let Some((bare_host, port)) = upstream_target(&uri) else {
        let problem = if uri.host().is_none() && matches!(uri.scheme_str(), Some("http" | "https"))
        {
            format!("upstream \"{url}\" has no host")
        } else {
            format!("upstream \"{url}\" must start with http:// or https://")
        };
        context.err(loc, at, problem);
        return None;
    };
    if uri.query().is_some() {
        context.err(loc, at, "an upstream URL cannot have a query string");
    }
    let weight = target.weight().unwrap_or(1);
    if !(1..=MAX_WEIGHT).contains(&weight) {
        context.err(
            loc,
            &format!("{at}.weight"),
            format!("a weight is between 1 and {MAX_WEIGHT}"),
        );
    }
    let host = uri.host().unwrap_or(bare_host);
    let authority = uri.authority().map_or(host, http::uri::Authority::as_str);
    Some(ParsedTarget {
        tls: uri.scheme_str() == Some("https"),
        host: bare_host.to_owned(),
        port,
        authority: HeaderValue::from_str(authority).ok()?,
        base_path: uri.path().trim_end_matches('/').to_owned(),
        weight,
    })
}

/// The URLs an upstream names (its `url`, or each target's).
pub(super) fn target_urls(spec: &UpstreamSpec) -> Vec<String> {
    let detail = spec.detail();
    detail
        .url
        .into_iter()
        .chain(
            detail
                .targets
                .into_iter()
                .flatten()
                .map(|target| target.value.url().to_owned()),
        )
        .collect()
}

/// The pool's targets at load: each URL's address, or every address of the name that
/// `resolve_every` follows.
fn pool_targets(
    parsed: &[ParsedTarget],
    locs: &[Location],
    follow_name: bool,
    detail: &UpstreamDetail,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<Vec<Arc<Target>>> {
    let sni_for = |target: &ParsedTarget| detail.sni.clone().unwrap_or_else(|| target.host.clone());
    let mut targets: Vec<Arc<Target>> = Vec::new();
    for (target, loc) in parsed.iter().zip(locs.iter().copied()) {
        let addresses: Vec<SocketAddr> = if follow_name {
            context
                .gathered
                .all_addresses(&target.host, target.port)
                .map(|found| found.iter().take(MAX_TARGETS).copied().collect())
                .unwrap_or_default()
        } else {
            context
                .gathered
                .address(&target.host, target.port)
                .into_iter()
                .collect()
        };
        if addresses.is_empty() {
            context.err(
                loc,
                path,
                format!("cannot resolve upstream host \"{}\"", target.host),
            );
            return None;
        }
        for addr in addresses {
            if targets.iter().any(|t| t.addr == addr) {
                context.err(
                    loc,
                    path,
                    format!("two targets of this upstream are the same address {addr}"),
                );
                return None;
            }
            targets.push(Arc::new(Target::new(
                addr,
                target.weight,
                target.authority.clone(),
                sni_for(target),
            )));
        }
    }
    Some(targets)
}

fn pool_settings(
    detail: &UpstreamDetail,
    first: &ParsedTarget,
    resolve: Option<Duration>,
    loc: Location,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<PoolSettings> {
    let balance_at = detail.balance.as_ref().map_or(loc, |b| b.loc);
    let hash_at = detail.hash_on.as_ref().map_or(balance_at, |h| h.loc);
    let balance = match (detail.balance.as_ref().map(|b| b.value), &detail.hash_on) {
        (None | Some(BalanceSpec::RoundRobin), None) => Balance::RoundRobin,
        (Some(BalanceSpec::LeastConnections), None) => Balance::LeastConnections,
        (Some(BalanceSpec::ConsistentHash), Some(key)) => {
            let key = &key.value;
            match Template::parse(key, &context.registry) {
                Ok(template) if template.is_constant() => {
                    context.err(
                        hash_at,
                        &format!("{path}.hash_on"),
                        format!("hash_on \"{key}\" has no variable, so every request would go to one target"),
                    );
                    return None;
                }
                Ok(template) => Balance::ConsistentHash(template),
                Err(why) => {
                    context.err(hash_at, &format!("{path}.hash_on"), why.0);
                    return None;
                }
            }
        }
        (Some(BalanceSpec::ConsistentHash), None) => {
            context.err(
                balance_at,
                &format!("{path}.hash_on"),
                "consistent_hash needs hash_on: the key, e.g. \"${client.id}\"",
            );
            return None;
        }
        (_, Some(_)) => {
            context.err(
                hash_at,
                &format!("{path}.hash_on"),
                "hash_on goes with `balance: consistent_hash`",
            );
            return None;
        }
    };
    if let Some(limit) = detail
        .max_connections
        .as_ref()
        .filter(|limit| limit.value == 0)
    {
        context.err(
            limit.loc,
            &format!("{path}.max_connections"),
            "max_connections is at least 1 (leave it out for no limit)",
        );
    }
    let resolve_at = detail.resolve_every.as_ref().map_or(loc, |every| every.loc);
    if detail.resolve_every.is_some() && detail.targets.is_some() {
        context.err(
            resolve_at,
            &format!("{path}.resolve_every"),
            "resolve_every follows the host name of `url`; with `targets` list the addresses instead",
        );
        return None;
    }
    let resolve = match resolve {
        Some(every) if every < Duration::from_secs(1) => {
            context.err(
                resolve_at,
                &format!("{path}.resolve_every"),
                "resolve_every is at least 1s",
            );
            return None;
        }
        Some(every) => Some(Resolve {
            host: first.host.clone(),
            port: first.port,
            every,
            host_header: first.authority.clone(),
            sni: detail.sni.clone().unwrap_or_else(|| first.host.clone()),
        }),
        None => None,
    };
    Some(PoolSettings {
        balance,
        max_connections: detail
            .max_connections
            .as_ref()
            .map(|limit| limit.value)
            .filter(|limit| *limit > 0),
        passive: passive(detail.passive_health.as_ref(), path, context),
        health_check: detail
            .health_check
            .as_ref()
            .and_then(|check| active_check(&check.value, check.loc, path, context)),
        resolve,
    })
}

fn active_check(
    spec: &HealthCheckSpec,
    loc: Location,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Option<ActiveCheck> {
    let at = format!("{path}.health_check");
    if !spec.path.starts_with('/') || spec.path.parse::<http::Uri>().is_err() {
        context.err(
            loc,
            &format!("{at}.path"),
            format!("\"{}\" is not a path such as /healthz", spec.path),
        );
        return None;
    }
    let check = ActiveCheck {
        path: spec.path.clone(),
        interval: spec
            .interval
            .as_ref()
            .map_or(Duration::from_secs(5), |d| d.0),
        timeout: spec
            .timeout
            .as_ref()
            .map_or(Duration::from_secs(2), |d| d.0),
        healthy_after: spec.healthy_after.unwrap_or(2),
        unhealthy_after: spec.unhealthy_after.unwrap_or(3),
    };
    if check.interval < Duration::from_millis(100) {
        context.err(loc, &format!("{at}.interval"), "interval is at least 100ms");
    }
    if check.timeout.is_zero() || check.timeout > check.interval.max(Duration::from_secs(1)) {
        context.err(
            loc,
            &format!("{at}.timeout"),
            "timeout is more than 0 and at most the interval",
        );
    }
    for (value, name) in [
        (check.healthy_after, "healthy_after"),
        (check.unhealthy_after, "unhealthy_after"),
    ] {
        if !(1..=100).contains(&value) {
            context.err(
                loc,
                &format!("{at}.{name}"),
                format!("{name} is between 1 and 100"),
            );
        }
    }
    Some(check)
}

fn passive(
    spec: Option<&Spanned<PassiveHealthSpec>>,
    path: &str,
    context: &mut CompileContext<'_>,
) -> Passive {
    let default = Passive::default();
    let Some(Spanned { value: spec, loc }) = spec else {
        return default;
    };
    let loc = *loc;
    let passive = Passive {
        failures: spec.failures.unwrap_or(default.failures),
        ejection: spec.ejection.as_ref().map_or(default.ejection, |d| d.0),
    };
    if passive.failures > 1000 {
        context.err(
            loc,
            &format!("{path}.passive_health.failures"),
            "failures is at most 1000 (0 turns passive ejection off)",
        );
    }
    if passive.ejection < Duration::from_secs(1) || passive.ejection > Duration::from_secs(3600) {
        context.err(
            loc,
            &format!("{path}.passive_health.ejection"),
            "ejection is between 1s and 1h",
        );
    }
    passive
}

fn retry_policy(
    spec: Option<&Spanned<RetriesSpec>>,
    path: &str,
    context: &mut CompileContext<'_>,
) -> RetryPolicy {
    let default = RetryPolicy::default();
    let Some(Spanned { value: spec, loc }) = spec else {
        return default;
    };
    let loc = *loc;
    let policy = RetryPolicy {
        attempts: spec.attempts.unwrap_or(default.attempts),
        percent: spec.budget_percent.unwrap_or(default.percent),
        min_per_second: spec.min_per_second.unwrap_or(default.min_per_second),
    };
    for (value, max, name) in [
        (policy.attempts, 5, "attempts"),
        (policy.percent, 100, "budget_percent"),
        (policy.min_per_second, 1000, "min_per_second"),
    ] {
        if value > max {
            context.err(
                loc,
                &format!("{path}.retries.{name}"),
                format!("{name} is at most {max}"),
            );
        }
    }
    policy
}

/// Parses PEM CA certificates (read by gathering), checking each parses as X.509.
/// Also returns a digest of the certificates, to keep connection pools apart.
fn parse_ca_file(
    path: &Path,
    pem: Result<&[u8], String>,
) -> Result<(Arc<[pingora::utils::tls::WrappedX509]>, u64), String> {
    let mut pem = pem?;
    let mut out = Vec::new();
    let mut digest = <sha2::Sha256 as sha2::Digest>::new();
    for der in rustls_pemfile::certs(&mut pem) {
        let der = der.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if x509_parser::parse_x509_certificate(&der).is_err() {
            return Err(format!(
                "ca_file {} holds a certificate that does not parse",
                path.display()
            ));
        }
        sha2::Digest::update(&mut digest, &der);
        out.push(pingora::utils::tls::WrappedX509::new(
            der.to_vec(),
            pingora::utils::tls::parse_x509,
        ));
    }
    if out.is_empty() {
        return Err(format!(
            "ca_file {} holds no PEM certificate",
            path.display()
        ));
    }
    let digest = sha2::Digest::finalize(digest);
    let mut group = [0u8; 8];
    group.copy_from_slice(&digest[..8]);
    Ok((Arc::from(out), u64::from_le_bytes(group).max(1)))
}
