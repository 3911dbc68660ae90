//! `require_ip_identity`: the client address must belong to an active user of the identity
//! table that the userauth API fills (see `portcullis_assertions::ip_identity` and
//! docs/ip-identity.md).

use std::sync::Arc;

use portcullis_assertions::ip_identity::{IpIdentityVars, RequireIpIdentity};
use portcullis_assertions::{Assertion, VarRegistry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;
use crate::config::yaml::Spanned;

const USER: &str = "identity.user";
const GROUPS: &str = "identity.groups";
const INTERFACE: &str = "identity.interface";

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireIpIdentitySpec {
    /// The user must be in one of these groups. Default: any active user passes.
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    /// The user must have been registered on one of these interfaces. Default: any.
    #[serde(default)]
    pub interfaces: Vec<Spanned<String>>,
}

impl CompileStep for RequireIpIdentitySpec {
    fn define_outputs(&self, registry: &mut VarRegistry) {
        registry.define(USER);
        registry.define(GROUPS);
        registry.define(INTERFACE);
    }

    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let errors_before = context.errors.len();
        for (i, group) in self.groups.iter().enumerate() {
            if group.value.is_empty() || group.value.contains(',') {
                context.err(
                    group.loc,
                    &format!("{}[{i}]", site.option_path("groups")),
                    "a group name is not empty and holds no comma",
                );
            }
        }
        for (i, interface) in self.interfaces.iter().enumerate() {
            if !crate::identity::userauth::valid_interface(&interface.value) {
                context.err(
                    interface.loc,
                    &format!("{}[{i}]", site.option_path("interfaces")),
                    "an interface name is 1 to 64 letters, digits, `-`, `_`, `.` or `:`",
                );
            }
        }
        let Some(store) = context.state_store.clone() else {
            context.err(
                site.loc,
                site.path,
                "require_ip_identity reads the state store, which did not open",
            );
            return None;
        };
        if context.errors.len() > errors_before {
            return None;
        }
        let vars = IpIdentityVars {
            user: context.registry.define(USER),
            groups: context.registry.define(GROUPS),
            interface: context.registry.define(INTERFACE),
        };
        let directory = context.carry.identity_directory(store.identities());
        Some(Box::new(RequireIpIdentity::new(
            self.groups.iter().map(|g| g.value.clone()).collect(),
            self.interfaces.iter().map(|i| i.value.clone()).collect(),
            Arc::new(directory),
            vars,
        )))
    }
}
