//! A users file: who may authenticate with HTTP Basic (at the SAML issuer's `/saml/token`,
//! at the userauth API), each with an argon2id password hash (`portcullis hash-password`
//! prints one) and attributes (the SAML issuer puts them in its assertions; the userauth
//! API does not read them).
//!
//! ```yaml
//! users:
//!   - name: alice
//!     password_argon2id: "$argon2id$v=19$m=19456,t=2,p=1$...$..."
//!     attributes:
//!       group: [admins, ops]
//!       email: alice@example.com
//! ```
//!
//! Read once per policy load, bounded in size ([`crate::files::FileKind::Users`]) and in
//! users ([`MAX_USERS`]); hashes whose cost is out of bounds are refused at load, so a
//! file cannot make one verification take seconds. Verification is argon2's, constant
//! time in the comparison; an unknown user is checked against a dummy hash of the same
//! cost, so unknown users and wrong passwords take the same time.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHashString, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::config::yaml::{Lenient, Location, Spanned};

/// Most users one file may list.
pub const MAX_USERS: usize = 10_000;
/// Most attributes per user and values per attribute.
pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_VALUES: usize = 64;
/// Longest attribute name or value, bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// argon2id costs accepted in the file: memory (KiB), passes, lanes. The floor is OWASP's
/// least recommended memory; the ceilings keep one verification well under a second.
pub const MIN_MEMORY_KIB: u32 = 7 * 1024;
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
pub const MAX_PASSES: u32 = 16;
pub const MAX_LANES: u32 = 8;

/// The file as YAML sees it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFileSpec {
    /// Each user on its own: one that does not parse is reported, the others still checked.
    pub users: Vec<Lenient<Spanned<UserSpec>>>,
}

/// One user.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// The Basic user-id; becomes the assertion's `NameID`.
    pub name: Spanned<String>,
    /// An argon2id PHC string.
    pub password_argon2id: Spanned<String>,
    /// Attribute name → one value or a list.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValues>,
}

/// One attribute's values: a string or a list of strings.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttributeValues(pub Vec<String>);

impl<'de> Deserialize<'de> for AttributeValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttributeValues;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AttributeValues, E> {
                Ok(AttributeValues(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AttributeValues, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                Ok(AttributeValues(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A user who may be issued assertions. `Debug` leaves the hash out.
#[derive(Clone)]
pub struct User {
    pub name: String,
    hash: PasswordHashString,
    /// Attribute name → values, in the file's (sorted) order.
    pub attributes: Vec<(String, Vec<String>)>,
}

/// The compiled users file. `Debug` shows how many users, not who or their hashes.
pub struct Users {
    by_name: HashMap<String, User>,
    /// Checked for unknown users: a hash of a random password at the file's usual cost.
    dummy: PasswordHashString,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} users)", self.by_name.len())
    }
}

/// One thing wrong with the users file, at its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFileError {
    pub loc: Location,
    pub path: String,
    pub message: String,
}

/// Why a password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("no randomness available for the salt")]
    Random,
    #[error("argon2: {0}")]
    Argon2(String),
}

/// The argon2id hash of `password` as a PHC string, with a fresh random salt and argon2's
/// default cost (19 MiB, 2 passes, 1 lane: OWASP's recommendation).
///
/// # Errors
/// No randomness, or argon2 refused.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    hash_with(password, Params::default())
}

fn hash_with(password: &str, params: Params) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

/// Parses and bounds one PHC string.
fn parse_hash(text: &str) -> Result<(PasswordHashString, Params), String> {
    let hash = PasswordHash::new(text)
        .map_err(|e| format!("not a PHC string ({e}); `portcullis hash-password` prints one"))?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!(
            "the hash is {}, not argon2id; `portcullis hash-password` prints argon2id",
            hash.algorithm
        ));
    }
    if hash.version.is_some_and(|v| v != u32::from(Version::V0x13)) {
        return Err("only argon2 version 19 (0x13) is accepted".to_owned());
    }
    let params = Params::try_from(&hash).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if hash.hash.is_none() {
        return Err("the PHC string has no hash".to_owned());
    }
    if !(MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&params.m_cost()) {
        return Err(format!(
            "memory cost m={} KiB is outside {MIN_MEMORY_KIB}..={MAX_MEMORY_KIB}",
            params.m_cost()
        ));
    }
    if params.t_cost() > MAX_PASSES || params.p_cost() > MAX_LANES {
        return Err(format!(
            "t={} p={}: at most t={MAX_PASSES} passes and p={MAX_LANES} lanes",
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok((hash.serialize(), params))
}

impl Users {
    /// Compiles the parsed file, collecting every problem.
    ///
    /// # Errors
    /// Every problem found, each at its line.
    pub fn compile(spec: &UsersFileSpec) -> Result<Users, Vec<UserFileError>> {
        let mut errors = Vec::new();
        let mut by_name = HashMap::new();
        let mut costs: HashMap<(u32, u32, u32), usize> = HashMap::new();
        if spec.users.len() > MAX_USERS {
            errors.push(UserFileError {
                loc: spec.users[MAX_USERS]
                    .get()
                    .map(|u| u.loc)
                    .unwrap_or_default(),
                path: format!("users[{MAX_USERS}]"),
                message: format!("more than {MAX_USERS} users"),
            });
        }
        for (i, u) in spec.users.iter().take(MAX_USERS).enumerate() {
            // One that did not parse was reported by the parser.
            let Some(u) = u.get() else { continue };
            let path = format!("users[{i}]");
            let mut err = |loc: Location, what: &str, message: String| {
                errors.push(UserFileError {
                    loc,
                    path: format!("{path}{what}"),
                    message,
                });
            };
            let name = &u.value.name;
            if name.value.is_empty()
                || name.value.len() > 256
                || name.value.contains(':')
                || name.value.chars().any(char::is_control)
            {
                err(
                    name.loc,
                    ".name",
                    "a user name is 1 to 256 characters, without `:` (HTTP Basic cannot carry it) or control characters".to_owned(),
                );
                continue;
            }
            let hash = match parse_hash(&u.value.password_argon2id.value) {
                Ok((hash, params)) => {
                    *costs
                        .entry((params.m_cost(), params.t_cost(), params.p_cost()))
                        .or_default() += 1;
                    hash
                }
                Err(message) => {
                    err(u.value.password_argon2id.loc, ".password_argon2id", message);
                    continue;
                }
            };
            if u.value.attributes.len() > MAX_ATTRIBUTES
                || u.value.attributes.values().any(|v| v.0.len() > MAX_VALUES)
            {
                err(
                    u.loc,
                    ".attributes",
                    format!("at most {MAX_ATTRIBUTES} attributes of {MAX_VALUES} values each"),
                );
            }
            // XML 1.0 cannot carry most control characters: refused here, not at signing.
            let unfit = |s: &str| s.len() > MAX_VALUE_BYTES || s.chars().any(char::is_control);
            if u.value.attributes.iter().any(|(name, values)| {
                name.is_empty() || unfit(name) || values.0.iter().any(|v| unfit(v))
            }) {
                err(
                    u.loc,
                    ".attributes",
                    format!("attribute names and values are at most {MAX_VALUE_BYTES} bytes, without control characters, and names are not empty"),
                );
            }
            let user = User {
                name: name.value.clone(),
                hash,
                attributes: u
                    .value
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
            };
            if by_name.insert(name.value.clone(), user).is_some() {
                err(
                    name.loc,
                    ".name",
                    format!("user \"{}\" is listed twice", name.value),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // The cost most users have: an unknown name then takes as long as a known one.
        let usual = costs
            .into_iter()
            .max_by_key(|(cost, n)| (*n, *cost))
            .and_then(|((m, t, p), _)| Params::new(m, t, p, None).ok())
            .unwrap_or_default();
        let dummy = dummy_hash(usual).map_err(|e| {
            vec![UserFileError {
                loc: Location::default(),
                path: "users".to_owned(),
                message: format!("cannot prepare the dummy hash: {e}"),
            }]
        })?;
        Ok(Users { by_name, dummy })
    }

    /// The user `name` when `password` is theirs. An unknown name costs one argon2
    /// verification too. Blocking (tens of milliseconds): call it off the proxy's threads.
    #[must_use]
    pub fn verify(&self, name: &str, password: &str) -> Option<&User> {
        let (hash, user) = match self.by_name.get(name) {
            Some(user) => (&user.hash, Some(user)),
            None => (&self.dummy, None),
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &hash.password_hash())
            .is_ok();
        user.filter(|_| matches)
    }

    /// True when the file lists `name`.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn dummy_hash(params: Params) -> Result<PasswordHashString, HashError> {
    let mut password = [0u8; 24];
    getrandom::fill(&mut password).map_err(|_| HashError::Random)?;
    let text = hash_with(&hex::encode(password), params)?;
    PasswordHashString::new(&text).map_err(|e| HashError::Argon2(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::parse_text;

    fn users(text: &str) -> Result<Users, Vec<UserFileError>> {
        let mut errors = Vec::new();
        let parsed =
            parse_text::<UsersFileSpec>(Arc::from(Path::new("users.yaml")), text, &mut errors)
                .expect("parsed");
        assert!(errors.is_empty(), "{errors:?}");
        Users::compile(&parsed.spec)
    }

    #[test]
    fn hashes_verify_and_unknown_users_cost_a_verification_too() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let text = format!(
            "users:\n  - name: alice\n    password_argon2id: \"{hash}\"\n    attributes:\n      group: [admins, ops]\n      email: alice@example.com\n"
        );
        let users = users(&text).expect("users");
        let alice = users.verify("alice", "correct horse").expect("alice");
        assert_eq!(
            alice.attributes,
            [
                ("email".to_owned(), vec!["alice@example.com".to_owned()]),
                (
                    "group".to_owned(),
                    vec!["admins".to_owned(), "ops".to_owned()]
                ),
            ]
        );
        assert!(users.verify("alice", "wrong").is_none());
        assert!(users.verify("alice", "").is_none());
        // Unknown and wrong take the same time because both run one argon2 of the same
        // cost: the dummy an unknown name is checked against has alice's parameters (a
        // structural check; a timing assertion would fail on a busy machine).
        assert!(users.verify("mallory", "wrong").is_none());
        let params = |phc: &str| {
            let parsed = PasswordHash::new(phc).expect("PHC");
            (parsed.algorithm.to_string(), parsed.params.to_string())
        };
        let alice = &users.by_name["alice"];
        assert_eq!(
            params(users.dummy.as_str()),
            params(alice.hash.as_str()),
            "the dummy costs what a real check costs"
        );
    }

    #[test]
    fn bad_entries_are_reported_at_their_lines() {
        let good = hash_password("pw").expect("hash");
        let text = format!(
            "users:\n  - name: \"a:b\"\n    password_argon2id: \"{good}\"\n  - name: bob\n    password_argon2id: \"$2b$12$abcdefghijklmnopqrstuu\"\n  - name: carol\n    password_argon2id: \"$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\n  - name: dave\n    password_argon2id: \"{good}\"\n  - name: dave\n    password_argon2id: \"{good}\"\n  - name: erin\n    password_argon2id: \"{good}\"\n    attributes: {{note: \"a\\u0001b\"}}\n"
        );
        let errors = users(&text).expect_err("invalid");
        let shown: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| (e.loc.line, e.path.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (2, "users[0].name"),
                (5, "users[1].password_argon2id"),
                (7, "users[2].password_argon2id"),
                (10, "users[4].name"),
                (12, "users[5].attributes"),
            ],
            "{errors:?}"
        );
        assert!(
            errors[2].message.contains("m=1024"),
            "{}",
            errors[2].message
        );
    }
}
