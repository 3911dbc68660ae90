//! The vocabulary the policy language is written in: addresses, CIDR blocks, header names,
//! digests, sizes, durations, and the algorithm names shared by several sections. Each is
//! validated as it is read, so a mistake is reported at its own `line:col`.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::yaml::{Lenient, Spanned};

/// Algorithms accepted on others' JWTs when the policy names none.
pub const DEFAULT_JWT_ALGORITHMS: [JwtAlgorithmSpec; 2] =
    [JwtAlgorithmSpec::RS256, JwtAlgorithmSpec::ES256];

/// The algorithms a policy lists, or the default ones.
#[must_use]
pub fn algorithms(list: Option<&Vec<JwtAlgorithmSpec>>) -> Vec<Algorithm> {
    list.map_or(&DEFAULT_JWT_ALGORITHMS[..], Vec::as_slice)
        .iter()
        .map(|algorithm| algorithm.algorithm())
        .collect()
}

impl JwtAlgorithmSpec {
    #[must_use]
    pub fn algorithm(self) -> Algorithm {
        match self {
            JwtAlgorithmSpec::RS256 => Algorithm::RS256,
            JwtAlgorithmSpec::RS384 => Algorithm::RS384,
            JwtAlgorithmSpec::RS512 => Algorithm::RS512,
            JwtAlgorithmSpec::PS256 => Algorithm::PS256,
            JwtAlgorithmSpec::PS384 => Algorithm::PS384,
            JwtAlgorithmSpec::PS512 => Algorithm::PS512,
            JwtAlgorithmSpec::ES256 => Algorithm::ES256,
            JwtAlgorithmSpec::ES384 => Algorithm::ES384,
            JwtAlgorithmSpec::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// Algorithms accepted on signed JWTs from others: asymmetric only (`none` and HMAC cannot
/// be named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum JwtAlgorithmSpec {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeysFormatSpec {
    /// A JSON Web Key Set (RFC 7517).
    Jwks,
    /// A JSON object of key id → PEM X.509 certificate (as Google publishes).
    X509Map,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithmSpec {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncodingSpec {
    Base64,
    Hex,
}

/// Defines a string newtype validated when it is read, with a plain string schema.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident($inner:ty), $what:literal, |$s:ident| $parse:expr, |$v:ident| $show:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let $s = String::deserialize(d)?;
                let parsed: Result<$inner, String> = $parse;
                parsed.map($name).map_err(de::Error::custom)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let $v = &self.0;
                s.collect_str(&$show)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "description": $what })
            }
        }
    };
}

validated_string!(
    /// A socket address `HOST:PORT`.
    Addr(SocketAddr), "an address HOST:PORT, e.g. 127.0.0.1:8080",
    |s| s.parse().map_err(|_| format!("\"{s}\" is not an address of the form HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)")),
    |v| v
);

validated_string!(
    /// An IPv4 or IPv6 CIDR block; a bare address means a single host.
    Cidr(IpNet), "a CIDR block such as 10.0.0.0/8 or 2001:db8::/32, or a single address",
    |s| s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("\"{s}\" is not a CIDR block (e.g. 10.0.0.0/8) or an IP address")),
    |v| v
);

validated_string!(
    /// An HTTP header name.
    HeaderNameSpec(HeaderName), "an HTTP header name",
    |s| HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("\"{s}\" is not a valid header name")),
    |v| v
);

validated_string!(
    /// A hex SHA-256 digest.
    Sha256Hex([u8; 32]), "64 hex digits: the SHA-256 of an API key",
    |s| {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map(|()| out)
            .map_err(|_| "expected 64 hex digits (the SHA-256 of the key; `portcullis hash-key` prints it)".to_owned())
    },
    |v| hex::encode(v)
);

validated_string!(
    /// A size: bytes, or with a unit `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
    ByteSize(u64), "a size such as 65536, 64KiB or 10MiB",
    |s| parse_size(&s).ok_or_else(|| format!("\"{s}\" is not a size (e.g. 65536, 64KiB, 10MiB)")),
    |v| v
);

validated_string!(
    /// A duration such as `5s`, `250ms`, `2m`.
    DurationSpec(Duration), "a duration such as 250ms, 5s or 2m",
    |s| humantime::parse_duration(&s).map_err(|_| format!("\"{s}\" is not a duration (e.g. 250ms, 5s, 2m)")),
    |v| humantime::format_duration(*v)
);

validated_string!(
    /// A rate: a count per period, `100/s`, `6000/min`, `1000/h`, `50000/day` or `10/5s`.
    RateSpec((u64, Duration)), "a rate such as 100/s, 6000/min, 1000/h, 50000/day or 10/5s",
    |s| parse_rate(&s).ok_or_else(|| format!("\"{s}\" is not a rate (e.g. 100/s, 6000/min, 1000/h, 10/5s)")),
    |v| format!("{}/{}", v.0, humantime::format_duration(v.1))
);

/// `COUNT/PERIOD`, the period a unit name or a duration.
fn parse_rate(text: &str) -> Option<(u64, Duration)> {
    let (count, period) = text.split_once('/')?;
    let count: u64 = count.trim().parse().ok().filter(|count| *count > 0)?;
    let period = match period.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => humantime::parse_duration(other).ok()?,
    };
    (!period.is_zero()).then_some((count, period))
}

validated_string!(
    /// A share of something, as a percentage: `50%`.
    Percent(f64), "a percentage above 0 and at most 100, e.g. 50%",
    |s| s.trim().strip_suffix('%')
        .and_then(|number| number.trim().parse::<f64>().ok())
        .filter(|share| *share > 0.0 && *share <= 100.0)
        .map(|share| share / 100.0)
        .ok_or_else(|| format!("\"{s}\" is not a percentage above 0 and at most 100 (e.g. 50%)")),
    |v| format!("{}%", v * 100.0)
);

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// One listen address or a list of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen(pub Vec<SocketAddr>);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Listen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address HOST:PORT or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listen, E> {
                Addr::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(|a| Listen(vec![a.0]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Listen, A::Error> {
                let mut out = Vec::new();
                while let Some(a) = seq.next_element::<Addr>()? {
                    out.push(a.0);
                }
                Ok(Listen(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Listen {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Listen")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                { "type": "string", "description": "HOST:PORT" },
                { "type": "array", "items": { "type": "string", "description": "HOST:PORT" } }
            ]
        })
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

/// `Spanned` and `Lenient` are invisible in the schema: each describes as what it wraps.
macro_rules! schema_as_inner {
    ($($wrapper:ident),*) => {$(
        impl<T: JsonSchema> JsonSchema for $wrapper<T> {
            fn schema_name() -> Cow<'static, str> {
                T::schema_name()
            }
            fn inline_schema() -> bool {
                T::inline_schema()
            }
            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                T::json_schema(generator)
            }
        }
    )*};
}

schema_as_inner!(Spanned, Lenient);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("10MiB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("1 GB"), Some(1_000_000_000));
        assert_eq!(parse_size("12XB"), None);
        assert_eq!(parse_size("MiB"), None);
    }
}
