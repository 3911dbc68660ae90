//! Spec → runtime: resolves secrets, upstream addresses, variables and templates, and
//! builds each assertion once. Every problem is collected with its position.

mod effective;
mod oauth;
mod redis;
mod route;
mod service;
mod settings;
mod tls;
mod upstream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_assertions::ip::IpList;
use portcullis_assertions::VarRegistry;

use super::spec::{ConfigSpec, IncludeSpec, ServiceSpec};
use super::yaml::{Location, Spanned};
use super::{read_file, Diagnostic, Parsed, MAX_INCLUDES};
use crate::router::Router;
use crate::runtime::Runtime;

use super::context::CompileContext;
use super::gathered::Gathered;
use super::steps::define_outputs;
use route::{define_path_variables, RouteTable};
use service::compile_service;
use settings::{compile_client_limits, compile_key_sets, compile_settings, defined_secrets};

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

/// Builds the runtime from the main file, its includes and what gathering read (this does
/// no I/O of its own but for opening the state store; see [`super::gather`]). Returns `None`
/// only when nothing usable is left; otherwise `errors` says whether the result may be used.
pub(crate) fn compile(
    main: &Parsed<ConfigSpec>,
    includes: &[Parsed<IncludeSpec>],
    gathered: &Gathered,
    carry: &super::Carry,
    mode: super::LoadMode,
    generation: u64,
    errors: &mut Vec<Diagnostic>,
) -> Option<Runtime> {
    let metrics = &carry.metrics;
    let base = main
        .file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);

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
    let registry = declare_variables(main, includes, &services);

    let mut context = CompileContext {
        file: main.file.clone(),
        base: base.clone(),
        https_listeners: main.spec.tls.present().is_some(),
        errors,
        gathered,
        unreadable: defined_secrets(main, includes)
            .filter(|n| !gathered.secrets.contains_key(*n))
            .map(str::to_owned)
            .collect(),
        key_sets: HashMap::new(),
        carry,
        mode,
        state_url: None,
        warnings: Vec::new(),
        any_depth: 0,
        registry,
        token_service: None,
        token_service_declared: false,
        saml_issuer: None,
        saml_issuer_declared: false,
        key_set_list: Vec::new(),
        service_name: String::new(),
        shared_limiter: None,
        rate_limits: Vec::new(),
        state_store: None,
        quotas: Vec::new(),
        shadow: super::context::ShadowScope::default(),
        outbound_broker: None,
    };
    let settings = compile_settings(&main.spec, &mut context);
    let client_limits = compile_client_limits(&main.spec, &mut context);
    compile_key_sets(main, includes, &mut context);
    context.file = main.file.clone();
    // Only a policy that keeps state opens a store (a file is not created for nothing). A
    // store that cannot be opened has been reported; a memory stand-in lets every other
    // mistake show.
    let keeps_state = main.spec.token_service.present().is_some()
        || main.spec.identity_api.present().is_some()
        || main.spec.oproxy.present().is_some()
        || main.spec.outbound_broker.present().is_some()
        || main.spec.state.is_some()
        || main.spec.redis.present().is_some()
        || services
            .iter()
            .any(|(_, service)| super::steps::counts_in_store(&service.value.request));
    let opened = keeps_state
        .then(|| oauth::open_state(&main.spec, &mut context))
        .flatten();
    let store = opened.unwrap_or_else(crate::store::StateStore::memory);
    context.state_store = Some(store.clone());
    context.shared_limiter = shared_limiter(&store, &context);
    if let Some(token_service) = main.spec.token_service.present() {
        context.token_service_declared = true;
        context.token_service =
            oauth::compile_token_service(token_service, store.clone(), &mut context);
    }
    let saml_issuer = main.spec.saml_issuer.present().and_then(|issuer| {
        context.saml_issuer_declared = true;
        super::saml_issuer::compile(issuer, &mut context)
    });
    context.saml_issuer.clone_from(&saml_issuer);
    let providers = super::providers::compile_providers(&main.spec.providers, &mut context);
    let oproxy = main.spec.oproxy.present().and_then(|broker| {
        super::providers::compile_oproxy(broker, &providers, store.clone(), &mut context)
    });
    context.outbound_broker = main.spec.outbound_broker.present().and_then(|broker| {
        super::outbound_broker::compile(broker, &providers, store.clone(), &mut context)
    });
    let identity_api = main.spec.identity_api.present().and_then(|api| {
        super::identity_api::compile(api, main.spec.admin.present().is_some(), &mut context)
    });
    let admin_token = main
        .spec
        .admin
        .present()
        .and_then(|a| context.secret(&a.token, "admin.token"));
    let trusted_proxies = IpList::new(
        main.spec
            .trusted_proxies
            .get()
            .into_iter()
            .flatten()
            .map(|c| c.0)
            .collect(),
    );

    let tls = main
        .spec
        .tls
        .present()
        .and_then(|tls| tls::compile_tls(tls, &mut context))
        .map(Arc::new);
    let (router, compiled) = compile_services(&services, metrics, &mut context);
    let capture = main.spec.capture.present().and_then(|capture| {
        context
            .secret(&capture.hash_key, "capture.hash_key")
            .map(|key| capture_key(key.expose().as_bytes(), &compiled))
    });
    let warnings = std::mem::take(&mut context.warnings);

    let effective = effective::effective_config(main, includes, generation);
    let forwarded_headers = forwarded_headers(main.spec.forwarded_headers);
    Some(Runtime {
        tls,
        forwarded_headers,
        warnings,
        hosts_file: main
            .spec
            .hosts_file
            .as_ref()
            .map(|file| context.base.join(&file.value)),
        client_limits,
        token_service: context.token_service.clone(),
        saml_issuer,
        identity_api,
        oproxy,
        outbound_broker: context.outbound_broker.clone(),
        key_sets: std::mem::take(&mut context.key_set_list),
        store,
        state_url: context.state_url.take(),
        generation,
        settings,
        router,
        services: compiled,
        registry: context.registry,
        trusted_proxies,
        admin_token,
        capture,
        effective,
        rate_limits: std::mem::take(&mut context.rate_limits),
        quotas: std::mem::take(&mut context.quotas),
    })
}

/// Declares every variable a step can set (key-set attributes, each step's outputs).
fn declare_variables(
    main: &Parsed<ConfigSpec>,
    includes: &[Parsed<IncludeSpec>],
    services: &[(Arc<Path>, &Spanned<ServiceSpec>)],
) -> VarRegistry {
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
    for (_, svc) in services {
        define_path_variables(&svc.value, &mut registry);
        define_outputs(&svc.value.request, &mut registry);
        define_outputs(&svc.value.response, &mut registry);
    }
    registry
}

/// Compiles every service and its route; names and routes that collide are errors (see
/// [`route::RouteTable`]).
fn compile_services(
    services: &[(Arc<Path>, &Spanned<ServiceSpec>)],
    metrics: &crate::metrics::Metrics,
    context: &mut CompileContext<'_>,
) -> (Router, Vec<crate::runtime::Service>) {
    let mut router = Router::default();
    let mut compiled = Vec::new();
    let mut names: HashMap<String, (Arc<Path>, Location)> = HashMap::new();
    let mut table = RouteTable::default();
    for (i, (file, svc)) in services.iter().enumerate() {
        context.file = file.clone();
        let path = format!("services[{i}]");
        if let Some((first_file, first)) = names.get(&svc.value.name.value) {
            let msg = format!(
                "duplicate service name \"{}\" (first at {}:{})",
                svc.value.name.value,
                first_file.display(),
                first
            );
            context.err(svc.value.name.loc, &format!("{path}.name"), msg);
        }
        names.insert(
            svc.value.name.value.clone(),
            (file.clone(), svc.value.name.loc),
        );
        let (service, route) = compile_service(&svc.value, &path, metrics, context);
        if let Some(route) = &route {
            table.add(
                route,
                svc.value.name.value.trim(),
                svc.value.name.loc,
                &path,
                context,
            );
        }
        if let (Some(service), Some(route)) = (service, route) {
            let mut entry = route.entry;
            entry.service = compiled.len();
            router.add(route.host.as_deref(), entry);
            compiled.push(service);
        }
    }

    // Sized to fit: with thousands of services, growth slack was a large share of the memory.
    compiled.shrink_to_fit();
    router.shrink_to_fit();
    (router, compiled)
}

/// The capture mode's key, with every place a service's steps read credentials from.
fn capture_key(key: &[u8], services: &[crate::runtime::Service]) -> crate::capture::CaptureKey {
    use crate::credentials::Place;
    let places: Vec<&Place> = services
        .iter()
        .flat_map(|service| service.credentials.places())
        .collect();
    crate::capture::CaptureKey::new(key).with_policy_places(
        places.iter().filter_map(|place| match place {
            Place::Header(name) => Some(name.as_str()),
            _ => None,
        }),
        places.iter().filter_map(|place| match place {
            Place::QueryParam(name) => Some(name.as_str()),
            _ => None,
        }),
    )
}

/// The forwarding headers the upstream gets (`forwarded_headers:`).
fn forwarded_headers(
    spec: Option<super::spec::ForwardedHeadersSpec>,
) -> crate::runtime::ForwardedHeaders {
    match spec {
        None | Some(super::spec::ForwardedHeadersSpec::XForwarded) => {
            crate::runtime::ForwardedHeaders::X_FORWARDED
        }
        Some(super::spec::ForwardedHeadersSpec::Forwarded) => {
            crate::runtime::ForwardedHeaders::FORWARDED
        }
        Some(super::spec::ForwardedHeadersSpec::Both) => crate::runtime::ForwardedHeaders {
            x_forwarded: true,
            forwarded: true,
        },
        Some(super::spec::ForwardedHeadersSpec::None) => {
            crate::runtime::ForwardedHeaders::default()
        }
    }
}

/// Where cluster-scope rate limits are decided: the Redis the state store talks to, or, for
/// a dry run of a policy whose state is Redis, a stand-in in this process (as the dry run's
/// memory store stands in for the real one). None without Redis.
fn shared_limiter(
    store: &crate::store::StateStore,
    context: &CompileContext<'_>,
) -> Option<Arc<dyn portcullis_assertions::rate_limit::SharedLimiter>> {
    if let (Some(client), Some(prefix)) = (store.redis_client(), store.redis_key_prefix()) {
        return Some(Arc::new(crate::redis::limiter::RedisLimiter::with_prefix(
            client.clone(),
            prefix,
        )));
    }
    let names_redis = matches!(context.state_url, Some(crate::store::StoreUrl::Redis(_)));
    (names_redis && context.mode == super::LoadMode::DryRun).then(|| {
        Arc::new(crate::redis::limiter::StandInLimiter::default())
            as Arc<dyn portcullis_assertions::rate_limit::SharedLimiter>
    })
}
