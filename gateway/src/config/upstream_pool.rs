//! The pool side of `upstream:`: several targets with weights, or a DNS name looked up again
//! on a schedule; how requests spread over them; active and passive health; retries.
//! Compiled into [`crate::upstream::Pool`].

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize};

use super::values::DurationSpec;

/// One target of `upstream.targets`: a URL, or a mapping with the URL and its weight.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(untagged)]
pub enum TargetSpec {
    /// `http://host:port`: every target of a pool has the same scheme and base path.
    Url(String),
    Weighted(WeightedTargetSpec),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedTargetSpec {
    pub url: String,
    /// Share of the requests relative to the other targets, 1 to 100. Default 1.
    #[serde(default)]
    pub weight: Option<u32>,
}

impl<'de> Deserialize<'de> for TargetSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TargetSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a target URL or a mapping with `url` and `weight`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetSpec, E> {
                Ok(TargetSpec::Url(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TargetSpec, A::Error> {
                WeightedTargetSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(TargetSpec::Weighted)
            }
        }
        d.deserialize_any(V)
    }
}

impl TargetSpec {
    #[must_use]
    pub fn url(&self) -> &str {
        match self {
            TargetSpec::Url(url) => url,
            TargetSpec::Weighted(weighted) => &weighted.url,
        }
    }

    #[must_use]
    pub fn weight(&self) -> Option<u32> {
        match self {
            TargetSpec::Url(_) => None,
            TargetSpec::Weighted(weighted) => weighted.weight,
        }
    }
}

/// How requests spread over the targets.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BalanceSpec {
    /// In turn, in proportion to the weights (the default).
    RoundRobin,
    /// To the target with the fewest requests in flight for its weight.
    LeastConnections,
    /// By a hash of `hash_on`: the same key reaches the same target while it is available.
    ConsistentHash,
}

/// The active health check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// Path requested on each target (from its root, not the upstream's base path); any 2xx
    /// or 3xx answer passes.
    pub path: String,
    /// Time between checks of a target. Default `5s`.
    #[serde(default)]
    pub interval: Option<DurationSpec>,
    /// Time allowed for the connection and the answer's head. Default `2s`.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Passes in a row that bring an unhealthy target back. Default 2.
    #[serde(default)]
    pub healthy_after: Option<u32>,
    /// Failures in a row that take a healthy target out. Default 3.
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
}

/// Passive health: targets that fail requests are taken out for a while.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthSpec {
    /// Connect errors, broken exchanges or 5xx answers in a row that eject a target.
    /// Default 5; 0 turns passive ejection off.
    #[serde(default)]
    pub failures: Option<u32>,
    /// How long an ejected target is left out. Default `30s`.
    #[serde(default)]
    pub ejection: Option<DurationSpec>,
}

/// Retries on another target.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetriesSpec {
    /// Further tries on other targets after the first, 0 to 5. Default 2.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Retries at most this percentage of requests, over time (the retry budget), 0 to 100.
    /// Default 20.
    #[serde(default)]
    pub budget_percent: Option<u32>,
    /// Retries allowed per second whatever the traffic. Default 3.
    #[serde(default)]
    pub min_per_second: Option<u32>,
}
