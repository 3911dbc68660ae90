//! `quota`: calls per hour, day, week or month per key, counted in the state store (see
//! `portcullis_assertions::quota` and docs/rate-limits.md#quotas).

use std::sync::Arc;

use portcullis_assertions::quota::{period, Period, Quota, QuotaParts, Reset};
use portcullis_assertions::rate_limit::MissingKey;
use portcullis_assertions::template::Template;
use portcullis_assertions::Assertion;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;
use crate::store::quota_counter::StoreQuotaCounter;

/// The quota's name when the policy gives none.
const DEFAULT_NAME: &str = "quota";
/// The key when the policy names none.
const DEFAULT_KEY: &str = "${client.id}";

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// Shown in `RateLimit-Policy`, refusals and the admin API: letters, digits, `-`, `_`, `.`. Default `quota`.
    #[serde(default)]
    pub name: Option<String>,
    /// Calls allowed per period.
    pub limit: u64,
    /// `hour`, `day`, `week` (from Monday) or `month`.
    pub period: PeriodSpec,
    /// `calendar` (default): the window restarts at the period's boundary in `time_zone`. `rolling`: it lasts one period (a month: 30 days) from the call that opened it.
    #[serde(default)]
    pub reset: Option<ResetSpec>,
    /// IANA time zone of calendar periods (`Europe/Paris`). Default `UTC`.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// What calls are counted by. Default `${client.id}`.
    #[serde(default)]
    pub key: Option<String>,
    /// When a variable of the key is unset: count in this one shared quota. Without it such a call is refused (403 `quota-key-missing`).
    #[serde(default)]
    pub default_key: Option<String>,
    /// What one call costs. Default 1.
    #[serde(default)]
    pub cost: Option<u64>,
    /// Send `RateLimit-Policy` and `RateLimit` (calls left, seconds to the reset) on allowed answers too. Default false.
    #[serde(default)]
    pub headers_on_allowed: Option<bool>,
    /// When the state store cannot count: `fail_closed` (default, 503 `quota-unavailable`) or `fail_open` (let the call through uncounted).
    #[serde(default)]
    pub on_store_failure: Option<super::rate_limit::StoreFailureSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodSpec {
    Hour,
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetSpec {
    Calendar,
    Rolling,
}

impl CompileStep for QuotaSpec {
    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let period = match self.period {
            PeriodSpec::Hour => Period::Hour,
            PeriodSpec::Day => Period::Day,
            PeriodSpec::Week => Period::Week,
            PeriodSpec::Month => Period::Month,
        };
        let reset = match (self.reset.unwrap_or(ResetSpec::Calendar), &self.time_zone) {
            (ResetSpec::Rolling, Some(_)) => {
                context.err(
                    site.loc,
                    &site.option_path("time_zone"),
                    "`time_zone` places calendar boundaries; a rolling quota has none",
                );
                return None;
            }
            (ResetSpec::Rolling, None) => Reset::Rolling,
            (ResetSpec::Calendar, zone) => {
                match period::time_zone(zone.as_deref().unwrap_or("UTC")) {
                    Ok(zone) => Reset::Calendar(zone),
                    Err(message) => {
                        context.err(site.loc, &site.option_path("time_zone"), message);
                        return None;
                    }
                }
            }
        };
        let key_text = self.key.as_deref().unwrap_or(DEFAULT_KEY);
        let key = match Template::parse(key_text, &context.registry) {
            Ok(key) => key,
            Err(error) => {
                context.err(site.loc, &site.option_path("key"), error.0);
                return None;
            }
        };
        let Some(store) = context.state_store.clone() else {
            context.err(
                site.loc,
                site.path,
                "quota counts in the state store, which did not open",
            );
            return None;
        };
        let name = self.name.as_deref().unwrap_or(DEFAULT_NAME);
        let built = Quota::new(QuotaParts {
            name: name.into(),
            service: context.service_name.as_str().into(),
            limit: self.limit,
            period,
            reset,
            key,
            key_text: key_text.into(),
            missing: self
                .default_key
                .as_deref()
                .map_or(MissingKey::Refuse, |default| {
                    MissingKey::Default(default.into())
                }),
            cost: self.cost.unwrap_or(1),
            headers_on_allowed: self.headers_on_allowed.unwrap_or(false),
            fail_open: self.on_store_failure == Some(super::rate_limit::StoreFailureSpec::FailOpen),
            counter: Arc::new(StoreQuotaCounter::new(store.counters().clone())),
            clock: context.carry.wall_clock(),
        });
        match built {
            Ok(quota) => {
                if context
                    .quotas
                    .iter()
                    .any(|known| known.service == context.service_name && known.name == name)
                {
                    context.err(
                        site.loc,
                        &site.option_path("name"),
                        format!("this service already has a quota named \"{name}\"; they would share one count"),
                    );
                }
                context.quotas.push(crate::runtime::QuotaInfo {
                    service: context.service_name.clone(),
                    name: name.to_owned(),
                    limit: self.limit,
                    period: format!("{:?}", self.period).to_lowercase(),
                });
                Some(Box::new(quota))
            }
            Err(message) => {
                context.err(site.loc, &site.options_path(), message);
                None
            }
        }
    }
}
