//! HMAC signatures through the real gateway, made and checked by an independent
//! implementation: the AWS SDK's own SigV4 signer (`aws-sigv4`).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::common::{client, problem_code, Backend, TestGateway};

const PARTNER_KEY: &str = "AKIDPARTNERONE";
const PARTNER_SECRET: &str = "partner-one-secret-2026-11";
const PREVIOUS_SECRET: &str = "partner-one-secret-2026-10";
const BILLING_SECRET: &str = "billing-api-secret-for-the-gateway";

/// Who signs, and for which service.
pub struct SdkKey<'a> {
    pub key: &'a str,
    pub secret: &'a str,
    pub service: &'a str,
}

/// Signs with the SDK; returns the headers to add (header form) or the signed URL (query form).
pub fn sdk_sign(
    k: &SdkKey<'_>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
    presign: bool,
) -> (Vec<(String, String)>, String) {
    let identity: Identity = Credentials::new(k.key, k.secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    if presign {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(300));
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name(k.service)
        .time(time)
        .settings(settings)
        .build()
        .expect("params")
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("signs").into_parts();
    let added = instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut signed_url = url.to_owned();
    for (i, (k, v)) in instructions.params().iter().enumerate() {
        let sep = if i == 0 && !url.contains('?') {
            '?'
        } else {
            '&'
        };
        let v: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
        signed_url.push_str(&format!("{sep}{k}={}", v.replace('+', "%20")));
    }
    (added, signed_url)
}

struct Signed {
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    method: reqwest::Method,
}

fn partner_request(
    gw: &TestGateway,
    method: &str,
    path_query: &str,
    body: &[u8],
    time: SystemTime,
    secret: &str,
) -> Signed {
    let url = gw.url(path_query);
    let host = gw.addr.to_string();
    let base = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let (added, _) = sdk_sign(
        &SdkKey {
            key: PARTNER_KEY,
            secret,
            service: "orders",
        },
        method,
        &url,
        &base,
        body,
        time,
        false,
    );
    let mut headers: Vec<(String, String)> =
        vec![("content-type".into(), "application/json".into())];
    headers.extend(added);
    Signed {
        url,
        headers,
        body: body.to_vec(),
        method: method.parse().expect("method"),
    }
}

fn send(s: &Signed) -> reqwest::blocking::Response {
    let mut req = client()
        .request(s.method.clone(), &s.url)
        .body(s.body.clone());
    for (k, v) in &s.headers {
        req = req.header(k, v);
    }
    req.send().expect("send")
}

fn start() -> (Backend, TestGateway) {
    let backend = Backend::start();
    let gw = TestGateway::from_policy("hmac-partner-api.yaml", &backend.url());
    (backend, gw)
}

#[test]
fn sdk_signed_requests_pass_and_the_upstream_gets_the_gateways_signature() {
    let (backend, gw) = start();
    let body = br#"{"item":"widget","qty":3}"#;
    let signed = partner_request(
        &gw,
        "POST",
        "/partner/orders?region=eu&b=2",
        body,
        SystemTime::now(),
        PARTNER_SECRET,
    );
    let resp = send(&signed);
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.uri, "/orders?region=eu&b=2");
    assert_eq!(seen.body, body);
    assert_eq!(seen.headers["x-partner"], "partner-one");
    assert_eq!(seen.headers["x-partner-tier"], "gold");

    // The partner's credential did not go upstream; the gateway's own signature did, and the
    // SDK, signing the received request with the billing key at the same time, agrees.
    let auth = seen.headers["authorization"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDGATEWAY/"),
        "{auth}"
    );
    let signed_list = auth
        .split("SignedHeaders=")
        .nth(1)
        .expect("list")
        .split(',')
        .next()
        .expect("list");
    let amz_date = seen.headers["x-amz-date"].to_str().expect("ascii");
    let time = SystemTime::UNIX_EPOCH
        + Duration::from_secs(portcullis_assertions::hmac::parse_amz_date(amz_date).expect("date"));
    let headers: Vec<(String, String)> = signed_list
        .split(';')
        .filter(|h| *h != "x-amz-date")
        .map(|h| {
            (
                h.to_owned(),
                seen.headers[h].to_str().expect("ascii").to_owned(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let host = seen.headers["host"].to_str().expect("ascii");
    let (sdk, _) = sdk_sign(
        &SdkKey {
            key: "AKIDGATEWAY",
            secret: BILLING_SECRET,
            service: "billing",
        },
        &seen.method,
        &format!("http://{host}{}", seen.uri),
        &pairs,
        &seen.body,
        time,
        false,
    );
    let sdk_auth = sdk
        .iter()
        .find(|(k, _)| k == "authorization")
        .expect("authorization")
        .1
        .clone();
    assert_eq!(auth, sdk_auth);

    // A key being rotated out still verifies.
    let old = partner_request(
        &gw,
        "GET",
        "/partner/orders/7",
        b"",
        SystemTime::now(),
        PREVIOUS_SECRET,
    );
    assert_eq!(send(&old).status(), 200);
}

#[test]
fn a_one_bit_change_a_replay_or_an_old_signature_is_refused() {
    let (backend, gw) = start();
    let body = br#"{"item":"widget","qty":3}"#;
    let fresh = || {
        partner_request(
            &gw,
            "POST",
            "/partner/orders?b=2",
            body,
            SystemTime::now(),
            PARTNER_SECRET,
        )
    };
    let refused = |s: &Signed| {
        let (status, code, _) = problem_code(send(s));
        (status, code)
    };

    // The SDK signs the body's hash inside the canonical request (no x-amz-content-sha256
    // header by default), so a changed body no longer matches the signature.
    let mut s = fresh();
    s.body[5] ^= 1;
    assert_eq!(refused(&s), (403, "SignatureDoesNotMatch".to_owned()));
    let mut s = fresh();
    s.url = s.url.replace("/partner/orders", "/partner/ordert");
    assert_eq!(refused(&s).1, "SignatureDoesNotMatch");
    let mut s = fresh();
    s.url = s.url.replace("b=2", "b=3");
    assert_eq!(refused(&s).1, "SignatureDoesNotMatch");
    let mut s = fresh();
    s.headers.retain(|(k, _)| k != "content-type");
    s.headers
        .push(("content-type".into(), "application/jsoo".into()));
    assert_eq!(refused(&s).1, "SignatureDoesNotMatch");
    let mut s = fresh();
    for (k, v) in &mut s.headers {
        if k == "x-amz-date" {
            // One second later: the last digit of the seconds changes, whatever it was.
            v.pop(); // 'Z'
            let digit = v.pop().expect("digit");
            v.push(if digit == '1' { '2' } else { '1' });
            v.push('Z');
        }
    }
    assert_eq!(refused(&s).1, "SignatureDoesNotMatch");
    assert_eq!(
        backend.count(),
        0,
        "no altered request reached the upstream"
    );

    // The same signed request twice: the second is a replay.
    let s = fresh();
    assert_eq!(send(&s).status(), 200);
    assert_eq!(refused(&s), (403, "ReplayedRequest".to_owned()));

    // Signed 16 minutes ago.
    let old = partner_request(
        &gw,
        "GET",
        "/partner/orders",
        b"",
        SystemTime::now() - Duration::from_secs(16 * 60),
        PARTNER_SECRET,
    );
    assert_eq!(refused(&old), (403, "RequestTimeTooSkewed".to_owned()));

    // A wrong secret and an unknown key.
    let wrong = partner_request(
        &gw,
        "GET",
        "/partner/orders",
        b"",
        SystemTime::now(),
        "not-the-secret",
    );
    assert_eq!(refused(&wrong), (403, "SignatureDoesNotMatch".to_owned()));
    let resp = client()
        .get(gw.url("/partner/orders"))
        .send()
        .expect("send");
    let (status, code, _) = problem_code(resp);
    assert_eq!((status, code.as_str()), (401, "MissingAuthenticationToken"));
    assert_eq!(backend.count(), 1);
}

#[test]
fn sdk_presigned_urls_pass() {
    let (backend, gw) = start();
    let url = gw.url("/partner/orders/9?format=json");
    let host = gw.addr.to_string();
    let (_, signed_url) = sdk_sign(
        &SdkKey {
            key: PARTNER_KEY,
            secret: PARTNER_SECRET,
            service: "orders",
        },
        "GET",
        &url,
        &[("host", host.as_str())],
        b"",
        SystemTime::now(),
        true,
    );
    assert!(signed_url.contains("X-Amz-Signature="), "{signed_url}");
    let resp = client().get(&signed_url).send().expect("send");
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let seen = backend.seen().pop().expect("reached");
    assert_eq!(seen.headers["x-partner"], "partner-one");
    // The partner's signature and credential stay at the gateway (credentials are stripped
    // once require_hmac authenticated the caller); the gateway's own signature covers the
    // query that goes up.
    assert!(seen.uri.ends_with("/orders/9?format=json"), "{}", seen.uri);
    assert!(
        seen.headers["authorization"]
            .to_str()
            .is_ok_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDGATEWAY")),
        "{:?}",
        seen.headers.get("authorization")
    );
    // Tampered query: refused.
    let tampered = signed_url.replace("format=json", "format=xml");
    let (status, code, _) = problem_code(client().get(&tampered).send().expect("send"));
    assert_eq!((status, code.as_str()), (403, "SignatureDoesNotMatch"));
}

/// A custom scheme, signed here with a plain HMAC (RustCrypto's, not the gateway's code path).
#[test]
fn a_template_scheme_checks_what_the_operator_defined() {
    use hmac::{Hmac, Mac};
    use sha2::Digest;
    let backend = Backend::start();
    // The key's secret is the preamble's `admin_token` secret, whose value the test knows.
    let services = r#"
keys:
  apps: [{access_key: app-7, client: billing-app, secrets: [admin_token]}]
services:
  - name: custom
    upstream: {backend}
    request:
      - require_hmac:
          scheme: template
          keys: apps
          header: X-Signature
          format: "v1 key=${key_id} sig=${signature}"
          algorithm: sha256
          encoding: hex
          date_header: X-Date
          string_to_sign: "${request.method}\n${request.path}\n${request.header.x-date}\n${body.sha256}"
      - set_header: {name: X-App, value: "${client.id} via ${hmac.key_id}"}
"#;
    let gw = TestGateway::start(services, &backend.url());
    let date = httpdate::fmt_http_date(SystemTime::now());
    let body = b"amount=12.50";
    let sts = format!(
        "POST\n/pay\n{date}\n{}",
        hex::encode(sha2::Sha256::digest(body))
    );
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(crate::common::ADMIN_TOKEN.as_bytes()).expect("key");
    mac.update(sts.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    let send = |sig: &str, body: &[u8]| {
        client()
            .post(gw.url("/pay"))
            .header("x-date", &date)
            .header("x-signature", format!("v1 key=app-7 sig={sig}"))
            .body(body.to_vec())
            .send()
            .expect("send")
    };
    let resp = send(&sig, body);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        backend.seen().pop().expect("reached").headers["x-app"],
        "billing-app via app-7"
    );
    let (status, code, _) = problem_code(send(&sig, b"amount=99.50"));
    assert_eq!((status, code.as_str()), (403, "SignatureDoesNotMatch"));
    let (status, code, _) = problem_code(send(&sig, body));
    assert_eq!((status, code.as_str()), (403, "ReplayedRequest"));
    let (status, code, _) = problem_code(send("zz-not-hex", body));
    assert_eq!((status, code.as_str()), (400, "IncompleteSignature"));
}

/// The AWS SDK signer in its default mode (as botocore signs every service but S3) encodes
/// each path segment twice in the canonical URI: paths holding a percent-escape must verify,
/// in the header and in presigned URLs, and the upstream gets the path as sent.
#[test]
fn sdk_double_encoded_paths_with_escapes_pass() {
    let (backend, gw) = start();
    for path in [
        "/partner/items/a%20b",
        "/partner/caf%C3%A9",
        "/partner/a%2Bb/%28x%29",
    ] {
        let signed = partner_request(&gw, "GET", path, b"", SystemTime::now(), PARTNER_SECRET);
        let resp = send(&signed);
        assert_eq!(
            resp.status(),
            200,
            "{path}: {}",
            resp.text().unwrap_or_default()
        );
        let forwarded = path.strip_prefix("/partner").expect("prefix");
        assert_eq!(backend.seen().pop().expect("reached").uri, forwarded);

        let host = gw.addr.to_string();
        let (_, signed_url) = sdk_sign(
            &SdkKey {
                key: PARTNER_KEY,
                secret: PARTNER_SECRET,
                service: "orders",
            },
            "GET",
            &gw.url(path),
            &[("host", host.as_str())],
            b"",
            SystemTime::now(),
            true,
        );
        let resp = client().get(&signed_url).send().expect("send");
        assert_eq!(
            resp.status(),
            200,
            "presigned {path}: {}",
            resp.text().unwrap_or_default()
        );
    }
}

/// A request the gateway cannot sign for the upstream is refused with the signing step's own
/// code and detail, not a generic failure: here an `x-amz-*` header (which `sign_hmac` signs)
/// holds bytes that are not text.
#[test]
fn an_outbound_signing_failure_is_answered_with_its_own_code() {
    use std::io::{Read, Write};
    let backend = Backend::start();
    let services = r#"
keys:
  billing: [{access_key: AKIDGATEWAY, client: gateway, secrets: [admin_token]}]
services:
  - name: signed
    upstream: {backend}
    request:
      - sign_hmac: {scheme: aws-sigv4, keys: billing, access_key: AKIDGATEWAY, region: eu-west-1, service: billing}
"#;
    let gw = TestGateway::start(services, &backend.url());
    let mut s = std::net::TcpStream::connect(gw.addr).expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Amz-Meta: caf\xe9\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains("urn:portcullis:problem:signing-failed"),
        "{answer}"
    );
    assert!(
        answer.contains("could not sign the upstream request"),
        "{answer}"
    );
    assert_eq!(backend.count(), 0);
}
