//! Spec → runtime: resolves secrets, upstream addresses, variables and templates, and
//! builds each assertion once. Every problem is collected with its position.

mod oauth;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use portcullis_assertions::api_key::{self, ApiClient, RequireApiKey, DEFAULT_QUERY_PARAMS};
use portcullis_assertions::composite::{All, Any};
use portcullis_assertions::headers::{editable, RemoveHeader, SetHeader};
use portcullis_assertions::hmac::custom::{Algorithm, CustomScheme, Encoding, HeaderFormat};
use portcullis_assertions::hmac::outbound::{OutboundScheme, SignHmac};
use portcullis_assertions::hmac::{HmacKey, KeySet, RequireHmac, Scheme, SecretBytes, SystemClock};
use portcullis_assertions::ip::{AllowIp, DenyIp, IpList};
use portcullis_assertions::json_body::ValidateJson;
use portcullis_assertions::pan::{Keep, MaskPan, MaskStyle, Mode};
use portcullis_assertions::template::Template;
use portcullis_assertions::{Assertion, Pipeline, VarRegistry};

use super::spec::{
    AccessLogSpec, AssertionSpec, ConfigSpec, HeaderNameSpec, HmacAlgorithmSpec, HmacSchemeSpec,
    IncludeSpec, KeepSpec, MaskModeSpec, RequireHmacSpec, SecretSpec, ServiceSpec, SignHmacSpec,
    SignatureEncodingSpec,
};
use super::yaml::{Lenient, Location, Spanned};
use super::{read_file, Diagnostic, Parsed, MAX_INCLUDES};
use crate::metrics::{Metrics, ServiceMetrics};
use crate::router::Router;
use crate::runtime::{AccessLogTarget, Runtime, Secret, Service, Settings, Upstream};

/// Default largest request body.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";

/// Reads every file named by `include:` patterns (relative to the main file's folder).
pub(crate) fn read_includes(
    main: &Parsed<ConfigSpec>,
    base: &Path,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Parsed<IncludeSpec>> {
    let mut out = Vec::new();
    let mut seen: Vec<PathBuf> = vec![main.file.to_path_buf()];
    for pattern in &main.spec.include {
        let full = base.join(&pattern.value);
        let at = |message: String| Diagnostic {
            file: main.file.clone(),
            loc: Some(pattern.loc),
            path: "include".to_owned(),
            message,
        };
        let paths = match glob::glob(&full.to_string_lossy()) {
            Ok(p) => p,
            Err(e) => {
                errors.push(at(format!(
                    "invalid include pattern \"{}\": {e}",
                    pattern.value
                )));
                continue;
            }
        };
        let mut matched: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        matched.sort();
        if matched.is_empty() {
            errors.push(at(format!(
                "include pattern \"{}\" matches no file",
                pattern.value
            )));
        }
        for path in matched {
            if seen.contains(&path) {
                continue;
            }
            if seen.len() > MAX_INCLUDES {
                errors.push(at(format!("more than {MAX_INCLUDES} included files")));
                return out;
            }
            seen.push(path.clone());
            if let Some(parsed) =
                read_file::<IncludeSpec>(&path, Some((&main.file, pattern.loc)), errors)
            {
                out.push(parsed);
            }
        }
    }
    out
}

/// Which pipeline a step sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// The compile-time state: where we are, what we found wrong, what we know.
struct Cx<'a> {
    file: Arc<Path>,
    /// Folder of the main policy file: relative paths start here.
    base: PathBuf,
    errors: &'a mut Vec<Diagnostic>,
    secrets: &'a HashMap<String, Secret>,
    /// Secrets that are defined but could not be read (already reported).
    unreadable: HashSet<String>,
    registry: VarRegistry,
    key_sets: HashMap<String, Arc<KeySet>>,
    carry: &'a super::Carry,
    /// How many `any` composites the step being compiled sits in.
    any_depth: usize,
    /// The token service, when the policy has one (for `require_bearer`).
    token_service: Option<Arc<crate::oauth::TokenService>>,
    /// The policy has a `token_service:` section (which may have failed to compile).
    token_service_declared: bool,
    /// Every remote key set the policy names (for the refresher and readiness).
    key_set_list: Vec<Arc<crate::oauth::remote::RemoteKeySet>>,
    /// The service being compiled (the default realm of `require_bearer`).
    service_name: String,
}

impl Cx<'_> {
    fn err(&mut self, loc: Location, path: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            file: self.file.clone(),
            loc: Some(loc),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn secret(&mut self, name: &Spanned<String>, path: &str) -> Option<Secret> {
        if let Some(s) = self.secrets.get(&name.value) {
            return Some(s.clone());
        }
        if self.unreadable.contains(&name.value) {
            return None;
        }
        let known: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        let hint = suggest(&name.value, &known).map_or_else(
            || "; define it under `secrets:`".to_owned(),
            |k| format!("; did you mean \"{k}\"?"),
        );
        self.err(
            name.loc,
            path,
            format!("unknown secret \"{}\"{hint}", name.value),
        );
        None
    }
}

fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(word, k), *k))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Compiles the main file and its includes. Returns `None` only when nothing usable is
/// left; otherwise `errors` says whether the result may be used.
pub(crate) fn compile(
    main: &Parsed<ConfigSpec>,
    includes: &[Parsed<IncludeSpec>],
    carry: &super::Carry,
    generation: u64,
    errors: &mut Vec<Diagnostic>,
) -> Option<Runtime> {
    let metrics = &carry.metrics;
    let base = main
        .file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let secrets = resolve_secrets(main, includes, &base, errors);

    // Every service with the file it came from.
    let mut services: Vec<(Arc<Path>, &Spanned<ServiceSpec>)> = Vec::new();
    for (file, list) in std::iter::once((&main.file, &main.spec.services))
        .chain(includes.iter().map(|i| (&i.file, &i.spec.services)))
    {
        services.extend(
            list.iter()
                .filter_map(|s| s.0.as_ref())
                .map(|s| (file.clone(), s)),
        );
    }

    // Pass 1: every variable a step can set, so templates anywhere can refer to it.
    let mut registry = VarRegistry::new();
    registry.define("hmac.key_id");
    for keys in main
        .spec
        .keys
        .values()
        .chain(includes.iter().flat_map(|i| i.spec.keys.values()))
    {
        for key in &keys.value {
            for attr in key.value.attributes.keys() {
                registry.define(&format!("client.{attr}"));
            }
        }
    }
    for (_, svc) in &services {
        for step in svc.value.request.iter().chain(&svc.value.response) {
            define_outputs(step, &mut registry);
        }
    }

    let mut cx = Cx {
        file: main.file.clone(),
        base: base.clone(),
        errors,
        secrets: &secrets,
        unreadable: defined_secrets(main, includes)
            .filter(|n| !secrets.contains_key(*n))
            .map(str::to_owned)
            .collect(),
        key_sets: HashMap::new(),
        carry,
        any_depth: 0,
        registry,
        token_service: None,
        token_service_declared: false,
        key_set_list: Vec::new(),
        service_name: String::new(),
    };
    let settings = compile_settings(&main.spec, &mut cx);
    let client_limits = compile_client_limits(&main.spec, &mut cx);
    compile_key_sets(main, includes, &mut cx);
    cx.file = main.file.clone();
    // Only a policy that keeps state opens a store (a file is not created for nothing). A
    // store that cannot be opened has been reported; a memory stand-in lets every other
    // mistake show.
    let opened = (main.spec.token_service.present().is_some() || main.spec.state.is_some())
        .then(|| oauth::open_state(&main.spec, &mut cx))
        .flatten();
    let store: Arc<dyn crate::store::Store> =
        opened.unwrap_or_else(|| Arc::new(crate::store::memory::MemoryStore::default()));
    if let Some(ts) = main.spec.token_service.present() {
        cx.token_service_declared = true;
        cx.token_service = oauth::compile_token_service(ts, store.clone(), &mut cx);
    }
    let admin_token = main
        .spec
        .admin
        .present()
        .and_then(|a| cx.secret(&a.token, "admin.token"));
    let trusted_proxies = IpList::new(
        main.spec
            .trusted_proxies
            .get()
            .into_iter()
            .flatten()
            .map(|c| c.0)
            .collect(),
    );

    let mut router = Router::default();
    let mut compiled = Vec::new();
    let mut names: HashMap<String, (Arc<Path>, Location)> = HashMap::new();
    let mut warnings = Vec::new();
    // Host and lower-cased canonical prefix: routes that collide here are the same route,
    // or differ only by letter case.
    type RouteKey = (Option<String>, String);
    let mut routes: HashMap<RouteKey, SeenRoute> = HashMap::new();
    for (i, (file, svc)) in services.iter().enumerate() {
        cx.file = file.clone();
        let path = format!("services[{i}]");
        if let Some((first_file, first)) = names.get(&svc.value.name.value) {
            let msg = format!(
                "duplicate service name \"{}\" (first at {}:{})",
                svc.value.name.value,
                first_file.display(),
                first
            );
            cx.err(svc.value.name.loc, &format!("{path}.name"), msg);
        }
        names.insert(
            svc.value.name.value.clone(),
            (file.clone(), svc.value.name.loc),
        );
        let matcher = svc.value.matcher.get();
        let prefix = matcher
            .and_then(|m| m.path.as_ref())
            .and_then(|p| crate::path::canonicalize(&p.value).ok())
            .map_or_else(|| "/".to_owned(), |c| c.forwarded.into_owned());
        let insensitive = matcher
            .and_then(|m| m.path_case.as_ref())
            .is_some_and(|c| c.value == super::spec::PathCaseSpec::Insensitive);
        let route_key = (
            matcher
                .and_then(|m| m.host.as_ref())
                .map(|h| crate::router::normalize_host(&h.value)),
            prefix.to_ascii_lowercase(),
        );
        if let Some(seen) = routes.get(&route_key) {
            let other = format!(
                "\"{}\" (at {}:{})",
                seen.service,
                seen.file.display(),
                seen.loc
            );
            if seen.prefix == prefix || seen.insensitive || insensitive {
                let msg = format!(
                    "service \"{}\" matches the same host and path as {other}, so one of them would never be used",
                    svc.value.name.value
                );
                cx.err(svc.value.name.loc, &format!("{path}.match"), msg);
            } else {
                warnings.push(Diagnostic {
                    file: file.clone(),
                    loc: Some(svc.value.name.loc),
                    path: format!("{path}.match"),
                    message: format!(
                        "service \"{}\" has a path prefix that differs only by letter case from {other}: behind a case-insensitive upstream both reach the same resources (set path_case: insensitive on the one that must win)",
                        svc.value.name.value
                    ),
                });
            }
        } else {
            routes.insert(
                route_key,
                SeenRoute {
                    service: svc.value.name.value.clone(),
                    prefix,
                    insensitive,
                    file: file.clone(),
                    loc: svc.value.name.loc,
                },
            );
        }
        if let Some(service) = compile_service(&svc.value, &path, metrics, &mut cx) {
            let host = svc
                .value
                .matcher
                .get()
                .and_then(|m| m.host.as_ref())
                .map(|h| h.value.as_str());
            router.add(host, &service.route, service.path_case, compiled.len());
            compiled.push(service);
        }
    }

    let effective = effective_config(main, includes, generation);
    let forwarded_headers = match main.spec.forwarded_headers {
        None | Some(super::spec::ForwardedHeadersSpec::XForwarded) => {
            crate::proxy::ForwardedHeaders::X_FORWARDED
        }
        Some(super::spec::ForwardedHeadersSpec::Forwarded) => {
            crate::proxy::ForwardedHeaders::FORWARDED
        }
        Some(super::spec::ForwardedHeadersSpec::Both) => crate::proxy::ForwardedHeaders {
            x_forwarded: true,
            forwarded: true,
        },
        Some(super::spec::ForwardedHeadersSpec::None) => crate::proxy::ForwardedHeaders::default(),
    };
    Some(Runtime {
        forwarded_headers,
        warnings,
        client_limits,
        token_service: cx.token_service.clone(),
        key_sets: std::mem::take(&mut cx.key_set_list),
        store,
        generation,
        settings,
        router,
        services: compiled,
        registry: cx.registry,
        trusted_proxies,
        admin_token,
        effective,
    })
}

/// A route already declared, for the duplicate and letter-case checks.
struct SeenRoute {
    service: String,
    prefix: String,
    insensitive: bool,
    file: Arc<Path>,
    loc: Location,
}

/// The names of every secret the files define.
fn defined_secrets<'p>(
    main: &'p Parsed<ConfigSpec>,
    includes: &'p [Parsed<IncludeSpec>],
) -> impl Iterator<Item = &'p str> {
    main.spec
        .secrets
        .keys()
        .chain(includes.iter().flat_map(|i| i.spec.secrets.keys()))
        .map(String::as_str)
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

fn compile_settings(spec: &ConfigSpec, cx: &mut Cx<'_>) -> Settings {
    let default_listen: SocketAddr = DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8080)));
    let default_admin: SocketAddr = DEFAULT_ADMIN_LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9901)));
    let listen = spec
        .listen
        .present()
        .map_or_else(|| vec![default_listen], |l| l.0.clone());
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
            cx.err(w.loc, "workers", "workers must be between 1 and 256");
        }
    }
    let access_log = match spec.access_log.present() {
        None | Some(AccessLogSpec::Stdout) => AccessLogTarget::Stdout,
        Some(AccessLogSpec::Off) => AccessLogTarget::Off,
        Some(AccessLogSpec::File(p)) => {
            // Relative to the policy file, like every other path in it.
            let path = cx.base.join(p);
            if !path.parent().is_some_and(Path::is_dir) {
                cx.errors.push(Diagnostic {
                    file: cx.file.clone(),
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
            cx.err(
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
                    cx.err(loc, if e.contains("group") { "group" } else { "user" }, e);
                    None
                }
            }
        }
    };
    Settings {
        listen,
        admin_listen,
        workers,
        access_log,
        run_as,
    }
}

/// The client connection limits, defaults filled in.
fn compile_client_limits(spec: &ConfigSpec, cx: &mut Cx<'_>) -> crate::connection::ClientLimits {
    let mut limits = crate::connection::ClientLimits::default();
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
                cx.err(
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
            cx.err(
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
                cx.err(
                    loc,
                    &format!("client_limits.{name}"),
                    format!("{name} must be at least 1"),
                );
            }
            *slot = n;
        }
    }
    limits
}

/// Builds every named key set, resolving each key's secrets.
fn compile_key_sets(main: &Parsed<ConfigSpec>, includes: &[Parsed<IncludeSpec>], cx: &mut Cx<'_>) {
    let all = std::iter::once((&main.file, &main.spec.keys))
        .chain(includes.iter().map(|i| (&i.file, &i.spec.keys)));
    for (file, sets) in all {
        cx.file = file.clone();
        for (name, set) in sets {
            if cx.key_sets.contains_key(name) {
                cx.err(
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
                    cx.err(
                        key.loc,
                        &path,
                        format!("access key {} is listed twice", k.access_key),
                    );
                }
                if k.secrets.is_empty() {
                    cx.err(key.loc, &path, "a key needs at least one secret");
                }
                let secrets: Vec<SecretBytes> = k
                    .secrets
                    .iter()
                    .filter_map(|s| cx.secret(s, &format!("{path}.secrets")))
                    .map(|s| SecretBytes(Arc::from(s.expose().as_bytes())))
                    .collect();
                let attributes = k
                    .attributes
                    .iter()
                    .filter_map(|(a, v)| {
                        cx.registry
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
            cx.key_sets
                .insert(name.clone(), Arc::new(KeySet::new(keys)));
        }
    }
}

/// Registers the variables a step (and its children) can set.
fn define_outputs(step: &Lenient<Spanned<AssertionSpec>>, registry: &mut VarRegistry) {
    let Some(step) = &step.0 else { return };
    match &step.value {
        AssertionSpec::RequireApiKey(spec) => {
            registry.define("client.id");
            for key in &spec.keys {
                for attr in key.value.attributes.keys() {
                    registry.define(&format!("client.{attr}"));
                }
            }
        }
        AssertionSpec::All(steps) | AssertionSpec::Any(steps) => {
            for s in steps {
                define_outputs(s, registry);
            }
        }
        AssertionSpec::AllowIp(_)
        | AssertionSpec::DenyIp(_)
        | AssertionSpec::SetHeader(_)
        | AssertionSpec::RemoveHeader(_)
        | AssertionSpec::ValidateJson(_)
        | AssertionSpec::RequireHmac(_)
        | AssertionSpec::SignHmac(_)
        | AssertionSpec::MaskPan(_) => {}
        AssertionSpec::RequireBearer(_) => {
            for v in ["client.id", "token.sub", "token.scope"] {
                registry.define(v);
            }
        }
    }
}

fn compile_service(
    spec: &ServiceSpec,
    path: &str,
    metrics: &Metrics,
    cx: &mut Cx<'_>,
) -> Option<Service> {
    let name = spec.name.value.trim();
    cx.service_name = name.to_owned();
    if name.is_empty() {
        cx.err(
            spec.name.loc,
            &format!("{path}.name"),
            "a service needs a non-empty name",
        );
    }
    let matcher = spec.matcher.get();
    let route = match matcher.and_then(|m| m.path.as_ref()) {
        Some(p) if !p.value.starts_with('/') => {
            cx.err(
                p.loc,
                &format!("{path}.match.path"),
                format!("path prefix \"{}\" must start with /", p.value),
            );
            "/".to_owned()
        }
        Some(p) => match crate::path::canonicalize(&p.value) {
            Ok(canonical) if canonical.forms == crate::path::PathForms::default() => {
                canonical.forwarded.into_owned()
            }
            Ok(canonical) => {
                cx.err(
                    p.loc,
                    &format!("{path}.match.path"),
                    format!(
                        "path prefix \"{}\" holds {}, which upstreams read differently: write the prefix without them",
                        p.value,
                        canonical.forms.describe()
                    ),
                );
                "/".to_owned()
            }
            Err(why) => {
                cx.err(
                    p.loc,
                    &format!("{path}.match.path"),
                    format!("path prefix \"{}\" is refused: {}", p.value, why.detail()),
                );
                "/".to_owned()
            }
        },
        None => "/".to_owned(),
    };
    let path_case = match matcher.and_then(|m| m.path_case.as_ref()).map(|c| c.value) {
        Some(super::spec::PathCaseSpec::Insensitive) => crate::path::PathCase::Insensitive,
        Some(super::spec::PathCaseSpec::Sensitive) | None => crate::path::PathCase::Sensitive,
    };
    let mut path_forms = crate::path::PathForms::default();
    for form in matcher
        .map(|m| m.allow_path_forms.as_slice())
        .unwrap_or_default()
    {
        match form {
            super::spec::PathFormSpec::Parameters => path_forms.parameters = true,
            super::spec::PathFormSpec::EmptySegments => path_forms.empty_segments = true,
            super::spec::PathFormSpec::TrailingDots => path_forms.trailing_dots = true,
        }
    }
    if let Some(h) = matcher.and_then(|m| m.host.as_ref()) {
        let host = h.value.trim();
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty() || bare.contains(['/', ' ', '*']) {
            cx.err(
                h.loc,
                &format!("{path}.match.host"),
                format!("\"{host}\" is not a host name or *.domain pattern"),
            );
        }
    }
    let upstream = spec
        .upstream
        .get()
        .and_then(|u| compile_upstream(u, &format!("{path}.upstream"), cx));

    let request = compile_steps(&spec.request, &format!("{path}.request"), Side::Request, cx);
    let response = compile_steps(
        &spec.response,
        &format!("{path}.response"),
        Side::Response,
        cx,
    );
    let methods = compile_methods(spec.methods.as_deref(), spec.name.loc, path, cx);
    let request = Pipeline::new(request);
    let response = Pipeline::new(response);
    let needs = request.needs().union(response.needs());
    let metrics = ServiceMetrics::new(metrics, name, request.steps(), response.steps());
    Some(Service {
        name: Arc::from(name),
        methods,
        route_segments: crate::path::segment_count(&route),
        route: Arc::from(route.as_str()),
        path_case,
        path_forms,
        upstream: upstream?,
        request,
        response,
        needs,
        max_request_body: spec
            .max_request_body
            .present()
            .map_or(DEFAULT_MAX_REQUEST_BODY, |b| b.0),
        metrics,
    })
}

/// A service's methods, upper-case tokens; `TRACE` and `CONNECT` refused.
fn compile_methods(
    given: Option<&[Spanned<String>]>,
    service_loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> Vec<http::Method> {
    let Some(given) = given else {
        return crate::proxy::STANDARD_METHODS.to_vec();
    };
    let mut methods = Vec::new();
    for (i, m) in given.iter().enumerate() {
        let at = format!("{path}.methods[{i}]");
        match http::Method::from_bytes(m.value.as_bytes()) {
            Ok(method) if method == http::Method::TRACE || method == http::Method::CONNECT => {
                cx.err(m.loc, &at, format!("{method} is never proxied (TRACE echoes credentials back, CONNECT opens tunnels)"));
            }
            Ok(method) if m.value.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') => {
                methods.push(method)
            }
            _ => cx.err(
                m.loc,
                &at,
                format!(
                    "\"{}\" is not an upper-case method name such as GET or POST",
                    m.value
                ),
            ),
        }
    }
    if methods.is_empty() && given.is_empty() {
        cx.err(
            service_loc,
            &format!("{path}.methods"),
            "methods needs at least one method",
        );
    }
    methods
}

fn compile_upstream(
    spec: &Spanned<super::spec::UpstreamSpec>,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<Upstream> {
    let d = spec.value.detail();
    let loc = spec.loc;
    let uri: http::Uri = match d.url.parse() {
        Ok(u) => u,
        Err(_) => {
            cx.err(
                loc,
                path,
                format!("\"{}\" is not a URL (e.g. http://127.0.0.1:9000)", d.url),
            );
            return None;
        }
    };
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            cx.err(
                loc,
                path,
                format!("upstream \"{}\" must start with http:// or https://", d.url),
            );
            return None;
        }
    };
    let Some(host) = uri.host() else {
        cx.err(loc, path, format!("upstream \"{}\" has no host", d.url));
        return None;
    };
    if uri.query().is_some() {
        cx.err(loc, path, "an upstream URL cannot have a query string");
    }
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = match (bare_host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => {
            cx.err(
                loc,
                path,
                format!("cannot resolve upstream host \"{host}\""),
            );
            return None;
        }
    };
    let authority = uri.authority().map_or(host, http::uri::Authority::as_str);
    let host_header = HeaderValue::from_str(authority).ok()?;
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let mut pool_group = 0;
    let ca = match &d.ca_file {
        Some(file) => match load_ca_file(&cx.base.join(file)) {
            Ok((ca, group)) => {
                pool_group = group;
                Some(ca)
            }
            Err(message) => {
                cx.err(loc, path, message);
                None
            }
        },
        None => None,
    };
    Some(Upstream {
        url: d.url.clone(),
        addr,
        tls,
        sni: d.sni.clone().unwrap_or_else(|| bare_host.to_owned()),
        verify_tls: d.verify_tls.unwrap_or(true),
        host_header,
        preserve_host: d.preserve_host.unwrap_or(false),
        base_path,
        strip_prefix: d.strip_prefix.unwrap_or(false),
        connect_timeout: d.connect_timeout.map_or(Duration::from_secs(5), |t| t.0),
        read_timeout: d.read_timeout.map_or(Duration::from_secs(60), |t| t.0),
        ca,
        pool_group,
    })
}

/// Reads PEM CA certificates, checking each parses as X.509.
/// Also returns a digest of the certificates, to keep connection pools apart.
fn load_ca_file(path: &Path) -> Result<(Arc<[pingora::utils::tls::WrappedX509]>, u64), String> {
    let pem = crate::files::read_bounded(path, crate::files::FileKind::Certificates)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut digest = <sha2::Sha256 as sha2::Digest>::new();
    for der in rustls_pemfile::certs(&mut pem.as_slice()) {
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

/// Compiles a pipeline's list. An `all` outside any `any` is flattened into the list: the
/// pipeline runs every phase of every step, which a composite does not.
fn compile_steps(
    steps: &[Lenient<Spanned<AssertionSpec>>],
    path: &str,
    side: Side,
    cx: &mut Cx<'_>,
) -> Vec<Box<dyn Assertion>> {
    compile_list(steps, path, side, None, cx)
}

/// Compiles the steps of an `all` or `any` (`kind`) that sits inside an `any`: each must
/// decide on heads only (see `portcullis_assertions::composite`).
fn compile_composite_steps(
    steps: &[Lenient<Spanned<AssertionSpec>>],
    path: &str,
    kind: &str,
    side: Side,
    cx: &mut Cx<'_>,
) -> Vec<Box<dyn Assertion>> {
    compile_list(steps, path, side, Some(kind), cx)
}

fn compile_list(
    steps: &[Lenient<Spanned<AssertionSpec>>],
    path: &str,
    side: Side,
    composite: Option<&str>,
    cx: &mut Cx<'_>,
) -> Vec<Box<dyn Assertion>> {
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let Some(step) = step.0.as_ref() else {
            continue;
        };
        let step_path = format!("{path}[{i}]");
        if let (AssertionSpec::All(inner), None) = (&step.value, composite) {
            if cx.any_depth == 0 && !inner.is_empty() {
                out.extend(compile_list(
                    inner,
                    &format!("{step_path}.all"),
                    side,
                    None,
                    cx,
                ));
                continue;
            }
        }
        let Some(compiled) = compile_step(step, &step_path, side, cx) else {
            continue;
        };
        let beyond = compiled.phases().beyond_heads();
        match composite {
            Some(kind) if !beyond.is_empty() => {
                let list = match side {
                    Side::Request => "request",
                    Side::Response => "response",
                };
                cx.err(
                    step.loc,
                    &step_path,
                    format!(
                        "{} cannot sit inside `{kind}`: it {}, and `{kind}` decides on request and response heads only (which branch's work would apply?); put it in the {list} list itself",
                        compiled.kind(),
                        beyond.join(" and ")
                    ),
                );
            }
            _ => out.push(compiled),
        }
    }
    out
}

fn compile_require_hmac(
    spec: &RequireHmacSpec,
    loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<RequireHmac> {
    let keys = match cx.key_sets.get(&spec.keys.value) {
        Some(k) => k.clone(),
        None => {
            let known: Vec<&str> = cx.key_sets.keys().map(String::as_str).collect();
            let hint = suggest(&spec.keys.value, &known).map_or_else(
                || "; define it under `keys:`".to_owned(),
                |k| format!("; did you mean \"{k}\"?"),
            );
            cx.err(
                spec.keys.loc,
                &format!("{path}.keys"),
                format!("unknown key set \"{}\"{hint}", spec.keys.value),
            );
            return None;
        }
    };
    // Options that belong to another scheme are mistakes, not silently ignored.
    let scheme_name = match spec.scheme {
        HmacSchemeSpec::AwsSigv4 => "aws-sigv4",
        HmacSchemeSpec::AwsSigv2 => "aws-sigv2",
        HmacSchemeSpec::Template => "template",
    };
    let foreign: Vec<&str> = [
        ("region", spec.region.is_some(), HmacSchemeSpec::AwsSigv4),
        ("service", spec.service.is_some(), HmacSchemeSpec::AwsSigv4),
        (
            "allow_presigned",
            spec.allow_presigned.is_some(),
            HmacSchemeSpec::AwsSigv4,
        ),
        (
            "normalize_path",
            spec.normalize_path.is_some(),
            HmacSchemeSpec::AwsSigv4,
        ),
        (
            "allow_unsigned_payload",
            spec.allow_unsigned_payload.is_some(),
            HmacSchemeSpec::AwsSigv4,
        ),
        (
            "allow_query",
            spec.allow_query.is_some(),
            HmacSchemeSpec::AwsSigv2,
        ),
        ("header", spec.header.is_some(), HmacSchemeSpec::Template),
        ("format", spec.format.is_some(), HmacSchemeSpec::Template),
        (
            "algorithm",
            spec.algorithm.is_some(),
            HmacSchemeSpec::Template,
        ),
        (
            "encoding",
            spec.encoding.is_some(),
            HmacSchemeSpec::Template,
        ),
        (
            "string_to_sign",
            spec.string_to_sign.is_some(),
            HmacSchemeSpec::Template,
        ),
        (
            "date_header",
            spec.date_header.is_some(),
            HmacSchemeSpec::Template,
        ),
    ]
    .into_iter()
    .filter(|(_, set, owner)| *set && *owner != spec.scheme)
    .map(|(name, _, _)| name)
    .collect();
    if !foreign.is_empty() {
        cx.err(
            loc,
            path,
            format!(
                "{} do(es) not apply to scheme {scheme_name}",
                foreign.join(", ")
            ),
        );
    }
    let scheme = match spec.scheme {
        HmacSchemeSpec::AwsSigv4 => {
            let (Some(region), Some(service)) = (&spec.region, &spec.service) else {
                cx.err(
                    loc,
                    path,
                    "aws-sigv4 needs the `region` and `service` the credential scope must name",
                );
                return None;
            };
            Scheme::SigV4 {
                region: region.clone(),
                service: service.clone(),
                allow_presigned: spec.allow_presigned.unwrap_or(true),
                normalize_path: spec.normalize_path.unwrap_or(true),
            }
        }
        HmacSchemeSpec::AwsSigv2 => Scheme::SigV2 {
            allow_query: spec.allow_query.unwrap_or(true),
        },
        HmacSchemeSpec::Template => Scheme::Custom(compile_custom_scheme(
            &CustomSpec {
                header: spec.header.as_ref(),
                format: spec.format.as_ref(),
                algorithm: spec.algorithm,
                encoding: spec.encoding,
                string_to_sign: spec.string_to_sign.as_ref(),
                date_header: spec.date_header.as_ref(),
            },
            loc,
            path,
            cx,
        )?),
    };
    let capacity = spec.replay_capacity.unwrap_or(100_000);
    if capacity == 0 {
        cx.err(loc, path, "replay_capacity must be at least 1");
    }
    let max_skew = spec
        .max_skew
        .as_ref()
        .map_or(Duration::from_secs(300), |d| d.0);
    if max_skew > Duration::from_secs(7 * 24 * 3600) {
        cx.err(loc, path, "max_skew may be at most 7 days");
    }
    let replay = spec
        .replay_protection
        .unwrap_or(true)
        .then(|| cx.carry.replay_cache(&spec.keys.value, capacity.max(1)));
    Some(RequireHmac {
        scheme,
        keys,
        max_skew,
        replay,
        allow_unsigned_payload: spec.allow_unsigned_payload.unwrap_or(false),
        clock: Arc::new(SystemClock),
        client_id: cx.registry.define("client.id"),
        key_id_var: cx.registry.define("hmac.key_id"),
        sigv4_keys: Default::default(),
    })
}

/// The template-scheme options, shared by `require_hmac` and `sign_hmac`.
struct CustomSpec<'s> {
    header: Option<&'s HeaderNameSpec>,
    format: Option<&'s Spanned<String>>,
    algorithm: Option<HmacAlgorithmSpec>,
    encoding: Option<SignatureEncodingSpec>,
    string_to_sign: Option<&'s Spanned<String>>,
    date_header: Option<&'s HeaderNameSpec>,
}

fn compile_custom_scheme(
    spec: &CustomSpec<'_>,
    loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<CustomScheme> {
    let Some(sts) = spec.string_to_sign else {
        cx.err(loc, path, "the template scheme needs `string_to_sign`");
        return None;
    };
    let string_to_sign = match Template::parse(&sts.value, &cx.registry) {
        Ok(t) => t,
        Err(e) => {
            cx.err(sts.loc, &format!("{path}.string_to_sign"), e.0);
            return None;
        }
    };
    let format_text = spec
        .format
        .map_or("HMAC ${key_id}:${signature}", |f| f.value.as_str());
    let format = match HeaderFormat::parse(format_text) {
        Ok(f) => f,
        Err(e) => {
            cx.err(
                spec.format.map_or(loc, |f| f.loc),
                &format!("{path}.format"),
                e,
            );
            return None;
        }
    };
    Some(CustomScheme {
        header: spec
            .header
            .map_or(http::header::AUTHORIZATION, |h| h.0.clone()),
        format,
        algorithm: match spec.algorithm.unwrap_or(HmacAlgorithmSpec::Sha256) {
            HmacAlgorithmSpec::Sha1 => Algorithm::Sha1,
            HmacAlgorithmSpec::Sha256 => Algorithm::Sha256,
            HmacAlgorithmSpec::Sha512 => Algorithm::Sha512,
        },
        encoding: match spec.encoding.unwrap_or(SignatureEncodingSpec::Base64) {
            SignatureEncodingSpec::Base64 => Encoding::Base64,
            SignatureEncodingSpec::Hex => Encoding::Hex,
        },
        string_to_sign,
        date_header: spec
            .date_header
            .map_or(HeaderName::from_static("x-date"), |h| h.0.clone()),
    })
}

fn compile_sign_hmac(
    spec: &SignHmacSpec,
    loc: Location,
    path: &str,
    cx: &mut Cx<'_>,
) -> Option<SignHmac> {
    let Some(keys) = cx.key_sets.get(&spec.keys.value).cloned() else {
        cx.err(
            spec.keys.loc,
            &format!("{path}.keys"),
            format!("unknown key set \"{}\"", spec.keys.value),
        );
        return None;
    };
    let Some(key) = keys.get(&spec.access_key.value) else {
        cx.err(
            spec.access_key.loc,
            &format!("{path}.access_key"),
            format!(
                "key set \"{}\" has no access key {}",
                spec.keys.value, spec.access_key.value
            ),
        );
        return None;
    };
    let secret = key.secrets.first()?.clone();
    let scheme = match spec.scheme {
        HmacSchemeSpec::AwsSigv4 => {
            let (Some(region), Some(service)) = (&spec.region, &spec.service) else {
                cx.err(
                    loc,
                    path,
                    "aws-sigv4 needs the `region` and `service` of the credential scope",
                );
                return None;
            };
            OutboundScheme::SigV4 {
                region: region.clone(),
                service: service.clone(),
                content_sha256_header: spec.content_sha256_header.unwrap_or(true),
                normalize_path: spec.normalize_path.unwrap_or(true),
            }
        }
        HmacSchemeSpec::AwsSigv2 => OutboundScheme::SigV2,
        HmacSchemeSpec::Template => OutboundScheme::Custom(compile_custom_scheme(
            &CustomSpec {
                header: spec.header.as_ref(),
                format: spec.format.as_ref(),
                algorithm: spec.algorithm,
                encoding: spec.encoding,
                string_to_sign: spec.string_to_sign.as_ref(),
                date_header: spec.date_header.as_ref(),
            },
            loc,
            path,
            cx,
        )?),
    };
    Some(SignHmac {
        scheme,
        access_key: key.access_key.clone(),
        secret,
        clock: Arc::new(SystemClock),
    })
}

/// Request headers the gateway sets on the way up (after the pipeline), so a policy edit
/// would be overwritten.
fn gateway_managed(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
    )
}

fn managed_message(name: &HeaderName) -> String {
    format!(
        "request header {name} is set by the gateway for the upstream (see the upstream's preserve_host option); a policy cannot change it"
    )
}

fn request_only(kind: &str, side: Side, loc: Location, path: &str, cx: &mut Cx<'_>) -> bool {
    if side == Side::Response {
        cx.err(
            loc,
            path,
            format!("{kind} checks requests; move it to the service's request: list"),
        );
        return false;
    }
    true
}

fn compile_step(
    step: &Spanned<AssertionSpec>,
    path: &str,
    side: Side,
    cx: &mut Cx<'_>,
) -> Option<Box<dyn Assertion>> {
    let loc = step.loc;
    match &step.value {
        AssertionSpec::RequireApiKey(spec) => {
            if !request_only("require_api_key", side, loc, path, cx) {
                return None;
            }
            let mut keys = HashMap::new();
            for (i, entry) in spec.keys.iter().enumerate() {
                let kpath = format!("{path}.require_api_key.keys[{i}]");
                let e = &entry.value;
                let digest = match (&e.sha256, &e.secret) {
                    (Some(d), None) => d.0,
                    (None, Some(name)) => {
                        api_key::digest(cx.secret(name, &kpath)?.expose().as_bytes())
                    }
                    _ => {
                        cx.err(
                            entry.loc,
                            &kpath,
                            "give exactly one of `sha256` and `secret` for each key",
                        );
                        continue;
                    }
                };
                let mut attributes = Vec::new();
                for (attr, value) in &e.attributes {
                    if attr.is_empty()
                        || !attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        || attr == "id"
                        || attr == "ip"
                    {
                        cx.err(entry.loc, &kpath, format!("attribute name \"{attr}\" must be letters, digits or _ (and not id or ip)"));
                        continue;
                    }
                    if let Some(var) = cx.registry.lookup(&format!("client.{attr}")) {
                        attributes.push((var, Arc::from(value.as_str())));
                    }
                }
                let client = Arc::new(ApiClient {
                    id: Arc::from(e.client.as_str()),
                    attributes,
                });
                if keys.insert(digest, client).is_some() {
                    cx.err(entry.loc, &kpath, "the same key is listed twice");
                }
            }
            if spec.keys.is_empty() {
                cx.err(
                    loc,
                    path,
                    "require_api_key needs at least one key under `keys:`",
                );
            }
            let header = spec
                .header
                .as_ref()
                .map_or_else(|| HeaderName::from_static("x-api-key"), |h| h.0.clone());
            let query_params = spec.query_params.clone().unwrap_or_else(|| {
                DEFAULT_QUERY_PARAMS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
            let client_id = cx.registry.define("client.id");
            Some(Box::new(RequireApiKey::new(
                header,
                spec.prefix.clone(),
                keys,
                query_params,
                client_id,
            )))
        }
        AssertionSpec::AllowIp(cidrs) | AssertionSpec::DenyIp(cidrs) => {
            let allow = matches!(step.value, AssertionSpec::AllowIp(_));
            let kind = if allow { "allow_ip" } else { "deny_ip" };
            if !request_only(kind, side, loc, path, cx) {
                return None;
            }
            if cidrs.is_empty() {
                cx.err(loc, path, format!("{kind} needs at least one CIDR block"));
            }
            let list = IpList::new(cidrs.iter().map(|c| c.0).collect());
            if allow {
                Some(Box::new(AllowIp::new(list)))
            } else {
                Some(Box::new(DenyIp::new(list)))
            }
        }
        AssertionSpec::SetHeader(spec) => {
            if side == Side::Request && gateway_managed(&spec.name.0) {
                cx.err(loc, path, managed_message(&spec.name.0));
                return None;
            }
            if !editable(&spec.name.0) {
                cx.err(
                    loc,
                    path,
                    format!(
                        "header {} carries message framing and cannot be set by a policy",
                        spec.name.0
                    ),
                );
                return None;
            }
            match Template::parse(&spec.value.value, &cx.registry) {
                Ok(t) => Some(Box::new(SetHeader::new(spec.name.0.clone(), t))),
                Err(e) => {
                    cx.err(spec.value.loc, &format!("{path}.set_header.value"), e.0);
                    None
                }
            }
        }
        AssertionSpec::RemoveHeader(names) => {
            if names.is_empty() {
                cx.err(loc, path, "remove_header needs at least one header name");
            }
            if let Some(n) = names
                .iter()
                .find(|n| side == Side::Request && gateway_managed(&n.0))
            {
                cx.err(loc, path, managed_message(&n.0));
                return None;
            }
            if let Some(n) = names.iter().find(|n| !editable(&n.0)) {
                cx.err(
                    loc,
                    path,
                    format!(
                        "header {} carries message framing and cannot be removed by a policy",
                        n.0
                    ),
                );
                return None;
            }
            Some(Box::new(RemoveHeader::new(
                names.iter().map(|n| n.0.clone()).collect(),
            )))
        }
        AssertionSpec::RequireBearer(spec) => {
            if !request_only("require_bearer", side, loc, path, cx) {
                return None;
            }
            let service = cx.service_name.clone();
            oauth::compile_require_bearer(
                spec,
                &service,
                loc,
                &format!("{path}.require_bearer"),
                cx,
            )
        }
        AssertionSpec::RequireHmac(spec) => {
            if !request_only("require_hmac", side, loc, path, cx) {
                return None;
            }
            compile_require_hmac(spec, loc, &format!("{path}.require_hmac"), cx)
                .map(|a| Box::new(a) as Box<dyn Assertion>)
        }
        AssertionSpec::MaskPan(spec) => {
            if side == Side::Request
                && (spec.mode == Some(MaskModeSpec::Block) || spec.content_types.is_some())
            {
                cx.err(loc, path, "on the request side mask_pan masks every body it is given: mode and content_types apply to responses only");
                return None;
            }
            let mask = match &spec.mask_char {
                None => b'*',
                Some(c)
                    if c.value.len() == 1
                        && c.value.is_ascii()
                        && !c.value.as_bytes()[0].is_ascii_digit() =>
                {
                    c.value.as_bytes()[0]
                }
                Some(c) => {
                    cx.err(
                        c.loc,
                        &format!("{path}.mask_pan.mask_char"),
                        "mask_char must be one ASCII character that is not a digit",
                    );
                    return None;
                }
            };
            let keep = match spec.keep.unwrap_or(KeepSpec::LastFour) {
                KeepSpec::LastFour => Keep::LastFour,
                KeepSpec::FirstSixLastFour => Keep::FirstSixLastFour,
            };
            let types = spec.content_types.clone().unwrap_or_else(|| {
                portcullis_assertions::pan::step_defaults()
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
            let mode = match spec.mode.unwrap_or(MaskModeSpec::Mask) {
                MaskModeSpec::Mask => Mode::Mask,
                MaskModeSpec::Block => Mode::Block,
            };
            if side == Side::Request {
                return Some(Box::new(MaskPan::for_requests(MaskStyle { mask, keep })));
            }
            Some(Box::new(MaskPan::new(
                MaskStyle { mask, keep },
                mode,
                types,
            )))
        }
        AssertionSpec::SignHmac(spec) => {
            if !request_only("sign_hmac", side, loc, path, cx) {
                return None;
            }
            compile_sign_hmac(spec, loc, &format!("{path}.sign_hmac"), cx)
                .map(|a| Box::new(a) as Box<dyn Assertion>)
        }
        AssertionSpec::ValidateJson(spec) => {
            if !request_only("validate_json", side, loc, path, cx) {
                return None;
            }
            let depth = spec.max_depth.unwrap_or(32);
            if depth == 0 || depth > 1024 {
                cx.err(loc, path, "max_depth must be between 1 and 1024");
            }
            Some(Box::new(ValidateJson::new(
                depth,
                spec.allow_empty.unwrap_or(true),
            )))
        }
        AssertionSpec::All(steps) | AssertionSpec::Any(steps) => {
            let any = matches!(step.value, AssertionSpec::Any(_));
            let kind = if any { "any" } else { "all" };
            if steps.is_empty() {
                cx.err(loc, path, format!("{kind} needs at least one step"));
                return None;
            }
            // Only reached for `any`, and for `all` inside an `any` (a top-level `all` is
            // flattened by compile_steps).
            cx.any_depth += usize::from(any);
            let compiled =
                compile_composite_steps(steps, &format!("{path}.{kind}"), kind, side, cx);
            cx.any_depth -= usize::from(any);
            let made = if any {
                Any::new(compiled).map(|a| Box::new(a) as Box<dyn Assertion>)
            } else {
                All::new(compiled).map(|a| Box::new(a) as Box<dyn Assertion>)
            };
            // Steps that could not be composed were reported above; this is a second guard.
            made.map_err(|e| cx.err(loc, path, e.to_string())).ok()
        }
    }
}

/// The configuration as loaded, for `GET /api/config`. Spec types hold secret *names* and
/// where values come from, never the values, so this is safe to show.
fn effective_config(
    main: &Parsed<ConfigSpec>,
    includes: &[Parsed<IncludeSpec>],
    generation: u64,
) -> serde_json::Value {
    let mut services: Vec<serde_json::Value> = Vec::new();
    let mut files = BTreeMap::new();
    files.insert(
        main.file.display().to_string(),
        serde_json::json!({"services": main.spec.services.len()}),
    );
    for s in main
        .spec
        .services
        .iter()
        .chain(includes.iter().flat_map(|i| i.spec.services.iter()))
    {
        services.push(serde_json::to_value(s).unwrap_or_default());
    }
    for i in includes {
        files.insert(
            i.file.display().to_string(),
            serde_json::json!({"services": i.spec.services.len()}),
        );
    }
    let mut top = serde_json::to_value(&main.spec).unwrap_or_default();
    if let Some(obj) = top.as_object_mut() {
        obj.insert("services".to_owned(), serde_json::Value::Array(services));
        obj.insert("generation".to_owned(), serde_json::json!(generation));
        obj.insert(
            "files".to_owned(),
            serde_json::to_value(files).unwrap_or_default(),
        );
    }
    top
}
