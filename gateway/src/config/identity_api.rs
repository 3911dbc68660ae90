//! The `identity_api:` section: the userauth REST API (`/api/oper/userauth` on the admin
//! listener) through which a DHCP server or a NAC registers who has which address. Its
//! options (`*Spec`, which the JSON Schema shows) and their compilation into
//! [`crate::identity::IdentityApi`]; the users file was read by gathering.

use std::collections::HashSet;
use std::sync::Arc;

use portcullis_assertions::ip::IpList;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::context::CompileContext;
use super::values::Cidr;
use super::yaml::Spanned;
use crate::identity::api::IdentityApi;

/// The userauth API, compatible with the cOS Core REST API (`GET`, `POST` and `DELETE
/// /api/oper/userauth`), served on the admin listener. See docs/ip-identity.md.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityApiSpec {
    /// Source addresses (CIDR blocks) the API answers; any other gets 403. Required.
    pub allow_from: Spanned<Vec<Cidr>>,
    /// A users file (relative to this file, the format of `portcullis hash-password` and
    /// docs/saml.md) whose users may use the API with HTTP Basic. Without it only the admin
    /// bearer token is accepted.
    #[serde(default)]
    pub users_file: Option<Spanned<String>>,
    /// Users of the file who may add and delete entries; the others may only list. The
    /// admin bearer token may do both.
    #[serde(default)]
    pub writers: Vec<Spanned<String>>,
    /// The interface names entries may carry; an entry naming another is refused (400).
    /// Empty (default): any interface.
    #[serde(default)]
    pub interfaces: Vec<Spanned<String>>,
}

/// The files gathering reads for the section.
pub(crate) fn files(spec: &IdentityApiSpec) -> Vec<(&str, crate::files::FileKind)> {
    spec.users_file
        .iter()
        .map(|f| (f.value.as_str(), crate::files::FileKind::Users))
        .collect()
}

/// Longest interface name accepted.
const MAX_INTERFACE_BYTES: usize = 64;

/// Compiles the section; `None` when something is wrong (every problem reported).
pub(crate) fn compile(
    spec: &Spanned<IdentityApiSpec>,
    admin_declared: bool,
    context: &mut CompileContext<'_>,
) -> Option<Arc<IdentityApi>> {
    let s = &spec.value;
    let errors_before = context.errors.len();
    if !admin_declared {
        context.err(
            spec.loc,
            "identity_api",
            "the userauth API is served on the admin listener: add an `admin:` section",
        );
    }
    if s.allow_from.value.is_empty() {
        context.err(
            s.allow_from.loc,
            "identity_api.allow_from",
            "list the addresses of the DHCP servers or NACs that may call the API (e.g. 10.0.0.2/32)",
        );
    }
    let users = s
        .users_file
        .as_ref()
        .and_then(|file| super::users_file::load(file, "identity_api.users_file", context));
    let mut writers = HashSet::new();
    for (i, writer) in s.writers.iter().enumerate() {
        let path = format!("identity_api.writers[{i}]");
        if s.users_file.is_none() {
            context.err(
                writer.loc,
                &path,
                "writers are users of the users file: add `users_file`",
            );
        } else if users.as_ref().is_some_and(|u| !u.contains(&writer.value)) {
            context.err(
                writer.loc,
                &path,
                format!("\"{}\" is not a user of the users file", writer.value),
            );
        }
        writers.insert(writer.value.clone());
    }
    let mut interfaces = Vec::new();
    for (i, interface) in s.interfaces.iter().enumerate() {
        let name = &interface.value;
        if !crate::identity::userauth::valid_interface(name) {
            context.err(
                interface.loc,
                &format!("identity_api.interfaces[{i}]"),
                format!("an interface name is 1 to {MAX_INTERFACE_BYTES} letters, digits, `-`, `_`, `.` or `:`"),
            );
        } else if interfaces.contains(name) {
            context.err(
                interface.loc,
                &format!("identity_api.interfaces[{i}]"),
                format!("interface \"{name}\" is listed twice"),
            );
        }
        interfaces.push(name.clone());
    }
    if context.errors.len() > errors_before {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Some(Arc::new(IdentityApi {
        allow_from: IpList::new(s.allow_from.value.iter().map(|c| c.0).collect()),
        users,
        writers,
        interfaces,
        verifications: tokio::sync::Semaphore::new(cores),
    }))
}
