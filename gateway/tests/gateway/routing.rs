use crate::common::{client, problem_code, Backend, TestGateway};

const SERVICES: &str = r#"
services:
  - name: catch-all
    upstream: {backend}
  - name: widgets
    match: {path: /widgets}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: widgets}
  - name: widget-admin
    match: {path: /widgets/admin}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: widget-admin}
  - name: api-host
    match: {host: api.example.test, path: /widgets}
    upstream: {url: "{backend}/v2", strip_prefix: true}
    request:
      - set_header: {name: X-Service, value: api-host}
  - name: wildcard
    match: {host: "*.example.test"}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: wildcard}
"#;

fn service_of(backend: &Backend) -> String {
    let seen = backend.seen();
    let last = seen.last().expect("a request reached the backend");
    last.headers
        .get("x-service")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

#[test]
fn host_then_longest_prefix_selects_the_service() {
    let backend = Backend::start();
    let gw = TestGateway::start(SERVICES, &backend.url());
    let c = client();
    let get = |host: &str, path: &str| {
        let resp = c
            .get(gw.url(path))
            .header("host", host)
            .send()
            .expect("send");
        assert_eq!(resp.status(), 200, "{host}{path}");
        service_of(&backend)
    };
    assert_eq!(get("other.test", "/widgets/7"), "widgets");
    assert_eq!(get("other.test", "/widgets/admin/users"), "widget-admin");
    assert_eq!(get("other.test", "/widgetsx"), "");
    assert_eq!(get("api.example.test", "/widgets/7"), "api-host");
    // strip_prefix and the upstream base path rewrite the path; the query survives.
    let resp = c
        .get(gw.url("/widgets/7?color=red"))
        .header("host", "api.example.test")
        .send()
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(backend.seen().last().expect("seen").uri, "/v2/7?color=red");
    assert_eq!(get("eu.example.test", "/anything"), "wildcard");
    // The upstream gets its own Host and the forwarding headers.
    let last = backend.seen().pop().expect("seen");
    assert_eq!(last.headers["host"], backend.addr.to_string().as_str());
    assert_eq!(last.headers["x-forwarded-host"], "eu.example.test");
    assert_eq!(last.headers["x-forwarded-for"], "127.0.0.1");
}

#[test]
fn no_matching_service_is_a_404_problem() {
    let backend = Backend::start();
    let services = "services:\n  - name: only\n    match: {path: /only}\n    upstream: {backend}\n";
    let gw = TestGateway::start(services, &backend.url());
    let (status, code, _) = problem_code(client().get(gw.url("/elsewhere")).send().expect("send"));
    assert_eq!((status, code.as_str()), (404, "no-route"));
    assert_eq!(backend.count(), 0);
}

#[test]
fn dot_segments_are_refused_before_routing() {
    let backend = Backend::start();
    let services =
        "services:\n  - name: public\n    match: {path: /public}\n    upstream: {backend}\n";
    let gw = TestGateway::start(services, &backend.url());
    // A raw request: clients normalise dot segments themselves.
    let (status, out) = raw_get(&gw, "/public/%2e%2e/admin");
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("ambiguous-path"), "{out}");
    assert_eq!(backend.count(), 0);
}

/// Sends `GET target` as written (no client normalises it) and returns the status line's
/// code and the whole answer.
fn raw_get(gw: &TestGateway, target: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.addr).expect("connect");
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_default();
    (status, out)
}

/// Nested prefixes under a catch-all: every way of writing the protected path either
/// reaches the protected service, in canonical form, or is refused.
#[test]
fn path_variants_cannot_escape_a_protected_prefix() {
    let backend = Backend::start();
    let services = r#"
services:
  - name: catch-all
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: catch-all}
  - name: private
    match: {path: /private}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: private}
  - name: widget-admin
    match: {path: /widgets/admin}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: widget-admin}
"#;
    let gw = TestGateway::start(services, &backend.url());
    for (target, forwarded) in [
        ("/priv%61te", "/private"),
        ("/priv%61te/x", "/private/x"),
        ("/widgets/%61dmin/x", "/widgets/admin/x"),
        ("/widgets/%61%64%6d%69%6e", "/widgets/admin"),
        ("/private/caf%c3%a9", "/private/caf%C3%A9"),
    ] {
        let (status, answer) = raw_get(&gw, target);
        assert_eq!(status, 200, "{target}: {answer}");
        let seen = backend.seen().pop().expect("seen");
        assert_eq!(seen.uri, forwarded, "{target}");
        assert_ne!(seen.headers["x-service"], "catch-all", "{target}");
    }
    let reached = backend.count();
    for target in [
        "/private;x",
        "/public/..;/private",
        "//private",
        "/private//x",
        "/private.",
        "/private%20",
        "/private%2e",
        "/widgets/%2561dmin",
        "/private%2fx",
        "/priv%zzate",
    ] {
        let (status, answer) = raw_get(&gw, target);
        assert_eq!(status, 400, "{target}: {answer}");
        assert!(answer.contains("ambiguous-path"), "{target}: {answer}");
    }
    assert_eq!(
        backend.count(),
        reached,
        "no refused variant reached the backend"
    );
    // Letter case is the upstream's business unless the policy says otherwise.
    let (status, _) = raw_get(&gw, "/PRIVATE");
    assert_eq!(status, 200);
    assert_eq!(service_of(&backend), "catch-all");
}

/// A service whose upstream ignores letter case, and one whose upstream takes `;`
/// parameters and doubled slashes, say so; the rest stay strict.
#[test]
fn services_opt_in_to_case_folding_and_path_forms() {
    let backend = Backend::start();
    let services = r#"
services:
  - name: catch-all
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: catch-all}
  - name: iis
    match: {path: /Private, path_case: insensitive}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: iis}
  - name: servlet
    match: {path: /app, allow_path_forms: [parameters, empty_segments, trailing_dots]}
    upstream: {url: "{backend}/base", strip_prefix: true}
    request:
      - set_header: {name: X-Service, value: servlet}
"#;
    let gw = TestGateway::start(services, &backend.url());
    for target in ["/PRIVATE/x", "/private", "/pRiVaTe/y"] {
        let (status, _) = raw_get(&gw, target);
        assert_eq!(status, 200, "{target}");
        assert_eq!(service_of(&backend), "iis", "{target}");
    }
    let (status, _) = raw_get(&gw, "/private;x");
    assert_eq!(status, 400, "the iis service did not opt in to parameters");
    for (target, forwarded) in [
        ("/app;jsessionid=1/cart", "/base/cart"),
        ("/app/cart;jsessionid=1", "/base/cart;jsessionid=1"),
        ("/app//cart", "/base//cart"),
        ("/app./cart", "/base/cart"),
    ] {
        let (status, answer) = raw_get(&gw, target);
        assert_eq!(status, 200, "{target}: {answer}");
        let seen = backend.seen().pop().expect("seen");
        assert_eq!(seen.headers["x-service"], "servlet", "{target}");
        assert_eq!(seen.uri, forwarded, "{target}");
    }
    // Dot segments stay refused whatever a service accepts.
    let (status, _) = raw_get(&gw, "/app/..;/private");
    assert_eq!(status, 400);
}

const TEMPLATES: &str = r#"
services:
  - name: catch-all
    upstream: {backend}
  - name: orders
    match: {path: /orders}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: orders}
  - name: order
    match: {path: "/orders/{id}"}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: order}
      - set_header: {name: X-Order, value: "${path.id}"}
  - name: order-item
    match: {path: "/orders/{id}/items/{item}", path_match: exact}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: order-item}
      - set_header: {name: X-Item, value: "${path.id}/${path.item}"}
  - name: new-order-form
    match: {path: /orders/new, path_match: exact}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: new-order-form}
  - name: order-writes
    match: {path: /orders, methods: [POST, PUT]}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: order-writes}
  - name: orders-v2
    match: {path: /orders, methods: [GET], headers: {X-Api-Version: "2"}}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: orders-v2}
  - name: search-beta
    match: {path: /search, query: {beta: "1"}}
    upstream: {backend}
    request:
      - set_header: {name: X-Service, value: search-beta}
"#;

/// Templates, exact paths and conditions through the real gateway, with what an attacker
/// would try: escapes, letter case, repeated headers and parameters.
#[test]
fn templates_exact_paths_and_conditions_choose_the_most_specific_route() {
    let backend = Backend::start();
    let gw = TestGateway::start(TEMPLATES, &backend.url());
    let c = client();
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut request = c.request(method, gw.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let resp = request.send().expect("send");
        assert_eq!(resp.status(), 200, "{path}");
        let seen = backend.seen().pop().expect("a request reached the backend");
        let header = |name: &str| {
            seen.headers
                .get(name)
                .map(|v| v.to_str().expect("ascii").to_owned())
                .unwrap_or_default()
        };
        (header("x-service"), header("x-order"), header("x-item"))
    };
    let get = |path: &str| send(reqwest::Method::GET, path, &[]);

    assert_eq!(get("/orders").0, "orders");
    assert_eq!(
        get("/orders/42"),
        ("order".into(), "42".into(), String::new())
    );
    // Escapes of unreserved characters are decoded before routing and in the value.
    assert_eq!(get("/orders/%34%32").1, "42");
    assert_eq!(get("/orders/42/notes").0, "order");
    assert_eq!(get("/orders/42/items/7").2, "42/7");
    assert_eq!(get("/orders/42/items/7/x").0, "order");
    assert_eq!(get("/orders/new").0, "new-order-form");
    // Past an exact route's end, the parameter route is the next most specific.
    assert_eq!(get("/orders/new/x").1, "new");
    assert_eq!(get("/ORDERS/42").0, "");
    assert_eq!(get("/orders/").0, "orders");

    assert_eq!(
        send(reqwest::Method::POST, "/orders", &[]).0,
        "order-writes"
    );
    assert_eq!(send(reqwest::Method::DELETE, "/orders", &[]).0, "orders");
    let v2 = [("x-api-version", "2")];
    assert_eq!(send(reqwest::Method::GET, "/orders", &v2).0, "orders-v2");
    assert_eq!(
        send(reqwest::Method::POST, "/orders", &v2).0,
        "order-writes"
    );
    // Two copies that disagree: the gateway cannot know which the upstream reads.
    let both = [("x-api-version", "2"), ("x-api-version", "3")];
    assert_eq!(send(reqwest::Method::GET, "/orders", &both).0, "orders");

    assert_eq!(get("/search?beta=1").0, "search-beta");
    assert_eq!(get("/search?q=x&beta=%31").0, "search-beta");
    assert_eq!(get("/search?beta=1&beta=0").0, "");
    assert_eq!(get("/search?beta=0").0, "");
}

/// A path parameter's value is what the upstream will read there: a `;` parameter or an
/// encoded slash cannot smuggle a different id past the route.
#[test]
fn path_parameters_cannot_be_smuggled() {
    let backend = Backend::start();
    let gw = TestGateway::start(TEMPLATES, &backend.url());
    for target in [
        "/orders/42;id=7",
        "/orders/4%2F2",
        "/orders/42%2F..%2Fadmin",
    ] {
        let (status, _) = raw_get(&gw, target);
        assert_eq!(status, 400, "{target}");
    }
    assert_eq!(backend.count(), 0);
}
