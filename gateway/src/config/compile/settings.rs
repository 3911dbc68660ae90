//! Start-time settings, client limits, secrets and HMAC key sets.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_assertions::hmac::{HmacKey, KeySet, SecretBytes};

use crate::config::spec::{AccessLogSpec, ConfigSpec, IncludeSpec};
use crate::config::{Diagnostic, Parsed};
use crate::runtime::{AccessLogTarget, Settings};

use crate::config::context::CompileContext;

/// The names of every secret the files define.
pub(super) fn defined_secrets<'p>(
    main: &'p Parsed<ConfigSpec>,
    includes: &'p [Parsed<IncludeSpec>],
) -> impl Iterator<Item = &'p str> {
    main.spec
        .secrets
        .keys()
        .chain(includes.iter().flat_map(|i| i.spec.secrets.keys()))
        .map(String::as_str)
}

/// Time requests in flight get after SIGTERM, unless the policy says otherwise.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn compile_settings(spec: &ConfigSpec, context: &mut CompileContext<'_>) -> Settings {
    let default_listen: SocketAddr = super::DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8080)));
    let default_admin: SocketAddr = super::DEFAULT_ADMIN_LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9901)));
    // With HTTPS listeners and no `listen:`, there is no plain-HTTP proxy listener.
    let tls_listen = spec
        .tls
        .present()
        .map(|tls| tls.value.listen.0.clone())
        .unwrap_or_default();
    let listen = spec.listen.present().map_or_else(
        || {
            if tls_listen.is_empty() {
                vec![default_listen]
            } else {
                Vec::new()
            }
        },
        |l| l.0.clone(),
    );
    let admin_listen = spec
        .admin
        .present()
        .map(|a| a.listen.as_ref().map_or(default_admin, |l| l.0));
    let workers = spec.workers.present().map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        |w| w.value,
    );
    if let Some(w) = spec.workers.present() {
        if w.value == 0 || w.value > 256 {
            context.err(w.loc, "workers", "workers must be between 1 and 256");
        }
    }
    let access_log = match spec.access_log.present() {
        None | Some(AccessLogSpec::Stdout) => AccessLogTarget::Stdout,
        Some(AccessLogSpec::Off) => AccessLogTarget::Off,
        Some(AccessLogSpec::File(p)) => {
            // Relative to the policy file, like every other path in it.
            let path = context.base.join(p);
            if !path.parent().is_some_and(Path::is_dir) {
                context.errors.push(Diagnostic {
                    file: context.file.clone(),
                    loc: None,
                    path: "access_log".to_owned(),
                    message: format!(
                        "the folder of the access log {} does not exist",
                        path.display()
                    ),
                });
            }
            AccessLogTarget::File(path)
        }
    };
    let run_as = match (&spec.user, &spec.group) {
        (None, Some(g)) => {
            context.err(
                g.loc,
                "group",
                "group needs user: the gateway drops to that user's identity",
            );
            None
        }
        (None, None) => None,
        (Some(user), group) => {
            match crate::privileges::resolve(&user.value, group.as_ref().map(|g| g.value.as_str()))
            {
                Ok(run_as) => Some(run_as),
                Err(e) => {
                    let loc = group
                        .as_ref()
                        .filter(|_| e.contains("group"))
                        .map_or(user.loc, |g| g.loc);
                    context.err(loc, if e.contains("group") { "group" } else { "user" }, e);
                    None
                }
            }
        }
    };
    let drain_timeout = spec
        .drain_timeout
        .as_ref()
        .map_or(DEFAULT_DRAIN_TIMEOUT, |t| t.value.0);
    if let Some(given) = &spec.drain_timeout {
        if given.value.0 < Duration::from_secs(1) || given.value.0 > Duration::from_secs(3600) {
            context.err(
                given.loc,
                "drain_timeout",
                "drain_timeout is between 1s and 1h",
            );
        }
    }
    Settings {
        listen,
        tls_listen,
        admin_listen,
        workers,
        access_log,
        run_as,
        drain_timeout,
    }
}

/// The client connection limits, defaults filled in.
pub(super) fn compile_client_limits(
    spec: &ConfigSpec,
    context: &mut CompileContext<'_>,
) -> crate::runtime::ClientLimits {
    let mut limits = crate::runtime::ClientLimits::default();
    let Some(given) = spec.client_limits.present() else {
        return limits;
    };
    let loc = given.loc;
    let given = &given.value;
    let durations = [
        (
            &given.header_timeout,
            &mut limits.header_timeout,
            "header_timeout",
        ),
        (
            &given.idle_timeout,
            &mut limits.idle_timeout,
            "idle_timeout",
        ),
        (
            &given.body_timeout,
            &mut limits.body_timeout,
            "body_timeout",
        ),
    ];
    for (value, slot, name) in durations {
        if let Some(d) = value {
            if d.0.is_zero() {
                context.err(
                    loc,
                    &format!("client_limits.{name}"),
                    format!("{name} must be longer than 0"),
                );
            }
            *slot = d.0;
        }
    }
    if let Some(rate) = &given.body_min_rate {
        limits.body_min_rate = rate.0;
    }
    if let Some(size) = &given.max_header_bytes {
        if size.0 < 1024 {
            context.err(
                loc,
                "client_limits.max_header_bytes",
                "max_header_bytes must be at least 1KiB",
            );
        }
        limits.max_header_bytes = usize::try_from(size.0).unwrap_or(usize::MAX);
    }
    for (value, slot, name) in [
        (
            given.max_connections,
            &mut limits.max_connections,
            "max_connections",
        ),
        (
            given.max_connections_per_ip,
            &mut limits.max_connections_per_ip,
            "max_connections_per_ip",
        ),
    ] {
        if let Some(n) = value {
            if n == 0 {
                context.err(
                    loc,
                    &format!("client_limits.{name}"),
                    format!("{name} must be at least 1"),
                );
            }
            *slot = n;
        }
    }
    for (value, slot, name) in [
        (
            &given.failed_auth_per_ip,
            &mut limits.failed_auth_per_ip,
            "failed_auth_per_ip",
        ),
        (
            &given.failed_auth_per_client,
            &mut limits.failed_auth_per_client,
            "failed_auth_per_client",
        ),
    ] {
        if let Some(rate) = value {
            let (count, period) = rate.0;
            match portcullis_assertions::gcra::Limit::new(count, period, count) {
                Ok(limit) => *slot = limit,
                Err(invalid) => context.err(loc, &format!("client_limits.{name}"), invalid.0),
            }
        }
    }
    limits
}

/// Builds every named key set, resolving each key's secrets.
pub(super) fn compile_key_sets(
    main: &Parsed<ConfigSpec>,
    includes: &[Parsed<IncludeSpec>],
    context: &mut CompileContext<'_>,
) {
    let all = std::iter::once((&main.file, &main.spec.keys))
        .chain(includes.iter().map(|i| (&i.file, &i.spec.keys)));
    for (file, sets) in all {
        context.file = file.clone();
        for (name, set) in sets {
            if context.key_sets.contains_key(name) {
                context.err(
                    set.loc,
                    &format!("keys.{name}"),
                    format!("duplicate key set \"{name}\""),
                );
                continue;
            }
            let mut keys = Vec::new();
            let mut seen = HashSet::new();
            for (i, key) in set.value.iter().enumerate() {
                let path = format!("keys.{name}[{i}]");
                let k = &key.value;
                if !seen.insert(k.access_key.clone()) {
                    context.err(
                        key.loc,
                        &path,
                        format!("access key {} is listed twice", k.access_key),
                    );
                }
                if k.secrets.is_empty() {
                    context.err(key.loc, &path, "a key needs at least one secret");
                }
                let secrets: Vec<SecretBytes> = k
                    .secrets
                    .iter()
                    .filter_map(|s| context.secret(s, &format!("{path}.secrets")))
                    .map(|s| SecretBytes(Arc::from(s.expose().as_bytes())))
                    .collect();
                let attributes = k
                    .attributes
                    .iter()
                    .filter_map(|(a, v)| {
                        context
                            .registry
                            .lookup(&format!("client.{a}"))
                            .map(|id| (id, Arc::from(v.as_str())))
                    })
                    .collect();
                keys.push(HmacKey {
                    access_key: Arc::from(k.access_key.as_str()),
                    client: Arc::from(k.client.as_str()),
                    secrets,
                    attributes,
                });
            }
            context
                .key_sets
                .insert(name.clone(), Arc::new(KeySet::new(keys)));
        }
    }
}
