//! Integration tests: the real gateway on ephemeral loopback ports, in front of a real
//! HTTP backend, driven by a real HTTP client.

mod common;

mod admin;
mod assertions;
mod bodies;
mod browser;
mod brute_force;
mod capture;
mod credentials;
mod fleet;
mod fleet_limits;
mod fleet_process;
mod framing;
mod hmac;
mod ip_identity;
mod oauth;
mod oauth_provider;
mod oproxy;
mod outbound_broker;
mod pan;
mod pools;
mod quota;
mod rate_limit;
mod redis;
mod routing;
mod saml;
mod saml_bearer;
mod saml_issuer;
mod shadow;
mod slow_clients;
mod tls;
mod upstream;
