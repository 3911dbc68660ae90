//! `allow_ip` and `deny_ip`: the client's address against a list of CIDR blocks.

use portcullis_assertions::ip::{AllowIp, DenyIp, IpList};
use portcullis_assertions::Assertion;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::config::context::CompileContext;
use crate::config::values::Cidr;

/// CIDR blocks (a bare address is one host) whose clients pass.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AllowIpSpec(pub Vec<Cidr>);

/// CIDR blocks (a bare address is one host) whose clients are refused.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct DenyIpSpec(pub Vec<Cidr>);

impl CompileStep for AllowIpSpec {
    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        Some(Box::new(AllowIp::new(ip_list(&self.0, site, context))))
    }
}

impl CompileStep for DenyIpSpec {
    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        Some(Box::new(DenyIp::new(ip_list(&self.0, site, context))))
    }
}

fn ip_list(blocks: &[Cidr], site: &StepSite<'_>, context: &mut CompileContext<'_>) -> IpList {
    if blocks.is_empty() {
        context.err(
            site.loc,
            site.path,
            format!("{} needs at least one CIDR block", site.kind),
        );
    }
    IpList::new(blocks.iter().map(|block| block.0).collect())
}
