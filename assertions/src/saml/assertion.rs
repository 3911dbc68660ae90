//! Finding the one assertion of a document, checking its signatures sit where they
//! protect it (the signature-wrapping defence), and reading it.
//!
//! The defence rests on node identity, not on looking an ID up twice: the document holds
//! exactly one SAML 2.0 `Assertion`, either the root or a direct child of a root
//! `samlp:Response`; every `ds:Signature` in the document is a direct child of one of
//! those two elements and signs exactly its parent; the assertion read is that node.
//! IDs are unique in the whole document (see [`IdIndex`](super::dsig::IdIndex)).

use jiff::Timestamp;

use super::xml::{Document, NodeId};

/// The SAML 2.0 assertion namespace.
pub const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// The SAML 2.0 protocol namespace.
pub const SAMLP_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// The bearer subject confirmation method.
pub const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// The status of a successful response.
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// Why a document is not an acceptable SAML assertion (before any time or audience check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the document is neither a SAML 2.0 Assertion nor a Response")]
    NotSaml,
    #[error("the document holds {0} assertions; exactly one is accepted")]
    AssertionCount(usize),
    #[error("encrypted assertions and identifiers are not supported")]
    Encrypted,
    #[error("the assertion is not a direct child of the Response")]
    AssertionMisplaced,
    #[error("the document is not signed")]
    Unsigned,
    #[error("the assertion itself is not signed (only the Response is)")]
    AssertionUnsigned,
    #[error("a signature is not a direct child of the Assertion or the Response")]
    SignatureMisplaced,
    #[error("the Response status is not Success")]
    StatusNotSuccess,
    #[error("required element or attribute {0} is missing")]
    Missing(&'static str),
    #[error("{0} appears more than once")]
    Repeated(&'static str),
    #[error("{0} must hold text only")]
    NotText(&'static str),
    #[error("the subject's NameID is empty")]
    EmptyNameId,
    #[error("{0} is not an xs:dateTime in UTC")]
    BadTime(&'static str),
    #[error("the assertion version is not 2.0")]
    Version,
    #[error("attribute {0:?} appears twice")]
    DuplicateAttribute(String),
}

/// The subject of an assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The NameID's text, all its text nodes joined (comments inside do not cut it).
    pub name_id: String,
    pub format: Option<String>,
    pub name_qualifier: Option<String>,
    pub sp_name_qualifier: Option<String>,
}

/// A `SubjectConfirmation` with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectConfirmation {
    pub method: String,
    pub not_before: Option<Timestamp>,
    pub not_on_or_after: Option<Timestamp>,
    pub recipient: Option<String>,
    pub in_response_to: Option<String>,
}

/// The assertion's `Conditions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub not_before: Option<Timestamp>,
    pub not_on_or_after: Option<Timestamp>,
    /// Each `AudienceRestriction`'s audiences; every restriction must be satisfied.
    pub audience_restrictions: Vec<Vec<String>>,
    pub one_time_use: bool,
}

/// A SAML attribute and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAttribute {
    pub name: String,
    pub friendly_name: Option<String>,
    pub values: Vec<String>,
}

/// Which element the verified signatures cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedParts {
    /// The assertion carries its own valid signature.
    pub assertion: bool,
    /// The enclosing Response carries a valid signature (covering the assertion).
    pub response: bool,
}

/// An assertion whose signature verified, as read from the signed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The assertion's `ID`: the key of a OneTimeUse / replay marker.
    pub id: String,
    pub issuer: String,
    pub issue_instant: Timestamp,
    pub subject: Subject,
    pub confirmations: Vec<SubjectConfirmation>,
    pub conditions: Option<Conditions>,
    /// `SessionIndex` of the first `AuthnStatement` that has one.
    pub session_index: Option<String>,
    pub authn_instant: Option<Timestamp>,
    pub session_not_on_or_after: Option<Timestamp>,
    pub attributes: Vec<SamlAttribute>,
    /// The Response's `Issuer`, when the assertion came inside one that names it.
    pub response_issuer: Option<String>,
    pub signed: SignedParts,
}

impl VerifiedAssertion {
    /// The values of attribute `name`.
    #[must_use]
    pub fn attribute(&self, name: &str) -> Option<&[String]> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.values.as_slice())
    }

    /// The earliest `NotOnOrAfter` among the conditions and the bearer confirmations:
    /// how long a verdict about this assertion may be cached.
    #[must_use]
    pub fn not_on_or_after(&self) -> Option<Timestamp> {
        let bearer = self
            .confirmations
            .iter()
            .filter(|c| c.method == BEARER)
            .filter_map(|c| c.not_on_or_after);
        self.conditions
            .as_ref()
            .and_then(|c| c.not_on_or_after)
            .into_iter()
            .chain(bearer)
            .min()
    }

    /// True when the assertion's conditions carry `OneTimeUse`.
    #[must_use]
    pub fn one_time_use(&self) -> bool {
        self.conditions.as_ref().is_some_and(|c| c.one_time_use)
    }
}

/// Where the assertion sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub assertion: NodeId,
    /// The root Response, when the assertion is inside one.
    pub response: Option<NodeId>,
}

/// Finds the single assertion and checks its place.
///
/// # Errors
/// [`AssertionError`] when the root is not SAML, assertions are encrypted, there is not
/// exactly one, or it is not where it must be.
pub fn locate(doc: &Document) -> Result<Located, AssertionError> {
    let root = doc.root();
    let root_el = doc.element(root).ok_or(AssertionError::NotSaml)?;
    let is_response = root_el.name.is(SAMLP_NS, "Response");
    if !is_response && !root_el.name.is(SAML_NS, "Assertion") {
        return Err(AssertionError::NotSaml);
    }
    let mut assertions = Vec::new();
    for el in doc.elements() {
        let Some(e) = doc.element(el) else { continue };
        if e.name.ns == SAML_NS {
            match e.name.local.as_str() {
                "Assertion" => assertions.push(el),
                "EncryptedAssertion" | "EncryptedID" => return Err(AssertionError::Encrypted),
                _ => {}
            }
        }
    }
    if assertions.len() != 1 {
        return Err(AssertionError::AssertionCount(assertions.len()));
    }
    let assertion = assertions[0];
    if is_response {
        if doc.node(assertion).parent != Some(root) {
            return Err(AssertionError::AssertionMisplaced);
        }
        check_status(doc, root)?;
        Ok(Located {
            assertion,
            response: Some(root),
        })
    } else {
        Ok(Located {
            assertion,
            response: None,
        })
    }
}

fn check_status(doc: &Document, response: NodeId) -> Result<(), AssertionError> {
    let status = one(doc, response, SAMLP_NS, "Status", "Status")?
        .ok_or(AssertionError::Missing("Status"))?;
    let code = one(doc, status, SAMLP_NS, "StatusCode", "StatusCode")?
        .ok_or(AssertionError::Missing("StatusCode"))?;
    match doc.element(code).and_then(|e| e.attr("Value")) {
        Some(STATUS_SUCCESS) => Ok(()),
        Some(_) => Err(AssertionError::StatusNotSuccess),
        None => Err(AssertionError::Missing("StatusCode Value")),
    }
}

/// Reads the assertion at `at` (the node whose signature verified, or the single child
/// of the verified Response).
///
/// # Errors
/// [`AssertionError`] when a required part is missing, repeated or malformed.
pub fn read(
    doc: &Document,
    located: Located,
    signed: SignedParts,
) -> Result<VerifiedAssertion, AssertionError> {
    let at = located.assertion;
    let e = doc.element(at).ok_or(AssertionError::NotSaml)?;
    if e.attr("Version") != Some("2.0") {
        return Err(AssertionError::Version);
    }
    let id = e
        .attr("ID")
        .ok_or(AssertionError::Missing("ID"))?
        .to_string();
    let issue_instant = time(e.attr("IssueInstant"), "IssueInstant")?
        .ok_or(AssertionError::Missing("IssueInstant"))?;
    let issuer =
        one(doc, at, SAML_NS, "Issuer", "Issuer")?.ok_or(AssertionError::Missing("Issuer"))?;
    let issuer = text(doc, issuer, "Issuer")?;

    let subject_el =
        one(doc, at, SAML_NS, "Subject", "Subject")?.ok_or(AssertionError::Missing("Subject"))?;
    let subject = read_subject(doc, subject_el)?;
    let mut confirmations = Vec::new();
    for sc in doc.children_named(subject_el, SAML_NS, "SubjectConfirmation") {
        confirmations.push(read_confirmation(doc, sc)?);
    }

    let conditions = match one(doc, at, SAML_NS, "Conditions", "Conditions")? {
        Some(c) => Some(read_conditions(doc, c)?),
        None => None,
    };

    let mut session_index = None;
    let mut authn_instant = None;
    let mut session_not_on_or_after = None;
    for statement in doc.children_named(at, SAML_NS, "AuthnStatement") {
        let s = doc.element(statement).ok_or(AssertionError::NotSaml)?;
        if session_index.is_none() {
            session_index = s.attr("SessionIndex").map(str::to_string);
            authn_instant = time(s.attr("AuthnInstant"), "AuthnInstant")?;
            session_not_on_or_after = time(s.attr("SessionNotOnOrAfter"), "SessionNotOnOrAfter")?;
        }
    }

    let mut attributes: Vec<SamlAttribute> = Vec::new();
    for statement in doc.children_named(at, SAML_NS, "AttributeStatement") {
        for a in doc.children_named(statement, SAML_NS, "Attribute") {
            let ae = doc.element(a).ok_or(AssertionError::NotSaml)?;
            let name = ae
                .attr("Name")
                .ok_or(AssertionError::Missing("Attribute Name"))?;
            if attributes.iter().any(|x| x.name == name) {
                return Err(AssertionError::DuplicateAttribute(
                    name.chars().take(64).collect(),
                ));
            }
            let mut values = Vec::new();
            for v in doc.children_named(a, SAML_NS, "AttributeValue") {
                // Element content (a NameID inside, as eduPersonTargetedID) reads as its
                // text, not as a refusal of the whole assertion.
                values.push(
                    doc.text_content(v)
                        .unwrap_or_else(|| doc.descendant_text(v)),
                );
            }
            attributes.push(SamlAttribute {
                name: name.to_string(),
                friendly_name: ae.attr("FriendlyName").map(str::to_string),
                values,
            });
        }
    }

    let response_issuer = match located.response {
        Some(r) => match one(doc, r, SAML_NS, "Issuer", "Issuer")? {
            Some(i) => Some(text(doc, i, "Issuer")?),
            None => None,
        },
        None => None,
    };

    Ok(VerifiedAssertion {
        id,
        issuer,
        issue_instant,
        subject,
        confirmations,
        conditions,
        session_index,
        authn_instant,
        session_not_on_or_after,
        attributes,
        response_issuer,
        signed,
    })
}

fn read_subject(doc: &Document, subject: NodeId) -> Result<Subject, AssertionError> {
    let name_id =
        one(doc, subject, SAML_NS, "NameID", "NameID")?.ok_or(AssertionError::Missing("NameID"))?;
    let e = doc.element(name_id).ok_or(AssertionError::NotSaml)?;
    let value = text(doc, name_id, "NameID")?;
    if value.trim().is_empty() {
        return Err(AssertionError::EmptyNameId);
    }
    Ok(Subject {
        name_id: value,
        format: e.attr("Format").map(str::to_string),
        name_qualifier: e.attr("NameQualifier").map(str::to_string),
        sp_name_qualifier: e.attr("SPNameQualifier").map(str::to_string),
    })
}

fn read_confirmation(doc: &Document, sc: NodeId) -> Result<SubjectConfirmation, AssertionError> {
    let e = doc.element(sc).ok_or(AssertionError::NotSaml)?;
    let method = e
        .attr("Method")
        .ok_or(AssertionError::Missing("SubjectConfirmation Method"))?
        .to_string();
    let mut out = SubjectConfirmation {
        method,
        not_before: None,
        not_on_or_after: None,
        recipient: None,
        in_response_to: None,
    };
    if let Some(data) = one(
        doc,
        sc,
        SAML_NS,
        "SubjectConfirmationData",
        "SubjectConfirmationData",
    )? {
        let d = doc.element(data).ok_or(AssertionError::NotSaml)?;
        out.not_before = time(d.attr("NotBefore"), "SubjectConfirmationData NotBefore")?;
        out.not_on_or_after = time(
            d.attr("NotOnOrAfter"),
            "SubjectConfirmationData NotOnOrAfter",
        )?;
        out.recipient = d.attr("Recipient").map(str::to_string);
        out.in_response_to = d.attr("InResponseTo").map(str::to_string);
    }
    Ok(out)
}

fn read_conditions(doc: &Document, c: NodeId) -> Result<Conditions, AssertionError> {
    let e = doc.element(c).ok_or(AssertionError::NotSaml)?;
    let mut out = Conditions {
        not_before: time(e.attr("NotBefore"), "Conditions NotBefore")?,
        not_on_or_after: time(e.attr("NotOnOrAfter"), "Conditions NotOnOrAfter")?,
        ..Conditions::default()
    };
    for r in doc.children_named(c, SAML_NS, "AudienceRestriction") {
        let mut audiences = Vec::new();
        for a in doc.children_named(r, SAML_NS, "Audience") {
            audiences.push(text(doc, a, "Audience")?);
        }
        out.audience_restrictions.push(audiences);
    }
    match doc.children_named(c, SAML_NS, "OneTimeUse").count() {
        0 => {}
        1 => out.one_time_use = true,
        _ => return Err(AssertionError::Repeated("OneTimeUse")),
    }
    Ok(out)
}

/// The one child `{ns}local` of `parent`, if any.
fn one(
    doc: &Document,
    parent: NodeId,
    ns: &str,
    local: &str,
    what: &'static str,
) -> Result<Option<NodeId>, AssertionError> {
    let mut found = doc.children_named(parent, ns, local);
    let first = found.next();
    if found.next().is_some() {
        return Err(AssertionError::Repeated(what));
    }
    Ok(first)
}

fn text(doc: &Document, id: NodeId, what: &'static str) -> Result<String, AssertionError> {
    doc.text_content(id).ok_or(AssertionError::NotText(what))
}

/// An xs:dateTime that carries `Z` or an offset (SAML requires UTC).
fn time(value: Option<&str>, what: &'static str) -> Result<Option<Timestamp>, AssertionError> {
    match value {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|_| AssertionError::BadTime(what)),
    }
}
