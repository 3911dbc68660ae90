//! `rate_limit`: named GCRA limits per key, counted in this process or across the fleet
//! (see `portcullis_assertions::rate_limit` and docs/rate-limits.md).

use std::sync::Arc;

use portcullis_assertions::gcra::Limit;
use portcullis_assertions::local_limiter::MAX_CHARGES;
use portcullis_assertions::rate_limit::{
    Cost, LimitRule, MissingKey, RateLimit, RateLimitParts, Scope, StoreFailure,
};
use portcullis_assertions::template::Template;
use portcullis_assertions::Assertion;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;
use crate::config::values::{Percent, RateSpec};
use crate::config::yaml::Spanned;

/// The key a limit counts by when the policy names none.
const DEFAULT_KEY: &str = "${client.id}";
/// The name of the one limit written with the `rate:` shorthand.
const DEFAULT_NAME: &str = "default";
/// Keys one step tracks at most when the policy says nothing (about 100 bytes each).
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// One limit, the short way: `rate: 100/s` (named `default`). Or use `limits:`.
    #[serde(default)]
    pub rate: Option<RateSpec>,
    /// With `rate:`: requests the bucket holds (a burst). Default: the rate's count.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Several named limits, each counted; a request must fit all of them.
    #[serde(default)]
    pub limits: Vec<Spanned<LimitSpec>>,
    /// What a request is counted by: a template such as `${client.id}`, `${client.ip}` or
    /// `${client.id}:${request.method}`. Default `${client.id}`. A limit may name its own.
    #[serde(default)]
    pub key: Option<String>,
    /// When a variable of the key is unset: count the request in this one shared bucket. Without it such a request is refused (403 `rate-limit-key-missing`).
    #[serde(default)]
    pub default_key: Option<String>,
    /// What one request costs: a whole number (default 1), `body_bytes` (the request body's length; the body is read first), or a template giving a whole number such as `${request.header.x-units}`.
    #[serde(default)]
    pub cost: Option<String>,
    /// Send `RateLimit-Policy` and `RateLimit` on allowed responses too (they are always sent with a 429). Default false.
    #[serde(default)]
    pub headers_on_allowed: Option<bool>,
    /// `local` (default): counted in this process. `cluster`: counted in the shared Redis store (`state: redis://...`), one atomic round trip per request.
    #[serde(default)]
    pub scope: Option<ScopeSpec>,
    /// Cluster scope, when Redis does not answer within its timeout: `fail_closed` (default, 503) or `fail_open` (decide in this process at `fail_open_share` of each rate).
    #[serde(default)]
    pub on_store_failure: Option<StoreFailureSpec>,
    /// With `fail_open`: the share of each limit this gateway allows on its own (e.g. `50%` with two gateways). Default 100%.
    #[serde(default)]
    pub fail_open_share: Option<Percent>,
    /// Keys tracked at most in this process; when every one is live a new key is refused (503 `rate-limit-capacity`). Default 100000.
    #[serde(default)]
    pub max_keys: Option<usize>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// The limit's name, shown in `RateLimit-Policy`, `RateLimit` and refusals: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `100/s`, `6000/min`, `1000/h`, `50000/day`, `10/5s`.
    pub rate: RateSpec,
    /// Requests the bucket holds (a burst). Default: the rate's count.
    #[serde(default)]
    pub burst: Option<u64>,
    /// This limit's own key template (default: the step's `key`).
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeSpec {
    Local,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailureSpec {
    FailClosed,
    FailOpen,
}

/// One limit as written, with the document path of its options.
struct WrittenLimit<'a> {
    name: &'a str,
    rate: (u64, std::time::Duration),
    burst: Option<u64>,
    key: &'a str,
    path: String,
    loc: crate::config::yaml::Location,
}

impl RateLimitSpec {
    fn written_limits<'a>(
        &'a self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Vec<WrittenLimit<'a>> {
        let step_key = self.key.as_deref().unwrap_or(DEFAULT_KEY);
        let mut written = Vec::new();
        if let Some(rate) = &self.rate {
            written.push(WrittenLimit {
                name: DEFAULT_NAME,
                rate: rate.0,
                burst: self.burst,
                key: step_key,
                path: site.option_path("rate"),
                loc: site.loc,
            });
        }
        for (index, limit) in self.limits.iter().enumerate() {
            written.push(WrittenLimit {
                name: &limit.value.name,
                rate: limit.value.rate.0,
                burst: limit.value.burst,
                key: limit.value.key.as_deref().unwrap_or(step_key),
                path: site.option_path(&format!("limits[{index}]")),
                loc: limit.loc,
            });
        }
        if self.rate.is_some() && !self.limits.is_empty() {
            context.err(
                site.loc,
                &site.options_path(),
                "write one limit with `rate:` or several under `limits:`, not both",
            );
        }
        if self.rate.is_none() && self.burst.is_some() {
            context.err(
                site.loc,
                &site.option_path("burst"),
                "`burst` goes with `rate`; under `limits:` each limit has its own",
            );
        }
        if written.is_empty() {
            context.err(
                site.loc,
                &site.options_path(),
                "rate_limit needs a limit: `rate: 100/s`, or `limits:` with a name and a rate each",
            );
        }
        if written.len() > MAX_CHARGES {
            context.err(
                site.loc,
                &site.option_path("limits"),
                format!(
                    "one rate_limit step holds at most {MAX_CHARGES} limits; use a second step"
                ),
            );
        }
        written
    }

    fn compile_cost(&self, site: &StepSite<'_>, context: &mut CompileContext<'_>) -> Option<Cost> {
        let path = site.option_path("cost");
        let text = self.cost.as_deref().map_or("1", str::trim);
        if text == "body_bytes" {
            return Some(Cost::BodyBytes);
        }
        if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
            return match text.parse() {
                Ok(cost) => Some(Cost::Fixed(cost)),
                Err(_) => {
                    context.err(site.loc, &path, "the cost is too large");
                    None
                }
            };
        }
        match Template::parse(text, &context.registry) {
            Ok(template) if !template.is_constant() => Some(Cost::Template(template)),
            Ok(_) => {
                context.err(
                    site.loc,
                    &path,
                    format!("cost \"{text}\" is not a whole number, `body_bytes` or a template such as ${{request.header.x-units}}"),
                );
                None
            }
            Err(error) => {
                context.err(site.loc, &path, error.0);
                None
            }
        }
    }
}

impl CompileStep for RateLimitSpec {
    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let written = self.written_limits(site, context);
        let mut rules = Vec::new();
        for limit in &written {
            let (count, period) = limit.rate;
            let burst = limit.burst.unwrap_or(count);
            let built = Limit::new(count, period, burst);
            let template = Template::parse(limit.key, &context.registry);
            match (built, template) {
                (Ok(built), Ok(key)) => {
                    if key.is_constant() {
                        context.warnings.push(format!(
                            "{}: the key \"{}\" has no variable, so every client shares one bucket",
                            limit.path, limit.key
                        ));
                    }
                    rules.push(LimitRule {
                        name: limit.name.into(),
                        limit: built,
                        count,
                        period,
                        key,
                        key_text: limit.key.into(),
                    });
                }
                (Err(invalid), _) => context.err(limit.loc, &limit.path, invalid.0),
                (_, Err(error)) => context.err(limit.loc, &limit.path, error.0),
            }
        }
        let mut names: Vec<&str> = written.iter().map(|limit| limit.name).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            context.err(
                site.loc,
                &site.option_path("limits"),
                format!("two limits are named \"{}\"", pair[0]),
            );
        }
        let cost = self.compile_cost(site, context)?;
        let scope = self.compile_scope(site, &rules, context)?;
        let max_keys = self.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if max_keys == 0 {
            context.err(
                site.loc,
                &site.option_path("max_keys"),
                "max_keys must be at least 1",
            );
        }
        if rules.len() != written.len() {
            return None;
        }
        let bucket_prefix = format!("{}/{}", context.service_name, site.path);
        let local = context.carry.rate_limiter(&bucket_prefix, max_keys);
        let built = RateLimit::new(RateLimitParts {
            bucket_prefix: bucket_prefix.into(),
            rules,
            cost,
            missing: self
                .default_key
                .as_deref()
                .map_or(MissingKey::Refuse, |default| {
                    MissingKey::Default(default.into())
                }),
            headers_on_allowed: self.headers_on_allowed.unwrap_or(false),
            local,
            scope,
            clock: context.carry.monotonic_clock(),
            counters: Arc::default(),
        });
        match built {
            Ok(step) => {
                context.rate_limits.push(crate::metrics::RateLimitCounting {
                    service: context.service_name.clone(),
                    step: site.path.to_owned(),
                    counters: step.counters().clone(),
                });
                Some(Box::new(step))
            }
            Err(invalid) => {
                context.err(site.loc, &site.options_path(), invalid.0);
                None
            }
        }
    }
}

impl RateLimitSpec {
    fn compile_scope(
        &self,
        site: &StepSite<'_>,
        rules: &[LimitRule],
        context: &mut CompileContext<'_>,
    ) -> Option<Scope> {
        let cluster = self.scope == Some(ScopeSpec::Cluster);
        if !cluster {
            if self.on_store_failure.is_some() || self.fail_open_share.is_some() {
                context.err(
                    site.loc,
                    &site.option_path("on_store_failure"),
                    "`on_store_failure` and `fail_open_share` apply to `scope: cluster` only",
                );
            }
            return Some(Scope::Local);
        }
        let Some(store) = context.shared_limiter.clone() else {
            context.err(
                site.loc,
                &site.option_path("scope"),
                "`scope: cluster` keeps the buckets in Redis: set `state: redis://HOST:PORT` (or `redis+cluster://...`)",
            );
            return None;
        };
        let fail_open = self.on_store_failure == Some(StoreFailureSpec::FailOpen);
        if !fail_open && self.fail_open_share.is_some() {
            context.err(
                site.loc,
                &site.option_path("fail_open_share"),
                "`fail_open_share` goes with `on_store_failure: fail_open`",
            );
        }
        let on_failure = if fail_open {
            let share = self.fail_open_share.as_ref().map_or(1.0, |share| share.0);
            let fallback = rules.iter().map(|rule| shared_limit(rule, share)).collect();
            StoreFailure::FailOpen { fallback }
        } else {
            StoreFailure::FailClosed
        };
        Some(Scope::Cluster { store, on_failure })
    }
}

/// A rule's limit at a share of its rate and burst (at least one request of each).
fn shared_limit(rule: &LimitRule, share: f64) -> Limit {
    let scale = |value: u64| ((value as f64 * share).floor() as u64).max(1);
    Limit::new(scale(rule.count), rule.period, scale(rule.limit.burst())).unwrap_or(rule.limit)
}
