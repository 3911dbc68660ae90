//! `inject_oauth_token`: the upstream gets `Authorization: Bearer <access token>` of a
//! provider session the gateway holds (`outbound_broker:`).

use portcullis_assertions::template::Template;
use portcullis_assertions::Assertion;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CompileStep, StepSite};
use crate::broker::inject::InjectOAuthToken;
use crate::config::context::CompileContext;
use crate::config::yaml::Spanned;

/// Send the request upstream with the access token of a provider session.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectOAuthTokenSpec {
    /// The provider (a session under `outbound_broker.sessions`).
    pub provider: Spanned<String>,
    /// One session per calling identity: a template naming whose session it is, e.g.
    /// `${client.id}`. Each key needs its own handshake (`/broker/{provider}?session=KEY`).
    /// Default: one session for every caller.
    #[serde(default)]
    pub session_key: Option<Spanned<String>>,
}

impl CompileStep for InjectOAuthTokenSpec {
    fn compile(
        &self,
        site: &StepSite<'_>,
        context: &mut CompileContext<'_>,
    ) -> Option<Box<dyn Assertion>> {
        let Some(broker) = context.outbound_broker.clone() else {
            context.err(
                site.loc,
                site.path,
                "inject_oauth_token needs the outbound_broker: section (which is missing or did not compile)",
            );
            return None;
        };
        if !broker.providers.contains_key(&self.provider.value) {
            context.err(
                self.provider.loc,
                &site.option_path("provider"),
                format!(
                    "no session with provider \"{}\": list it under outbound_broker.sessions",
                    self.provider.value
                ),
            );
            return None;
        }
        let session_key = match &self.session_key {
            None => None,
            Some(text) => match Template::parse(&text.value, &context.registry) {
                Ok(template) => Some(template),
                Err(error) => {
                    context.err(text.loc, &site.option_path("session_key"), error.0);
                    return None;
                }
            },
        };
        Some(Box::new(InjectOAuthToken {
            broker,
            provider: self.provider.value.clone(),
            session_key,
        }))
    }
}
