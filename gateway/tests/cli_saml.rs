//! The SAML side of the `portcullis` binary as a user runs it: `hash-password`, `sign
//! saml` (verified by the SAML library), and `check` on a policy with a `saml_issuer:`
//! section and a users file, every mistake at its `file:line:col`. (Apart from `cli.rs`,
//! which is past the size a file should have.)

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_assertions::saml::{AllowedEncodings, Verifier, VerifyOptions};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/saml/xmlsec1")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn hash_password(stdin: &[u8]) -> Output {
    let mut child = bin()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write");
    child.wait_with_output().expect("wait")
}

#[test]
fn hash_password_prints_an_argon2id_phc_string_that_verifies() {
    let out = hash_password(b"correct horse battery\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let phc = text(&out.stdout).trim().to_owned();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let parsed = PasswordHash::new(&phc).expect("PHC");
    let argon2 = argon2::Argon2::default();
    assert!(argon2
        .verify_password(b"correct horse battery", &parsed)
        .is_ok());
    assert!(argon2
        .verify_password(b"correct horse battery\n", &parsed)
        .is_err());
    // A fresh salt each time.
    let again = text(&hash_password(b"correct horse battery\n").stdout);
    assert_ne!(again.trim(), phc);
    // Nothing to hash is an error, not a hash of the empty string.
    let out = hash_password(b"\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no password"));
}

fn sign_saml(key: &str, cert: Option<&str>, format: &str) -> Output {
    let key = fixture(key);
    let cert = cert.map(fixture);
    let mut args = vec![
        "sign".to_owned(),
        "saml".to_owned(),
        "--key".to_owned(),
        key.display().to_string(),
        "--issuer".to_owned(),
        "https://gateway.test/saml".to_owned(),
        "--subject".to_owned(),
        "alice".to_owned(),
        "--audience".to_owned(),
        "https://api.test".to_owned(),
        "--attribute".to_owned(),
        "group=admins".to_owned(),
        "--attribute".to_owned(),
        "group=ops".to_owned(),
        "--attribute".to_owned(),
        "email=alice@example.com".to_owned(),
        "--valid-for".to_owned(),
        "90s".to_owned(),
        "--format".to_owned(),
        format.to_owned(),
    ];
    if let Some(cert) = cert {
        args.push("--cert".to_owned());
        args.push(cert.display().to_string());
    }
    bin().args(&args).output().expect("runs")
}

#[test]
fn sign_saml_makes_assertions_the_library_verifies_in_every_format() {
    let cert = std::fs::read_to_string(fixture("p256.cert.pem")).expect("cert");
    let verifier = Verifier::from_certificates_pem(&cert, VerifyOptions::default()).expect("v");

    let out = sign_saml("p256.key.pem", Some("p256.cert.pem"), "header");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let header = text(&out.stdout);
    let a = verifier
        .verify_token(header.trim())
        .expect("header verifies");
    assert_eq!(a.subject.name_id, "alice");
    assert_eq!(a.issuer, "https://gateway.test/saml");
    assert_eq!(
        a.attribute("group"),
        Some(&["admins".to_owned(), "ops".to_owned()][..])
    );
    assert_eq!(
        a.not_on_or_after()
            .map(|t| t.as_second() - a.issue_instant.as_second()),
        Some(90)
    );

    let out = sign_saml("p256.key.pem", None, "xml");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    assert!(xml.starts_with("<saml:Assertion "), "{xml}");
    assert!(!xml.contains("X509Certificate"), "no --cert, no KeyInfo");
    verifier
        .verify_xml(xml.trim().as_bytes())
        .expect("xml verifies");

    let out = sign_saml("p256.key.pem", None, "grant");
    let grant = text(&out.stdout);
    let xml = URL_SAFE_NO_PAD.decode(grant.trim()).expect("base64url");
    let plain_only = Verifier::from_certificates_pem(
        &cert,
        VerifyOptions {
            allowed_encodings: AllowedEncodings {
                deflate: false,
                gzip: false,
                none: true,
            },
            ..VerifyOptions::default()
        },
    )
    .expect("v");
    plain_only.verify_xml(&xml).expect("grant form verifies");

    // RSA too, checked against its own certificate.
    let rsa = std::fs::read_to_string(fixture("rsa2048.cert.pem")).expect("cert");
    let out = sign_saml("rsa2048.key.pem", Some("rsa2048.cert.pem"), "header");
    assert!(out.status.success(), "{}", text(&out.stderr));
    Verifier::from_certificates_pem(&rsa, VerifyOptions::default())
        .expect("v")
        .verify_token(text(&out.stdout).trim())
        .expect("RSA verifies");

    // A certificate of another key is refused before anything is signed.
    let out = sign_saml("p256.key.pem", Some("rsa2048.cert.pem"), "header");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not the certificate of"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "sign",
        "saml",
        "--key",
        "/nonexistent.pem",
        "--issuer",
        "i",
        "--subject",
        "s",
        "--audience",
        "a",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent.pem"));
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p
}

#[test]
fn check_reports_saml_issuer_and_users_file_mistakes_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = write(
        dir.path(),
        "users.yaml",
        "users:\n  - name: alice\n    password_argon2id: \"$2b$12$notargon\"\n  - name: bob\n    password: x\n",
    );
    let policy = write(
        dir.path(),
        "saml.yaml",
        &format!(
            r#"saml_issuer:
  entity_id: https://gateway.test/saml
  signing_key: {{file: {cert}}}
  certificate: {{file: {cert}}}
  users_file: {users}
  audience: https://api.test
  validity: 2h
  path: /oauth2/token
services:
  - name: api
    upstream: http://127.0.0.1:9000
"#,
            cert = fixture("p256.cert.pem").display(),
            users = users.display(),
        ),
    );
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let (p, u) = (policy.display(), users.display());
    for expected in [
        format!("{p}:3:23: "),
        format!("{p}:7:13: validity must be between 10s and 1h"),
        format!("{p}:8:9: this path belongs to the token service"),
        format!("{u}:3:24: not a PHC string"),
        format!("{u}:5:5: unknown field"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    // The good version passes.
    let users_ok = write(
        dir.path(),
        "users-ok.yaml",
        &format!(
            "users:\n  - name: alice\n    password_argon2id: \"{}\"\n",
            portcullis::basic_auth::users::hash_password("pw").expect("hash")
        ),
    );
    let good = write(
        dir.path(),
        "good.yaml",
        &format!(
            "saml_issuer:\n  entity_id: https://gateway.test/saml\n  signing_key: {{file: {key}}}\n  certificate: {{file: {cert}}}\n  users_file: {users}\n  audience: https://api.test\nservices:\n  - name: api\n    upstream: http://127.0.0.1:9000\n",
            key = fixture("p256.key.pem").display(),
            cert = fixture("p256.cert.pem").display(),
            users = users_ok.display(),
        ),
    );
    let out = run(&["check", "-c", good.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A certificate of another key, and a users file that is not there.
    let text_of = std::fs::read_to_string(&good).expect("read");
    let mismatched = write(
        dir.path(),
        "mismatched.yaml",
        &text_of
            .replace("p256.cert.pem", "rsa2048.cert.pem")
            .replace("users-ok.yaml", "missing-users.yaml"),
    );
    let out = run(&["check", "-c", mismatched.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let m = mismatched.display();
    for expected in [
        format!("{m}:4:23: "),
        "rsa2048.cert.pem is not the signing key's certificate (at saml_issuer.certificate)"
            .to_owned(),
        format!("{m}:5:15: cannot read users file"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_reports_saml_metadata_mistakes_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metadata = std::fs::read_to_string(fixture("../metadata/idp-metadata.xml")).expect("read");
    let stale = write(
        dir.path(),
        "stale.xml",
        &metadata.replace("2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),
    );
    let assertion = fixture("signed-p256.xml");
    let policy = write(
        dir.path(),
        "saml.yaml",
        &format!(
            r#"services:
  - name: stale
    match: {{path: /stale}}
    upstream: http://127.0.0.1:9000
    request:
      - require_saml:
          metadata: {stale}
          audience: https://api.test
  - name: not-metadata
    match: {{path: /assertion}}
    upstream: http://127.0.0.1:9000
    request:
      - require_saml:
          metadata: {assertion}
          audience: https://api.test
  - name: neither
    match: {{path: /neither}}
    upstream: http://127.0.0.1:9000
    request:
      - require_saml:
          issuers: [https://idp.test]
          audience: https://api.test
  - name: wrong-entity
    match: {{path: /entity}}
    upstream: http://127.0.0.1:9000
    request:
      - require_saml:
          metadata: {good}
          metadata_entity: https://other.test
          audience: https://api.test
"#,
            stale = stale.display(),
            assertion = assertion.display(),
            good = fixture("../metadata/idp-metadata.xml").display(),
        ),
    );
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let p = policy.display();
    for expected in [
        format!("{p}:7:21: "),
        "the metadata expired at 2020-01-01T00:00:00Z (validUntil); refresh the file".to_owned(),
        format!("{p}:14:21: "),
        "not md:EntityDescriptor or md:EntitiesDescriptor".to_owned(),
        format!("{p}:20:9: "),
        "name the IdP's signing certificates (`certificates:`, a PEM file) or its SAML metadata (`metadata:`)".to_owned(),
        format!("{p}:28:21: "),
        "no identity provider with entityID \"https://other.test\" in the file (it has: https://idp.example.com/metadata)".to_owned(),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_reports_issue_saml_mistakes_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = fixture("p256.key.pem");
    let without_issuer = write(
        dir.path(),
        "no-issuer.yaml",
        "services:\n  - name: saml\n    issue_saml: {}\n    request:\n      - require_api_key: {keys: [{client: a, sha256: a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873}]}\n",
    );
    let out = run(&["check", "-c", without_issuer.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:17: issue_saml signs with the `saml_issuer:` section's key",
            without_issuer.display()
        )),
        "{stderr}"
    );
    let policy = write(
        dir.path(),
        "issue.yaml",
        &format!(
            r#"saml_issuer:
  entity_id: https://gateway.test/saml
  signing_key: {{file: {key}}}
  audience: https://api.test
services:
  - name: open
    match: {{path: /open}}
    issue_saml: {{subject: "${{request.method}}"}}
  - name: both
    match: {{path: /both}}
    upstream: http://127.0.0.1:9000
    issue_saml: {{}}
    request:
      - require_api_key: {{keys: [{{client: a, sha256: a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873}}]}}
  - name: typo
    match: {{path: /typo}}
    issue_saml: {{subject: "${{client.idd}}"}}
    request:
      - require_api_key: {{keys: [{{client: a, sha256: a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873}}]}}
  - name: nowhere
    match: {{path: /nowhere}}
  - name: careless
    match: {{path: /careless}}
    methods: [GET, POST]
    issue_saml: {{subject: "partner", attributes: {{from: "${{request.header.x-group}}"}}}}
    request:
      - require_saml: {{certificates: {cert}, issuers: [https://idp.test], audience: https://api.test}}
    response:
      - set_header: {{name: X-A, value: b}}
"#,
            cert = fixture("p256.cert.pem").display(),
            key = key.display(),
        ),
    );
    let out = run(&["check", "-c", policy.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let p = policy.display();
    for expected in [
        format!("{p}:8:17: a service that issues assertions must authenticate its callers first"),
        format!("{p}:11:15: a service with issue_saml answers itself: remove its upstream"),
        format!("{p}:17:27: unknown variable ${{client.idd}}"),
        "client.idd".to_owned(),
        format!("{p}:20:11: a service needs an upstream"),
        format!("{p}:24:15: issue_saml answers POST (the default): with GET or HEAD a link would mint assertions"),
        format!("{p}:25:17: a service that issues assertions must authenticate its callers first"),
        format!("{p}:25:17: a service that issues assertions cannot take them (require_saml)"),
        format!("{p}:25:27: the subject must name the authenticated caller through a variable"),
        format!("{p}:25:57: only variables the request steps set"),
        format!("{p}:29:9: a service with issue_saml answers itself: response steps would never run"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
