//! `${...}` templates: parsed once when a policy is compiled, rendered per request.
//!
//! Known sources: `request.method`, `request.path`, `request.query`, `request.host`,
//! `request.header.NAME`, `client.ip`, and every variable a step of the policy sets
//! (`client.id`, ...). `$${` writes a literal `${`.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::{HeaderName, HeaderValue};

use crate::exchange::{Exchange, VarId, VarRegistry};
use crate::head::RequestView;

/// Where a template variable comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Method,
    Path,
    Query,
    Host,
    Header(HeaderName),
    ClientIp,
    /// Hex SHA-256 of the body (set by the step that read it, e.g. `require_hmac`).
    BodySha256,
    Var(VarId),
}

impl Source {
    /// The value this source has for a request: borrowed where it can be (only the client
    /// address is formatted); `None` when it is unset (a header not sent, a variable no
    /// step set), so a condition can refuse what is missing rather than compare an empty
    /// string.
    #[must_use]
    pub fn value<'a>(&self, req: &'a dyn RequestView, x: &'a Exchange) -> Option<Cow<'a, str>> {
        let text = match self {
            Source::ClientIp => return Some(Cow::Owned(x.client_ip.to_string())),
            Source::Method => req.method().as_str(),
            Source::Path => req.path(),
            Source::Query => req.query()?,
            Source::Host => req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().host())?,
            Source::Header(name) => req.headers().get(name)?.to_str().ok()?,
            Source::BodySha256 => x.body_sha256()?,
            Source::Var(id) => x.get(*id)?,
        };
        Some(Cow::Borrowed(text))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var(Source),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    /// The value when the template has no variables, ready to use as a header value.
    constant: Option<HeaderValue>,
}

/// Why a template did not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

const BUILTIN: &[&str] = &[
    "request.method",
    "request.path",
    "request.query",
    "request.host",
    "request.header.NAME",
    "client.ip",
    "body.sha256",
];

/// The variable a `${name}` reference points at.
pub fn resolve(name: &str, registry: &VarRegistry) -> Result<Source, TemplateError> {
    match name {
        "request.method" => return Ok(Source::Method),
        "request.path" => return Ok(Source::Path),
        "request.query" => return Ok(Source::Query),
        "request.host" => return Ok(Source::Host),
        "client.ip" => return Ok(Source::ClientIp),
        "body.sha256" => return Ok(Source::BodySha256),
        _ => {}
    }
    if let Some(header) = name.strip_prefix("request.header.") {
        return HeaderName::from_bytes(header.as_bytes())
            .map(Source::Header)
            .map_err(|_| TemplateError(format!("\"{header}\" is not a valid header name")));
    }
    if let Some(id) = registry.lookup(name) {
        return Ok(Source::Var(id));
    }
    let known: Vec<&str> = BUILTIN.iter().copied().chain(registry.names()).collect();
    let best = known
        .iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(name, k), *k))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Err(TemplateError(match best {
        Some((_, k)) => format!("unknown variable ${{{name}}}; did you mean ${{{k}}}?"),
        None => format!("unknown variable ${{{name}}}; known: {}", known.join(", ")),
    }))
}

impl Template {
    /// Compiles `text`, resolving every `${...}` against the registry.
    pub fn parse(text: &str, registry: &VarRegistry) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                literal.push_str("${");
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let end = body
                    .find('}')
                    .ok_or_else(|| TemplateError(format!("unclosed \"${{\" in \"{text}\"")))?;
                let name = body[..end].trim();
                if name.is_empty() {
                    return Err(TemplateError("empty variable \"${}\"".to_owned()));
                }
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Var(resolve(name, registry)?));
                rest = &body[end + 1..];
            } else {
                literal.push('$');
                rest = &tail[1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        let constant = match segments.as_slice() {
            [] => Some(HeaderValue::from_static("")),
            [Segment::Literal(l)] => Some(
                HeaderValue::from_str(l)
                    .map_err(|_| TemplateError("text is not a valid header value".to_owned()))?,
            ),
            _ => None,
        };
        Ok(Template { segments, constant })
    }

    /// True when the template holds no variable.
    #[must_use]
    pub fn is_constant(&self) -> bool {
        self.constant.is_some()
    }

    /// The sources this template reads.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(source) => Some(source),
            Segment::Literal(_) => None,
        })
    }

    /// Renders into a string; a variable that is not set renders empty.
    #[must_use]
    pub fn render(&self, req: &dyn RequestView, x: &Exchange) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Var(source) => append_source(&mut out, source, req, x),
            }
        }
        out
    }

    /// Appends the rendering to `out` (a buffer the caller reuses, so nothing is
    /// allocated per request); false when some variable is unset or empty, so a caller
    /// keying on it can tell "no client id" from a client id.
    pub fn render_into(&self, req: &dyn RequestView, x: &Exchange, out: &mut String) -> bool {
        let mut complete = true;
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Var(source) => {
                    let before = out.len();
                    append_source(out, source, req, x);
                    complete &= out.len() > before;
                }
            }
        }
        complete
    }

    /// Renders as a header value; `None` when the rendered text cannot be one
    /// (a control character from a client-supplied variable).
    #[must_use]
    pub fn render_header(&self, req: &dyn RequestView, x: &Exchange) -> Option<HeaderValue> {
        match &self.constant {
            Some(value) => Some(value.clone()),
            None => HeaderValue::from_str(&self.render(req, x)).ok(),
        }
    }
}

fn append_source(out: &mut String, source: &Source, req: &dyn RequestView, x: &Exchange) {
    match source {
        Source::Method => out.push_str(req.method().as_str()),
        Source::Path => out.push_str(req.path()),
        Source::Query => out.push_str(req.query().unwrap_or("")),
        Source::Host => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().host())
                .unwrap_or("");
            out.push_str(host);
        }
        Source::Header(name) => {
            if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
                out.push_str(v);
            }
        }
        Source::ClientIp => {
            let _ = write!(out, "{}", x.client_ip);
        }
        Source::BodySha256 => out.push_str(x.body_sha256().unwrap_or("")),
        Source::Var(id) => out.push_str(x.get(*id).unwrap_or("")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn request() -> http::request::Parts {
        let (parts, ()) = http::Request::builder()
            .method("POST")
            .uri("/widgets/7?color=red")
            .header("host", "api.example.com")
            .header("x-trace", "abc")
            .body(())
            .expect("request")
            .into_parts();
        parts
    }

    #[test]
    fn renders_every_source() {
        let mut reg = VarRegistry::new();
        let t = Template::parse(
            "${request.method} ${request.path}?${request.query} on ${request.host} by ${client.id} from ${client.ip} [${request.header.x-trace}] $${literal}",
            &reg,
        )
        .expect("compiles");
        let mut x = Exchange::new(2, [0, 0, 0, 0].into(), [0, 0, 0, 0].into());
        x.set(reg.define("client.id"), Arc::from("acme"));
        assert_eq!(
            t.render(&request(), &x),
            "POST /widgets/7?color=red on api.example.com by acme from 0.0.0.0 [abc] ${literal}"
        );
    }

    #[test]
    fn constant_templates_are_prepared_once() {
        let t = Template::parse("static", &VarRegistry::new()).expect("compiles");
        assert!(t.is_constant());
        assert_eq!(
            t.render_header(&request(), &Exchange::default()),
            Some(HeaderValue::from_static("static"))
        );
    }

    #[test]
    fn unknown_variables_get_a_suggestion() {
        let err = Template::parse("${client.idd}", &VarRegistry::new()).expect_err("unknown");
        assert_eq!(
            err.0,
            "unknown variable ${client.idd}; did you mean ${client.id}?"
        );
        let err = Template::parse("${zzz}", &VarRegistry::new()).expect_err("unknown");
        assert!(
            err.0
                .starts_with("unknown variable ${zzz}; known: request.method"),
            "{}",
            err.0
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(Template::parse("${client.id", &VarRegistry::new()).is_err());
        assert!(Template::parse("${}", &VarRegistry::new()).is_err());
        assert!(Template::parse("${request.header.bad name}", &VarRegistry::new()).is_err());
    }

    #[test]
    fn unset_variables_render_empty() {
        let mut reg = VarRegistry::new();
        reg.define("token.scope");
        let t = Template::parse("[${token.scope}]", &reg).expect("compiles");
        assert_eq!(t.render(&request(), &Exchange::default()), "[]");
    }
}
