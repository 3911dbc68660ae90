//! `set_header` / `remove_header`, on the request going up or the response coming back.

use http::{HeaderName, StatusCode};

use crate::exchange::Exchange;
use crate::head::{RequestView, ResponseHead};
use crate::template::Template;
use crate::verdict::{Rejection, Verdict};
use crate::{Assertion, Request};

/// Headers that carry message framing or connection state: editing them would corrupt the
/// exchange, so policies may not touch them.
pub const PROTECTED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// True when a policy may edit this header.
#[must_use]
pub fn editable(name: &HeaderName) -> bool {
    !PROTECTED.contains(&name.as_str())
}

/// The compiled `set_header` step.
#[derive(Debug)]
pub struct SetHeader {
    name: HeaderName,
    value: Template,
    unrenderable: Rejection,
}

impl SetHeader {
    #[must_use]
    pub fn new(name: HeaderName, value: Template) -> Self {
        SetHeader {
            unrenderable: Rejection::new(
                StatusCode::BAD_REQUEST,
                "invalid-header-value",
                format!("the value for header {name} contains characters a header cannot hold"),
            ),
            name,
            value,
        }
    }
}

impl Assertion for SetHeader {
    fn kind(&self) -> &'static str {
        "set_header"
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::HEADS
    }

    fn on_request(&self, req: &mut Request<'_>, x: &mut Exchange) -> Verdict {
        let Some(value) = self.value.render_header(&*req.head, x) else {
            return Verdict::Reject(self.unrenderable.clone());
        };
        req.head.set_header(self.name.clone(), value);
        Verdict::Continue
    }

    fn on_response(
        &self,
        req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        x: &mut Exchange,
    ) -> Verdict {
        let Some(value) = self.value.render_header(req, x) else {
            return Verdict::Reject(self.unrenderable.clone());
        };
        resp.set_header(self.name.clone(), value);
        Verdict::Continue
    }
}

/// The compiled `remove_header` step.
#[derive(Debug)]
pub struct RemoveHeader {
    names: Vec<HeaderName>,
}

impl RemoveHeader {
    #[must_use]
    pub fn new(names: Vec<HeaderName>) -> Self {
        RemoveHeader { names }
    }
}

impl Assertion for RemoveHeader {
    fn kind(&self) -> &'static str {
        "remove_header"
    }

    fn phases(&self) -> crate::Phases {
        crate::Phases::HEADS
    }

    fn on_request(&self, req: &mut Request<'_>, _x: &mut Exchange) -> Verdict {
        for name in &self.names {
            req.head.remove_header(name);
        }
        Verdict::Continue
    }

    fn on_response(
        &self,
        _req: &dyn RequestView,
        resp: &mut dyn ResponseHead,
        _x: &mut Exchange,
    ) -> Verdict {
        for name in &self.names {
            resp.remove_header(name);
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exchange::VarRegistry;

    #[test]
    fn set_and_remove_on_both_sides() {
        let reg = VarRegistry::new();
        let set = SetHeader::new(
            HeaderName::from_static("x-client"),
            Template::parse("${client.id}@${request.method}", &reg).expect("template"),
        );
        let remove = RemoveHeader::new(vec![HeaderName::from_static("authorization")]);
        let (mut req, ()) = http::Request::builder()
            .method("PUT")
            .header("authorization", "Bearer abc")
            .body(())
            .expect("request")
            .into_parts();
        let mut x = Exchange::new(2, [0, 0, 0, 0].into(), [0, 0, 0, 0].into());
        x.set(reg.lookup("client.id").expect("id"), Arc::from("acme"));
        let mut r = Request {
            head: &mut req,
            body: None,
        };
        assert!(set.on_request(&mut r, &mut x).is_continue());
        assert!(remove.on_request(&mut r, &mut x).is_continue());
        assert_eq!(req.headers().get("x-client").expect("set"), "acme@PUT");
        assert!(req.headers().get("authorization").is_none());

        let (mut resp, ()) = http::Response::builder()
            .header("server", "internal/1.0")
            .body(())
            .expect("response")
            .into_parts();
        let remove = RemoveHeader::new(vec![HeaderName::from_static("server")]);
        assert!(set.on_response(&req, &mut resp, &mut x).is_continue());
        assert!(remove.on_response(&req, &mut resp, &mut x).is_continue());
        assert_eq!(resp.headers.get("x-client").expect("set"), "acme@PUT");
        assert!(resp.headers.get("server").is_none());
    }

    #[test]
    fn a_value_that_cannot_be_a_header_is_refused() {
        let reg = VarRegistry::new();
        let set = SetHeader::new(
            HeaderName::from_static("x-echo"),
            Template::parse("${request.query}", &reg).expect("template"),
        );
        let (mut req, ()) = http::Request::builder()
            .uri("/?a=b")
            .body(())
            .expect("request")
            .into_parts();
        // Query strings are URI-safe, so this one renders; a control byte cannot come from a
        // URI, but an attribute value could, which render_header guards against.
        let mut x = Exchange::default();
        assert!(set
            .on_request(
                &mut Request {
                    head: &mut req,
                    body: None
                },
                &mut x
            )
            .is_continue());
        assert_eq!(req.headers.get("x-echo").expect("set"), "a=b");
        assert!(!editable(&HeaderName::from_static("content-length")));
        assert!(editable(&HeaderName::from_static("x-anything")));
    }
}
