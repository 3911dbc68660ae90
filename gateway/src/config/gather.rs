//! Gathering: the I/O a policy needs besides its own files (read by `load`), done before
//! anything is built. Secrets (environment and files), upstream addresses (DNS), CA bundles
//! and signing-key files are read here, each problem reported at the line that names it;
//! building ([`super::compile`]) then only looks them up, so it does no I/O and a reload's
//! waiting happens here, on the thread that reloads (off the proxy's runtime; see
//! `GatewayState::reload_off_runtime`).
//!
//! The state store is the exception: it is opened while building, once, and carried across
//! reloads (`Carry`), so a reload that keeps the same `state:` opens nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::gathered::Gathered;
use crate::config::spec::{ConfigSpec, IncludeSpec, SecretSpec};
use crate::config::yaml::Location;
use crate::config::{Diagnostic, Parsed};
use crate::files::FileKind;
use crate::runtime::Secret;
use crate::upstream::resolve::lookup_blocking;

/// The host (without IPv6 brackets) and port an upstream URL names, when it names them.
pub(crate) fn upstream_target(uri: &http::Uri) -> Option<(&str, u16)> {
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return None,
    };
    let host = uri.host()?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Some((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Does the policy's I/O: see the module documentation.
pub(crate) fn gather(
    main: &Parsed<ConfigSpec>,
    includes: &[Parsed<IncludeSpec>],
    base: &Path,
    errors: &mut Vec<Diagnostic>,
) -> Gathered {
    let mut gathered = Gathered {
        secrets: resolve_secrets(main, includes, base, errors),
        ..Gathered::default()
    };
    let services = main
        .spec
        .services
        .iter()
        .chain(
            includes
                .iter()
                .flat_map(|include| include.spec.services.iter()),
        )
        .filter_map(|service| service.0.as_ref());
    let hosts_file = main
        .spec
        .hosts_file
        .as_ref()
        .map(|file| base.join(&file.value));
    for service in services {
        let mut files = Vec::new();
        super::steps::named_files(&service.value.request, &mut files);
        for (file, kind) in files {
            gathered.read(base.join(file), kind);
        }
        let Some(upstream) = service.value.upstream.present() else {
            continue;
        };
        let detail = upstream.value.detail();
        let urls = detail.url.iter().map(String::as_str).chain(
            detail
                .targets
                .iter()
                .flatten()
                .map(|target| target.value.url()),
        );
        for url in urls {
            let Ok(uri) = url.parse::<http::Uri>() else {
                continue;
            };
            if let Some((host, port)) = upstream_target(&uri) {
                gathered
                    .addresses
                    .entry((host.to_owned(), port))
                    .or_insert_with(|| lookup_blocking(host, port, hosts_file.as_deref()).ok());
            }
        }
        if let Some(ca_file) = &detail.ca_file {
            gathered.read(base.join(ca_file), FileKind::Certificates);
        }
    }
    if let Some(ca_file) = main
        .spec
        .redis
        .present()
        .and_then(|redis| redis.value.ca_file.as_ref())
    {
        gathered.read(base.join(&ca_file.value), FileKind::Certificates);
    }
    if let Some(issuer) = main.spec.saml_issuer.present() {
        for (file, kind) in super::saml_issuer::files(&issuer.value) {
            gathered.read(base.join(file), kind);
        }
    }
    for provider in main.spec.providers.values() {
        if let Some(key) = &provider.value.private_key {
            gathered.read(base.join(&key.value.file.value), FileKind::Key);
        }
    }
    if let Some(tls) = main.spec.tls.present() {
        for (file, kind) in super::tls_listener::files(&tls.value) {
            gathered.read(base.join(file), kind);
        }
    }
    if let Some(api) = main.spec.identity_api.present() {
        for (file, kind) in super::identity_api::files(&api.value) {
            gathered.read(base.join(file), kind);
        }
    }
    if let Some(token_service) = main.spec.token_service.present() {
        for key in &token_service.value.signing_keys {
            gathered.read(base.join(&key.value.file.value), FileKind::Key);
        }
        for (file, kind) in super::saml_bearer::files(&token_service.value) {
            gathered.read(base.join(file), kind);
        }
    }
    gathered
}

fn resolve_secrets(
    main: &Parsed<ConfigSpec>,
    includes: &[Parsed<IncludeSpec>],
    base: &Path,
    errors: &mut Vec<Diagnostic>,
) -> HashMap<String, Secret> {
    let mut out = HashMap::new();
    let mut origin: HashMap<String, (Arc<Path>, Location)> = HashMap::new();
    let all = std::iter::once((&main.file, &main.spec.secrets))
        .chain(includes.iter().map(|i| (&i.file, &i.spec.secrets)));
    for (file, secrets) in all {
        for (name, spec) in secrets {
            let at = |message: String| Diagnostic {
                file: file.clone(),
                loc: Some(spec.loc),
                path: format!("secrets.{name}"),
                message,
            };
            if let Some((f, l)) = origin.get(name) {
                errors.push(at(format!(
                    "duplicate secret \"{name}\" (first at {}:{l})",
                    f.display()
                )));
                continue;
            }
            origin.insert(name.clone(), (file.clone(), spec.loc));
            let value = match &spec.value {
                SecretSpec::Env(var) => match std::env::var(var) {
                    Ok(v) if !v.is_empty() => Some(v),
                    Ok(_) => {
                        errors.push(at(format!("environment variable {var} is empty")));
                        None
                    }
                    Err(_) => {
                        errors.push(at(format!("environment variable {var} is not set")));
                        None
                    }
                },
                SecretSpec::File(p) => {
                    let p = base.join(p);
                    match crate::files::read_bounded_text(&p, crate::files::FileKind::Secret) {
                        Ok(v) => {
                            let v = v.strip_suffix('\n').unwrap_or(&v);
                            let v = v.strip_suffix('\r').unwrap_or(v).to_owned();
                            if v.is_empty() {
                                errors.push(at(format!("secret file {} is empty", p.display())));
                                None
                            } else {
                                Some(v)
                            }
                        }
                        Err(e) => {
                            errors.push(at(e.to_string()));
                            None
                        }
                    }
                }
            };
            if let Some(v) = value {
                out.insert(name.clone(), Secret::new(&v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{compile, parse_text, Carry, LoadMode};

    fn parsed(text: &str) -> Parsed<ConfigSpec> {
        let mut errors = Vec::new();
        let parsed = parse_text::<ConfigSpec>(Arc::from(Path::new("p.yaml")), text, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        parsed.expect("parsed")
    }

    const POLICY: &str =
        "services:\n  - name: s\n    match: { path: / }\n    upstream: http://backend.test:8080\n";

    #[test]
    fn building_reads_addresses_from_gathering_not_from_dns() {
        let main = parsed(POLICY);
        // backend.test cannot resolve (RFC 2606); gathering says where it is.
        let mut gathered = Gathered::default();
        gathered.addresses.insert(
            ("backend.test".to_owned(), 8080),
            Some(vec![SocketAddr::from(([192, 0, 2, 1], 8080))]),
        );
        let mut errors = Vec::new();
        let runtime = compile::compile(
            &main,
            &[],
            &gathered,
            &Carry::default(),
            LoadMode::DryRun,
            1,
            &mut errors,
        )
        .expect("built");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            runtime.services[0].upstream.pool.members().targets[0].addr,
            SocketAddr::from(([192, 0, 2, 1], 8080))
        );
    }

    #[test]
    fn a_name_that_does_not_resolve_is_reported_at_its_upstream() {
        let main = parsed(POLICY);
        let mut errors = Vec::new();
        let gathered = gather(&main, &[], Path::new("."), &mut errors);
        assert_eq!(gathered.address("backend.test", 8080), None);
        let _ = compile::compile(
            &main,
            &[],
            &gathered,
            &Carry::default(),
            LoadMode::DryRun,
            1,
            &mut errors,
        );
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["p.yaml:4:15: cannot resolve upstream host \"backend.test\" (at services[0].upstream)"]
        );
    }
}
