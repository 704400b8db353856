//! Tests of the API's pure parts: the OpenAPI document against the routes, id and query
//! validation, bearer parsing, the sites view, the `Host` check and the client's address
//! behind proxies. The HTTP behaviour is tested end to end in
//! `cloud/tests/api.rs`.

use std::net::IpAddr;

use vigil_shared::wire::MAX_DOC_ID_BYTES;

use super::*;
use crate::config::ProxyNet;
use crate::config::SiteInfo;
use crate::sites::{ONLINE_WINDOW_US, site_views};
use crate::store::{ApplianceRow, CloudStore};
use crate::web::extract::check_id;
use crate::web::net::{client_address, host_allowed};

#[test]
fn openapi_describes_exactly_the_routes() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let documented: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut served: Vec<String> = API_ROUTES.iter().map(|r| format!("/api/v1{r}")).collect();
    served.push("/metrics".into());
    let mut documented_sorted = documented.clone();
    documented_sorted.sort_unstable();
    served.sort_unstable();
    assert_eq!(documented_sorted, served);
    for path in documented {
        let op = &doc["paths"][path]["get"];
        assert!(op.is_object(), "{path} documents GET");
        assert!(op["responses"]["200"].is_object(), "{path} documents 200");
        let open = op["security"].as_array().is_some_and(Vec::is_empty);
        assert_eq!(
            open,
            path == "/metrics",
            "{path}: only /metrics is unauthenticated"
        );
    }
    // Every $ref points at something that exists.
    fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
    }
}

#[test]
fn ids_are_checked() {
    let long = "a".repeat(MAX_DOC_ID_BYTES);
    let too_long = "a".repeat(MAX_DOC_ID_BYTES + 1);
    let cases: [(&str, bool); 12] = [
        ("s-1", true),
        ("0b7c2f1e-9a4d-4c1b-8e2f-3a5b6c7d8e9f", true),
        ("session:abc@austin_1.v2", true),
        (&long, true),
        (&too_long, false),
        ("", false),
        ("..", false),
        ("a..b", false),
        ("../../etc/passwd", false),
        ("a/b", false),
        ("a\\b", false),
        ("a b\"", false),
    ];
    for (id, ok) in cases {
        assert_eq!(check_id(id).is_ok(), ok, "{id:?}");
        if let Err(e) = check_id(id) {
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{id:?}");
        }
    }
}

#[test]
fn bearer_tokens_are_parsed() {
    let cases = [
        (Some("Bearer abc"), Some("abc")),
        (Some("bearer abc"), Some("abc")),
        (Some("BEARER   abc  "), Some("abc")),
        (Some("Bearer "), None),
        (Some("Bearer"), None),
        (Some("Basic YWxhZGRpbjpvcGVu"), None),
        (Some("abc"), None),
        (None, None),
    ];
    for (value, expected) in cases {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        assert_eq!(bearer(&headers), expected, "{value:?}");
    }
}

#[test]
fn tokens_compare_exactly_and_an_empty_token_admits_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CloudStore::open(&dir.path().join("c.db")).unwrap());
    let cases = [
        ("secret", "secret", true),
        ("secret", "secret ", false),
        ("secret", "Secret", false),
        ("secret", "secre", false),
        ("secret", "", false),
        ("", "", false),
        ("", "anything", false),
    ];
    for (configured, presented, ok) in cases {
        let auth = crate::auth::Auth::new(store.clone(), vec![], configured);
        assert_eq!(
            auth.bearer(presented, 0).unwrap().is_some(),
            ok,
            "{configured:?} vs {presented:?}"
        );
    }
}

#[test]
fn session_queries_are_validated() {
    let q = |site: Option<&str>, state: Option<&str>, from, to, limit| SessionsQuery {
        site: site.map(str::to_owned),
        room: None,
        state: state.map(str::to_owned),
        from,
        to,
        has_advisory: None,
        patient: None,
        limit,
        offset: None,
    };
    let long = "x".repeat(MAX_FILTER_BYTES + 1);
    let cases = [
        (q(None, None, None, None, None), Ok(DEFAULT_SESSION_PAGE)),
        (
            q(
                Some("austin"),
                Some("completed"),
                Some(1),
                Some(2),
                Some(500),
            ),
            Ok(500),
        ),
        (q(None, None, Some(5), Some(5), Some(1)), Ok(1)),
        (
            q(None, None, None, None, Some(0)),
            Err("limit must be between 1 and 500"),
        ),
        (
            q(None, None, None, None, Some(501)),
            Err("limit must be between 1 and 500"),
        ),
        (
            q(None, None, Some(6), Some(5), None),
            Err("from is after to"),
        ),
        (
            q(None, Some("running"), None, None, None),
            Err("unknown state"),
        ),
        (
            q(Some(""), None, None, None, None),
            Err("site must be 1 to 128 bytes long"),
        ),
        (
            q(Some(&long), None, None, None, None),
            Err("site must be 1 to 128 bytes long"),
        ),
    ];
    for (query, expected) in cases {
        let described = format!("{query:?}");
        match (session_filter(query), expected) {
            (Ok(f), Ok(limit)) => assert_eq!(f.limit, limit, "{described}"),
            (Err(e), Err(message)) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST, "{described}");
                assert!(e.message.starts_with(message), "{described}: {}", e.message);
            }
            (got, expected) => panic!("{described}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn sites_merge_configuration_and_presence() {
    let now = 1_000_000_000;
    let config = vec![SiteInfo {
        id: "austin".into(),
        name: "Austin, TX".into(),
        region: "south".into(),
        rooms: vec!["1".into(), "2".into(), "3".into()],
        tz: None,
    }];
    let row = |site: &str, room: &str, connected: bool, last_seen_us: i64| ApplianceRow {
        site: site.into(),
        room: room.into(),
        connected,
        software: "vigil-edge 0.1".into(),
        first_seen_us: 0,
        last_seen_us,
        last_sync_us: Some(last_seen_us),
        backlog_docs: 2,
        backlog_bytes: 300,
        instance: "cloud-a".into(),
        protocol: 2,
        cert_serial: String::new(),
        cert_not_after_us: None,
        clock_skew_us: None,
        report: None,
    };
    let appliances = vec![
        row("austin", "1", true, now - 1_000_000),
        row("austin", "2", true, now - ONLINE_WINDOW_US - 1),
        row("austin", "9", true, now),
        row("florida", "1", false, now),
    ];
    let views = site_views(&config, &appliances, now);
    /// (room, configured, connected, online)
    type Room<'a> = (&'a str, bool, bool, bool);
    let got: Vec<(&str, bool, Vec<Room<'_>>)> = views
        .iter()
        .map(|s| {
            (
                s.id.as_str(),
                s.configured,
                s.rooms
                    .iter()
                    .map(|r| (r.id.as_str(), r.configured, r.connected, r.online))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "austin",
                true,
                vec![
                    ("1", true, true, true),
                    ("2", true, true, false),
                    ("3", true, false, false),
                    ("9", false, true, true),
                ]
            ),
            ("florida", false, vec![("1", false, false, false)]),
        ]
    );
    let room1 = &views[0].rooms[0];
    assert_eq!(
        (
            room1.backlog_docs,
            room1.backlog_bytes,
            room1.software.as_deref()
        ),
        (2, 300, Some("vigil-edge 0.1"))
    );
    assert_eq!(views[0].rooms[2].last_seen_us, None);
}

#[test]
fn site_info_reads_from_toml_shaped_json() {
    let sites: Vec<SiteInfo> = serde_json::from_str(
        r#"[{"id": "austin", "name": "Austin, TX", "region": "south", "rooms": ["1", "2"]},
            {"id": "florida", "name": "Florida"}]"#,
    )
    .unwrap();
    assert_eq!(sites[1].rooms, Vec::<String>::new());
    assert!(serde_json::from_str::<SiteInfo>(r#"{"id": "a", "name": "b", "typo": 1}"#).is_err());
}

#[test]
fn hosts_are_loopback_the_local_address_or_configured() {
    let configured = vec!["dashboard.example.org".to_owned(), "10.9.8.7".to_owned()];
    let local: Option<IpAddr> = Some("10.1.2.3".parse().unwrap());
    let cases = [
        ("localhost", true),
        ("localhost:8443", true),
        ("LocalHost.", true),
        ("127.0.0.1", true),
        ("127.8.9.10:80", true),
        ("[::1]", true),
        ("[::1]:8443", true),
        ("[::ffff:127.0.0.1]:1", true),
        ("dashboard.example.org", true),
        ("dashboard.example.org:443", true),
        ("DASHBOARD.example.org.", true),
        ("10.9.8.7:8443", true),
        ("10.1.2.3:8443", true),
        ("[::ffff:10.1.2.3]", true),
        ("10.1.2.4", false),
        ("attacker.example", false),
        ("dashboard.example.org.attacker.example", false),
        ("localhost.attacker.example", false),
        ("evil.localhost", false),
        ("", false),
        (":443", false),
        ("localhost:", false),
        ("localhost:http", false),
        ("localhost:123456", false),
        ("[::1", false),
        ("[::1]x", false),
        ("::1", false),
        ("user@localhost", false),
        ("localhost/x", false),
    ];
    for (host, expected) in cases {
        assert_eq!(host_allowed(host, &configured, local), expected, "{host:?}");
    }
    assert!(
        !host_allowed("10.1.2.3", &[], None),
        "no local address known"
    );
}

#[test]
fn the_client_is_found_behind_trusted_proxies_only() {
    let net = |s: &str| ProxyNet::try_from(s.to_owned()).unwrap();
    let trusted = [net("127.0.0.1"), net("10.0.0.0/8")];
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    // (peer, X-Forwarded-For headers, client)
    let cases: [(Option<IpAddr>, &[&str], &str); 12] = [
        (None, &["1.2.3.4"], "unknown"),
        (ip("198.51.100.7"), &[], "198.51.100.7"),
        // An untrusted peer's header is its own claim.
        (ip("198.51.100.7"), &["1.2.3.4"], "198.51.100.7"),
        (ip("127.0.0.1"), &[], "127.0.0.1"),
        (ip("127.0.0.1"), &["198.51.100.7"], "198.51.100.7"),
        // The right-most untrusted address; what the client wrote left of it is ignored.
        (ip("127.0.0.1"), &["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
        (
            ip("127.0.0.1"),
            &["6.6.6.6", "198.51.100.7, 10.1.1.1"],
            "198.51.100.7",
        ),
        // Every hop trusted: the left-most.
        (ip("127.0.0.1"), &["10.2.2.2, 10.1.1.1"], "10.2.2.2"),
        // Ports and brackets as some proxies write them.
        (ip("127.0.0.1"), &["198.51.100.7:5555"], "198.51.100.7"),
        (ip("127.0.0.1"), &["[2001:db8::1]:443"], "2001:db8::1"),
        // Garbage: the trusted hop that passed it on.
        (ip("127.0.0.1"), &["198.51.100.7, unknown"], "127.0.0.1"),
        (ip("127.0.0.1"), &["<script>, 10.1.1.1"], "10.1.1.1"),
    ];
    for (peer, headers, expected) in cases {
        let got = client_address(peer, headers.iter().copied(), &trusted);
        assert_eq!(got, expected, "{peer:?} {headers:?}");
    }
    // A long forged chain of trusted-looking addresses is not walked to its end.
    let padding = vec!["10.0.0.1"; 1000].join(", ");
    let chain = format!("6.6.6.6, {padding}");
    let got = client_address(ip("127.0.0.1"), [chain.as_str()].into_iter(), &trusted);
    assert_eq!(got, "10.0.0.1");
}
