//! The userauth protocol's parsing and answers, byte for byte.

use super::*;

const NOW: i64 = 1_800_000_000;

fn interfaces() -> Vec<String> {
    vec!["wan".to_owned(), "lan".to_owned()]
}

fn message(result: Result<impl std::fmt::Debug, Refusal>) -> String {
    match result {
        Err(Refusal(status, message)) => {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            message
        }
        Ok(found) => panic!("accepted: {found:?}"),
    }
}

#[test]
fn a_form_becomes_an_entry_and_its_answer_has_the_apis_shape() {
    let entry = parse_add(
        "ip=203.0.113.5&username=user1&interface=wan&session_timeout=60&idle_timeout=30&groups=group1,group2",
        &interfaces(),
        NOW,
    )
    .expect("valid");
    assert_eq!(entry.expires_at, NOW + 30, "idle deadline first");
    assert_eq!(entry.session_ends_at, NOW + 60);
    assert_eq!(
        String::from_utf8(render_added(&entry)).expect("utf8"),
        r#"{"error":false,"user":{"username":"user1","ip":"203.0.113.5","groups":"group1,group2","interface":"wan","agent_type":"Identity Awareness","session_timeout":60,"idle_timeout":30}}"#
    );
    // idle_timeout defaults to session_timeout; groups may be empty; interface optional.
    let bare = parse_add(
        "ip=::FFFF:198.51.100.7&username=u&session_timeout=2678400&groups=",
        &[],
        NOW,
    )
    .expect("valid");
    assert_eq!(bare.ip.to_string(), "198.51.100.7", "IPv4-mapped is IPv4");
    assert_eq!(bare.idle_timeout_secs, Some(2_678_400));
    assert_eq!(
        String::from_utf8(render_list(3, std::slice::from_ref(&bare))).expect("utf8"),
        r#"{"error":false,"active_users_count":3,"active_users":[{"username":"u","ip":"198.51.100.7","groups":"","interface":"","agent_type":"Identity Awareness","session_timeout":2678400,"idle_timeout":2678400}]}"#
    );
    let v6 = parse_add(
        "ip=2001:DB8:0:0::5&username=u&session_timeout=5&groups=g",
        &[],
        NOW,
    )
    .expect("valid");
    assert_eq!(v6.ip.to_string(), "2001:db8::5", "compressed lower case");
    assert_eq!(
        String::from_utf8(render_list(0, &[])).expect("utf8"),
        r#"{"error":false,"active_users_count":0,"active_users":[]}"#
    );
    assert_eq!(
        String::from_utf8(render_error(StatusCode::NOT_FOUND, "User does not exist"))
            .expect("utf8"),
        r#"{"error":true,"error_code":404,"error_message":"User does not exist"}"#
    );
}

#[test]
fn every_bad_form_names_its_parameter() {
    let base = "username=u&session_timeout=60&groups=g";
    for (form, names) in [
        (base.to_owned(), "\"ip\" is required"),
        (format!("ip=1.2.3&{base}"), "\"ip\" is not"),
        (format!("ip=10.0.0.1%eth0&{base}"), "\"ip\" is not"),
        (format!("ip=0.0.0.0&{base}"), "\"ip\" is not a host"),
        (format!("ip= 10.0.0.1&{base}"), "\"ip\" is not"),
        (
            "ip=10.0.0.1&session_timeout=60&groups=g".to_owned(),
            "\"username\" is required",
        ),
        (
            "ip=10.0.0.1&username=&session_timeout=60&groups=g".to_owned(),
            "\"username\" is required",
        ),
        (
            "ip=10.0.0.1&username=u%0A&session_timeout=60&groups=g".to_owned(),
            "\"username\"",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=60".to_owned(),
            "\"groups\" is required",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=60&groups=a,,b".to_owned(),
            "\"groups\"",
        ),
        (
            "ip=10.0.0.1&username=u&groups=g".to_owned(),
            "\"session_timeout\" is required",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=-5&groups=g".to_owned(),
            "\"session_timeout\" must",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=1.5&groups=g".to_owned(),
            "\"session_timeout\" must",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=0&groups=g".to_owned(),
            "\"session_timeout\" must",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=2678401&groups=g".to_owned(),
            "\"session_timeout\" must",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=99999999999&groups=g".to_owned(),
            "\"session_timeout\" must",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=60&idle_timeout=abc&groups=g".to_owned(),
            "\"idle_timeout\" must",
        ),
        (
            "ip=10.0.0.1&username=u&session_timeout=60&idle_timeout=&groups=g".to_owned(),
            "\"idle_timeout\" must",
        ),
        (
            format!("ip=10.0.0.1&{base}&interface=dmz"),
            "unknown interface \"dmz\"",
        ),
        (
            format!("ip=10.0.0.1&{base}&interface=a%20b"),
            "\"interface\" is",
        ),
        (
            format!("ip=10.0.0.1&{base}&colour=red"),
            "unknown parameter \"colour\"",
        ),
        (
            format!("ip=10.0.0.1&{base}&ip=10.0.0.2"),
            "\"ip\" is given twice",
        ),
    ] {
        let found = message(parse_add(&form, &interfaces(), NOW));
        assert!(found.contains(names), "{form}: {found}");
    }
}

#[test]
fn queries_are_checked_as_strictly() {
    assert_eq!(
        parse_list("", &[]).expect("valid"),
        ListQuery {
            num: DEFAULT_NUM,
            only: None
        }
    );
    assert_eq!(parse_list("num=2", &[]).expect("valid").num, 2);
    let one = parse_list("ip=2001:db8::5&interface=wan", &interfaces()).expect("valid");
    assert_eq!(
        one.only,
        Some(("2001:db8::5".parse().expect("ip"), Some("wan".to_owned())))
    );
    for (query, names) in [
        ("num=-1", "\"num\""),
        ("num=ten", "\"num\""),
        ("num=+3", "\"num\""),
        ("ip=nope", "\"ip\""),
        ("interface=wan", "\"interface\" goes with \"ip\""),
        ("ip=10.0.0.1&interface=dmz", "unknown interface"),
        ("user=x", "unknown parameter \"user\""),
    ] {
        let found = message(parse_list(query, &interfaces()));
        assert!(found.contains(names), "{query}: {found}");
    }
    assert!(message(parse_delete("", &[])).contains("\"ip\" is required"));
    assert!(message(parse_delete("ip=10.0.0.1&num=1", &[])).contains("unknown parameter"));
    assert_eq!(
        parse_delete("ip=::ffff:10.0.0.1", &[]).expect("valid"),
        ("10.0.0.1".parse().expect("ip"), None)
    );
}
