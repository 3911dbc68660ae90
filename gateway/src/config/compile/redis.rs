//! Spec → settings for a Redis `state:`: the policy's `redis:` block (password secret,
//! deadlines, CA file, key prefix, breaker) applied to the URL `state:` names.

use std::time::Duration;

use crate::config::context::CompileContext;
use crate::config::spec::{ConfigSpec, DurationSpec};
use crate::config::yaml::Spanned;
use crate::store::StoreUrl;

/// The longest a call or connect deadline may be: a request must not hang on Redis for
/// longer.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the breaker may stay open between probes.
const MAX_COOL_OFF: Duration = Duration::from_secs(300);

/// Applies `redis:` to a Redis `url`; reports a `redis:` block beside a `state:` that is
/// not Redis, and every bad option at its line.
pub(super) fn apply_redis_options(
    spec: &ConfigSpec,
    url: &mut StoreUrl,
    context: &mut CompileContext<'_>,
) {
    let given = spec.redis.present();
    let StoreUrl::Redis(config) = url else {
        if let Some(given) = given {
            context.err(
                given.loc,
                "redis",
                format!("redis: sets up a Redis state store, but state: is {url}"),
            );
        }
        return;
    };
    if config.settings.url.password.is_some() {
        context.warnings.push(format!(
            "state: {} holds a password; name a secret in redis.password_secret instead",
            config.settings.url
        ));
    }
    let Some(given) = given else {
        return;
    };
    let block = &given.value;
    let settings = &mut config.settings;
    if let Some(name) = &block.password_secret {
        settings.password = context.secret(name, "redis.password_secret");
    }
    if let Some(user) = &block.username {
        if user.value.is_empty() {
            context.err(user.loc, "redis.username", "username must not be empty");
        }
        settings.url.username = Some(user.value.clone());
    }
    if let Some(timeout) = duration(
        block.timeout.as_ref(),
        "timeout",
        (Duration::from_millis(1), MAX_TIMEOUT),
        context,
    ) {
        settings.timeout = timeout;
    }
    if let Some(timeout) = duration(
        block.connect_timeout.as_ref(),
        "connect_timeout",
        (Duration::from_millis(1), MAX_TIMEOUT),
        context,
    ) {
        settings.connect_timeout = timeout;
    }
    if let Some(cool_off) = duration(
        block.breaker_cool_off.as_ref(),
        "breaker_cool_off",
        (Duration::from_millis(1), MAX_COOL_OFF),
        context,
    ) {
        settings.breaker.cool_off = cool_off;
    }
    if let Some(failures) = &block.breaker_failures {
        if failures.value == 0 {
            context.err(
                failures.loc,
                "redis.breaker_failures",
                "breaker_failures must be at least 1",
            );
        }
        settings.breaker.failures = failures.value;
    }
    if let Some(ca_file) = &block.ca_file {
        if !settings.url.tls {
            context.err(
                ca_file.loc,
                "redis.ca_file",
                "ca_file is for TLS: use rediss:// (or rediss+cluster://) in state:",
            );
        }
        match context.gathered.file(&context.base.join(&ca_file.value)) {
            Ok(pem) => settings.ca_pem = Some(pem.to_vec()),
            Err(why) => context.err(ca_file.loc, "redis.ca_file", why),
        }
    }
    if let Some(prefix) = &block.key_prefix {
        if prefix.value.is_empty() || prefix.value.contains(['{', '}']) {
            context.err(
                prefix.loc,
                "redis.key_prefix",
                "key_prefix must be non-empty and hold no braces (they would change the hash tags)",
            );
        }
        config.key_prefix.clone_from(&prefix.value);
    }
}

/// A duration option, checked to lie within `(min, max)`.
fn duration(
    value: Option<&Spanned<DurationSpec>>,
    name: &str,
    (min, max): (Duration, Duration),
    context: &mut CompileContext<'_>,
) -> Option<Duration> {
    let value = value?;
    let d = value.value.0;
    if d < min || d > max {
        context.err(
            value.loc,
            &format!("redis.{name}"),
            format!("{name} must be between {min:?} and {max:?}"),
        );
    }
    Some(d)
}
