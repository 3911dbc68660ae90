//! `require_api_key`: the request must carry one of the listed keys (compared as SHA-256
//! digests); the key's client and attributes become variables.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::HeaderName;
use portcullis_assertions::api_key::{self, ApiClient, RequireApiKey, DEFAULT_QUERY_PARAMS};
use portcullis_assertions::{Assertion, VarRegistry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;
use crate::config::values::{HeaderNameSpec, Sha256Hex};
use crate::config::yaml::Spanned;

/// The header read when the policy names none.
const DEFAULT_HEADER: &str = "x-api-key";

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireApiKeySpec {
    /// Header carrying the key. Default `X-Api-Key`.
    #[serde(default)]
    pub header: Option<HeaderNameSpec>,
    /// A prefix the header value must start with, stripped before lookup (e.g. `ApiKey `).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Query parameters that mark a key sent in the URL (refused). Default `api_key, apikey, api-key, x-api-key`.
    #[serde(default)]
    pub query_params: Option<Vec<String>>,
    /// The accepted keys, inline.
    #[serde(default)]
    pub keys: Vec<Spanned<ApiKeyEntrySpec>>,
    /// A file of further keys (relative to the policy file), one per line as
    /// `<sha256-hex> <client>`; `#` starts a comment line. Read at load and reload; made for
    /// large client bases (a million keys). Attributes are given to inline keys only.
    #[serde(default)]
    pub keys_file: Option<Spanned<String>>,
}

impl RequireApiKeySpec {
    /// The keys file this step reads, for gathering.
    pub(crate) fn files(&self) -> Option<(&str, crate::files::FileKind)> {
        self.keys_file
            .as_ref()
            .map(|file| (file.value.as_str(), crate::files::FileKind::ApiKeys))
    }
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntrySpec {
    /// The client this key identifies; becomes `${client.id}`.
    pub client: String,
    /// Hex SHA-256 of the key (`portcullis hash-key` prints it). Exactly one of `sha256` and `secret`.
    #[serde(default)]
    pub sha256: Option<Sha256Hex>,
    /// Name of a secret holding the key itself. Exactly one of `sha256` and `secret`.
    #[serde(default)]
    pub secret: Option<Spanned<String>>,
    /// Extra variables set for this client: `tier: gold` sets `${client.tier}`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl CompileStep for RequireApiKeySpec {
    fn define_outputs(&self, registry: &mut VarRegistry) {
        registry.define("client.id");
        for key in &self.keys {
            for attribute in key.value.attributes.keys() {
                registry.define(&format!("client.{attribute}"));
            }
        }
    }

    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let errors_before = context.errors.len();
        let mut keys = self
            .keys_file
            .as_ref()
            .and_then(|file| load_keys_file(file, &site.option_path("keys_file"), context))
            .unwrap_or_default();
        for (index, entry) in self.keys.iter().enumerate() {
            let entry_path = site.option_path(&format!("keys[{index}]"));
            let Some((digest, client)) = compile_key(entry, &entry_path, context) else {
                continue;
            };
            if keys.insert(digest, client).is_some() {
                context.err(
                    entry.loc,
                    &entry_path,
                    "the same key is listed twice (here or in the keys file)",
                );
            }
        }
        if self.keys.is_empty() && self.keys_file.is_none() {
            context.err(
                site.loc,
                site.path,
                "require_api_key needs at least one key under `keys:`, or a `keys_file:`",
            );
        } else if keys.is_empty() && context.errors.len() == errors_before {
            // A keys file cut short by a deploy, or only comments: every caller would be
            // refused.
            if let Some(file) = &self.keys_file {
                context.err(
                    file.loc,
                    &site.option_path("keys_file"),
                    "the keys file holds no key (and `keys:` lists none)",
                );
            }
        }
        let header = self.header.as_ref().map_or_else(
            || HeaderName::from_static(DEFAULT_HEADER),
            |header| header.0.clone(),
        );
        let query_params = self.query_params.clone().unwrap_or_else(|| {
            DEFAULT_QUERY_PARAMS
                .iter()
                .map(|name| (*name).to_owned())
                .collect()
        });
        let client_id = context.registry.define("client.id");
        Some(Box::new(RequireApiKey::new(
            header,
            self.prefix.clone(),
            keys,
            query_params,
            client_id,
        )))
    }
}

/// One key: its digest and the client it stands for.
fn compile_key(
    entry: &Spanned<ApiKeyEntrySpec>,
    entry_path: &str,
    context: &mut CompileContext<'_>,
) -> Option<([u8; 32], Arc<ApiClient>)> {
    let spec = &entry.value;
    let digest = match (&spec.sha256, &spec.secret) {
        (Some(digest), None) => digest.0,
        (None, Some(name)) => {
            api_key::digest(context.secret(name, entry_path)?.expose().as_bytes())
        }
        _ => {
            context.err(
                entry.loc,
                entry_path,
                "give exactly one of `sha256` and `secret` for each key",
            );
            return None;
        }
    };
    let mut attributes = Vec::new();
    for (attribute, value) in &spec.attributes {
        if attribute.is_empty()
            || !attribute
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
            || attribute == "id"
            || attribute == "ip"
        {
            context.err(
                entry.loc,
                entry_path,
                format!("attribute name \"{attribute}\" must be letters, digits or _ (and not id or ip)"),
            );
            continue;
        }
        if let Some(variable) = context.registry.lookup(&format!("client.{attribute}")) {
            attributes.push((variable, Arc::from(value.as_str())));
        }
    }
    let client = Arc::new(ApiClient {
        id: Arc::from(spec.client.as_str()),
        attributes,
    });
    Some((digest, client))
}

/// The keys of `keys_file`; `None` when it cannot be read or has mistakes (each reported).
fn load_keys_file(
    file: &Spanned<String>,
    option: &str,
    context: &mut CompileContext<'_>,
) -> Option<HashMap<[u8; 32], Arc<ApiClient>>> {
    let (full, text) = context.named_text(file, option, "UTF-8 text")?;
    match crate::config::api_keys_file::parse(&Arc::from(full.as_path()), text) {
        Ok(keys) => Some(keys),
        Err(found) => {
            context.errors.extend(found);
            None
        }
    }
}
