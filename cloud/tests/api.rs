//! The cloud's JSON API over real HTTP on loopback, against a real SQLite store populated
//! through `CloudStore::commit_document`, as the sync server populates it.

use std::collections::BTreeMap;
use std::sync::Arc;

use automerge::AutoCommit;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_cloud::config::SiteInfo;
use vigil_cloud::metrics::Metrics;
use vigil_cloud::store::{CloudStore, MAX_VITALS_PER_PAGE};
use vigil_cloud::web::{ApiState, router};
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::{
    CoursePlan, PatientDoc, PatientRecord, Protocol, Screening, SessionDoc, SessionMeta,
    SessionState,
};
use vigil_shared::vitals::{Channel, Sample, checksum};
use vigil_shared::wire::DocKind;

const TOKEN: &str = "test-token-0123456789";

struct Server {
    base: String,
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    store: Arc<CloudStore>,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CloudStore::open(&dir.path().join("cloud.db")).unwrap());
        let metrics = Arc::new(Metrics::default());
        let app = router(ApiState {
            store: store.clone(),
            token: TOKEN.into(),
            sites: vec![
                SiteInfo {
                    id: "austin".into(),
                    name: "Austin, TX".into(),
                    region: "south".into(),
                    rooms: vec!["1".into(), "2".into()],
                    tz: None,
                },
                SiteInfo {
                    id: "florida".into(),
                    name: "Florida".into(),
                    region: "southeast".into(),
                    rooms: vec!["1".into()],
                    tz: None,
                },
            ],
            metrics: metrics.clone(),
            http: vigil_cloud::config::HttpConfig::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            base: format!("http://{addr}"),
            addr,
            client: reqwest::Client::new(),
            store,
            metrics,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    fn commit(&self, id: &str, kind: DocKind, site: &str, doc: &mut AutoCommit) {
        self.store
            .commit_document(id, kind, site, doc, now_us())
            .unwrap();
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn meta(id: &str, site: &str, room: &str, started_us: i64) -> SessionMeta {
    SessionMeta {
        id: id.into(),
        site: site.into(),
        room: room.into(),
        patient_id: "p-1".into(),
        protocol: Protocol {
            drug: "ketamine".into(),
            route: "iv".into(),
            dose_mg_per_kg: 0.5,
            weight_kg: 70.0,
            planned_minutes: 40,
        },
        state: SessionState::InProgress,
        created_us: started_us - 1_000,
        started_us: Some(started_us),
        ended_us: None,
        dose_events: vec![],
        advisories: vec![],
        observations: vec![],
        scores: vec![],
        discharge: None,
    }
}

/// A session document and every sample put into it, per channel.
struct Recording {
    doc: SessionDoc,
    sent: BTreeMap<Channel, Vec<Sample>>,
}

impl Recording {
    fn new(id: &str, site: &str, room: &str, started_us: i64) -> Recording {
        Recording {
            doc: SessionDoc::create(&meta(id, site, room, started_us)).unwrap(),
            sent: BTreeMap::new(),
        }
    }

    /// `chunks` chunks of `per_chunk` samples each, `period_us` apart, from `start_us`.
    fn record(
        &mut self,
        channel: Channel,
        start_us: i64,
        chunks: usize,
        per_chunk: usize,
        period_us: i64,
    ) {
        for c in 0..chunks {
            let samples: Vec<Sample> = (0..per_chunk)
                .map(|i| {
                    let k = (c * per_chunk + i) as i64;
                    let v = ((k * 37) % 400) as i32 - 200;
                    match channel {
                        Channel::Nibp => Sample {
                            t_us: start_us + k * period_us,
                            v: [120 + v / 20, 80, 93],
                        },
                        _ => Sample::scalar(start_us + k * period_us, v),
                    }
                })
                .collect();
            let bytes = Chunk {
                channel,
                samples: samples.clone(),
            }
            .encode()
            .unwrap();
            self.doc.append_chunk(channel, bytes).unwrap();
            self.sent.entry(channel).or_default().extend(samples);
        }
    }
}

fn patient(id: &str, site: &str) -> PatientRecord {
    PatientRecord {
        id: id.into(),
        site: site.into(),
        given_name: "Ada".into(),
        family_name: "Lovelace".into(),
        birth_date: "1980-12-10".into(),
        sex: "female".into(),
        phone: None,
        screening: Screening::default(),
        medications: vec!["sertraline".into()],
        course: CoursePlan::default(),
        outcome_scores: vec![],
    }
}

#[tokio::test]
async fn every_api_route_needs_the_token_and_errors_are_json() {
    let server = Server::start().await;
    let mut s = Recording::new("s-1", "austin", "1", 1_000_000);
    s.record(Channel::Hr, 1_000_000, 1, 10, 1_000_000);
    server.commit("s-1", DocKind::Session, "austin", s.doc.automerge());

    let long_id = "a".repeat(129);
    /// (method, path, token, status, start of the error message)
    type Case<'a> = (&'a str, String, Option<&'a str>, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "GET",
            "/api/v1/sessions".into(),
            None,
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ),
        (
            "GET",
            "/api/v1/sessions".into(),
            Some("wrong"),
            StatusCode::UNAUTHORIZED,
            "the bearer token is unknown, expired or revoked",
        ),
        (
            "GET",
            "/api/v1/sites".into(),
            Some(""),
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ),
        (
            "GET",
            "/api/v1/openapi.json".into(),
            None,
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ),
        (
            "GET",
            "/api/v1/sessions/s-1/automerge".into(),
            Some("test-token-012345678"),
            StatusCode::UNAUTHORIZED,
            "the bearer token is unknown",
        ),
        (
            "GET",
            "/api/v1/nope".into(),
            None,
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ),
        (
            "GET",
            "/api/v1/nope".into(),
            Some(TOKEN),
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        (
            "GET",
            "/nope".into(),
            None,
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        (
            "GET",
            "/api/v1/sessions/missing".into(),
            Some(TOKEN),
            StatusCode::NOT_FOUND,
            "session missing not found",
        ),
        (
            "GET",
            "/api/v1/sessions/missing/vitals?channel=hr".into(),
            Some(TOKEN),
            StatusCode::NOT_FOUND,
            "session missing not found",
        ),
        (
            "GET",
            "/api/v1/sessions/missing/automerge".into(),
            Some(TOKEN),
            StatusCode::NOT_FOUND,
            "session missing not found",
        ),
        (
            "GET",
            "/api/v1/patients/s-1".into(),
            Some(TOKEN),
            StatusCode::NOT_FOUND,
            "patient s-1 not found",
        ),
        (
            "GET",
            "/api/v1/sessions/..%2F..%2Fetc%2Fpasswd".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "an id is made of",
        ),
        (
            "GET",
            "/api/v1/sessions/..%2F..%2Fetc%2Fpasswd/automerge".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "an id is made of",
        ),
        (
            "GET",
            "/api/v1/patients/%2Fetc%2Fpasswd".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "an id is made of",
        ),
        (
            "GET",
            "/api/v1/sessions/%00".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "an id is made of",
        ),
        (
            "GET",
            format!("/api/v1/sessions/{long_id}"),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "an id is 1 to 128 bytes",
        ),
        (
            "GET",
            "/api/v1/sessions?limit=501".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 500",
        ),
        (
            "GET",
            "/api/v1/sessions?limit=-1".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        ),
        (
            "GET",
            "/api/v1/sessions?from=x".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        ),
        (
            "GET",
            "/api/v1/sessions?from=10&to=5".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "from is after to",
        ),
        (
            "GET",
            "/api/v1/sessions?sight=austin".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: sight: unknown field",
        ),
        (
            "GET",
            "/api/v1/sessions?state=running".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "unknown state",
        ),
        (
            "GET",
            "/api/v1/sessions/s-1/vitals".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string: missing field `channel`",
        ),
        (
            "GET",
            "/api/v1/sessions/s-1/vitals?channel=co2".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "unknown channel \"co2\"",
        ),
        (
            "GET",
            "/api/v1/sessions/s-1/vitals?channel=hr&from=9&to=1".into(),
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
            "from is after to",
        ),
        (
            "POST",
            "/api/v1/sessions".into(),
            Some(TOKEN),
            StatusCode::METHOD_NOT_ALLOWED,
            "this api is read-only",
        ),
        (
            "DELETE",
            "/api/v1/sessions/s-1".into(),
            None,
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ),
        (
            "POST",
            "/metrics".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "this api is read-only",
        ),
    ];
    for (method, path, token, status, message) in cases {
        let mut request = server
            .client
            .request(method.parse().unwrap(), format!("{}{path}", server.base));
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = request.send().await.unwrap();
        let what = format!("{method} {path} with {token:?}");
        assert_eq!(response.status(), status, "{what}");
        let challenge = response.headers().get("www-authenticate").cloned();
        assert_eq!(
            challenge.is_some(),
            status == StatusCode::UNAUTHORIZED,
            "{what}"
        );
        if let Some(c) = challenge {
            assert!(c.to_str().unwrap().starts_with("Bearer"), "{what}");
        }
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(error.starts_with(message), "{what}: {error}");
    }

    // An oversized body is refused before anything reads it.
    let response = server
        .client
        .post(format!("{}/api/v1/sessions", server.base))
        .bearer_auth(TOKEN)
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("larger than"));

    // Dot segments sent raw (a client library would normalise them away) match no route.
    for raw in [
        "/api/v1/sessions/../../etc/passwd",
        "/api/v1/sessions/s-1/../../../etc/passwd",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET {raw} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{raw}: {answer}"
        );
        assert!(answer.contains("{\"error\":"), "{raw}: {answer}");
        assert!(!answer.contains("root:"), "{raw}");
    }
}

#[tokio::test]
async fn only_this_servers_own_names_are_answered_and_nothing_is_cached() {
    let server = Server::start().await;
    let port = server.addr.port();
    // (Host header, status): loopback names and addresses, with or without the port, are
    // this server; a name pointed at it from elsewhere (DNS rebinding) is not.
    let cases = [
        (format!("127.0.0.1:{port}"), StatusCode::OK),
        ("localhost".to_owned(), StatusCode::OK),
        (format!("LOCALHOST.:{port}"), StatusCode::OK),
        ("[::1]:8080".to_owned(), StatusCode::OK),
        (
            "attacker.example".to_owned(),
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            format!("attacker.example:{port}"),
            StatusCode::MISDIRECTED_REQUEST,
        ),
        ("10.1.2.3".to_owned(), StatusCode::MISDIRECTED_REQUEST),
        ("127.0.0.1:port".to_owned(), StatusCode::MISDIRECTED_REQUEST),
        ("".to_owned(), StatusCode::MISDIRECTED_REQUEST),
    ];
    for (host, status) in cases {
        let response = server
            .client
            .get(format!("{}/api/v1/sites", server.base))
            .bearer_auth(TOKEN)
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "Host: {host:?}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        if status == StatusCode::MISDIRECTED_REQUEST {
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains("does not answer to host") && error.contains("[http] hosts"),
                "{error}"
            );
        }
    }
    // Without the token the answer is the same 421: the Host check comes first.
    let response = server
        .client
        .get(format!("{}/sessions", server.base))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    // Metrics answer to any name a scraper uses; they hold no patient data.
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .header("host", "prometheus-target.internal")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Every kind of patient-data answer is neither cached nor sniffed.
    let mut doc = SessionDoc::create(&meta("s-1", "austin", "1", now_us())).unwrap();
    server.commit("s-1", DocKind::Session, "austin", doc.automerge());
    for path in [
        "/api/v1/sessions",
        "/api/v1/sessions/s-1",
        "/api/v1/sessions/s-1/vitals?channel=hr",
        "/api/v1/sessions/s-1/automerge",
        "/api/v1/sessions/s-1/fhir",
        "/api/v1/sessions/nope",
    ] {
        let response = server.get(path).await;
        assert!(
            response.status() == StatusCode::OK || response.status() == StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    }
}

#[tokio::test]
async fn configured_host_names_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CloudStore::open(&dir.path().join("cloud.db")).unwrap());
    let http: vigil_cloud::config::HttpConfig =
        toml::from_str("hosts = [\"dashboard.example.org\"]").unwrap();
    let app = router(ApiState {
        store,
        token: TOKEN.into(),
        sites: vec![],
        metrics: Arc::new(Metrics::default()),
        http,
    });
    // Served on the wildcard address, reached at loopback: the address it arrived at is
    // accepted as a Host as well.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<vigil_cloud::web::ClientConn>(),
        )
        .await
    });
    let client = reqwest::Client::new();
    for (host, status) in [
        ("dashboard.example.org", StatusCode::OK),
        ("Dashboard.Example.org:443", StatusCode::OK),
        (
            "evil.dashboard.example.org",
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            "dashboard.example.org.evil",
            StatusCode::MISDIRECTED_REQUEST,
        ),
    ] {
        let response = client
            .get(format!("http://127.0.0.1:{port}/api/v1/sites"))
            .bearer_auth(TOKEN)
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "Host: {host}");
    }
}

#[tokio::test]
async fn reads_show_what_was_committed() {
    let server = Server::start().await;
    let mut a = Recording::new("s-a", "austin", "1", 1_000_000);
    a.record(Channel::Hr, 1_000_000, 6, 10, 1_000_000);
    a.record(Channel::Spo2, 1_000_000, 6, 10, 1_000_000);
    a.record(Channel::Nibp, 1_000_000, 2, 1, 180_000_000);
    a.record(Channel::Ecg, 1_000_000, 3, 2_500, 4_000);
    a.doc.append_note("calm").unwrap();
    server.commit("s-a", DocKind::Session, "austin", a.doc.automerge());
    // More vitals arrive later, as incremental changes.
    a.record(Channel::Hr, 61_000_000, 3, 10, 1_000_000);
    a.doc
        .update_meta(|m| m.state = SessionState::Completed)
        .unwrap();
    server.commit("s-a", DocKind::Session, "austin", a.doc.automerge());
    let mut b = Recording::new("s-b", "austin", "2", 5_000_000);
    b.record(Channel::Hr, 5_000_000, 1, 10, 1_000_000);
    server.commit("s-b", DocKind::Session, "austin", b.doc.automerge());
    let mut c = Recording::new("s-c", "florida", "1", 3_000_000);
    server.commit("s-c", DocKind::Session, "florida", c.doc.automerge());
    let mut p = PatientDoc::create(&patient("p-1", "austin")).unwrap();
    server.commit("p-1", DocKind::Patient, "austin", p.automerge());
    let now = now_us();
    server
        .store
        .appliance_connected(
            &vigil_cloud::store::Connected::new("austin", "1", "vigil-edge 0.1.0", "cloud-a"),
            now,
        )
        .unwrap();
    server
        .store
        .appliance_synced("austin", "1", now, 2, 2_048)
        .unwrap();
    server
        .store
        .appliance_connected(
            &vigil_cloud::store::Connected::new("austin", "2", "vigil-edge 0.1.0", "cloud-a"),
            now,
        )
        .unwrap();
    server
        .store
        .appliance_disconnected("austin", "2", now)
        .unwrap();

    // Sites: configuration merged with presence.
    let sites = server.json("/api/v1/sites").await;
    let rooms: Vec<(String, String, bool, u64)> = sites
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let site = s["id"].as_str().unwrap().to_owned();
            s["rooms"].as_array().unwrap().iter().map(move |r| {
                (
                    site.clone(),
                    r["id"].as_str().unwrap().to_owned(),
                    r["online"].as_bool().unwrap(),
                    r["backlog_docs"].as_u64().unwrap(),
                )
            })
        })
        .collect();
    let expected: Vec<(String, String, bool, u64)> = vec![
        ("austin".into(), "1".into(), true, 2),
        ("austin".into(), "2".into(), false, 0),
        ("florida".into(), "1".into(), false, 0),
    ];
    assert_eq!(rooms, expected);
    assert_eq!(sites[0]["name"], "Austin, TX");

    // The session list, filtered.
    let cases = [
        ("/api/v1/sessions", vec!["s-b", "s-c", "s-a"], 3),
        ("/api/v1/sessions?site=austin", vec!["s-b", "s-a"], 2),
        ("/api/v1/sessions?site=austin&room=1", vec!["s-a"], 1),
        (
            "/api/v1/sessions?from=2000000&to=5000001",
            vec!["s-b", "s-c"],
            2,
        ),
        ("/api/v1/sessions?state=completed", vec!["s-a"], 1),
        ("/api/v1/sessions?limit=1&offset=1", vec!["s-c"], 3),
        ("/api/v1/sessions?site=nowhere", vec![], 0),
    ];
    for (path, ids, total) in cases {
        let page = server.json(path).await;
        let got: Vec<&str> = page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            (got, page["total"].as_u64().unwrap()),
            (ids, total),
            "{path}"
        );
    }
    let row = &server.json("/api/v1/sessions?site=austin&room=1").await["sessions"][0];
    assert_eq!(
        (row["state"].as_str(), row["patient_id"].as_str()),
        (Some("completed"), Some("p-1"))
    );

    // The summary: counts and checksums of exactly what was recorded.
    let summary = server.json("/api/v1/sessions/s-a").await;
    assert_eq!(summary["state"], "completed");
    assert_eq!(summary["protocol"]["drug"], "ketamine");
    assert_eq!(summary["notes"], "calm");
    let channels = summary["channels"].as_object().unwrap();
    assert_eq!(channels.len(), Channel::ALL.len());
    for channel in Channel::ALL {
        let sent = a.sent.get(&channel).cloned().unwrap_or_default();
        let got = &channels[channel.name()];
        let chunks = a.doc.chunk_count(channel) as u64;
        assert_eq!(
            got["samples"].as_u64(),
            Some(sent.len() as u64),
            "{channel}"
        );
        assert_eq!(got["chunks"].as_u64(), Some(chunks), "{channel}");
        assert_eq!(got["corrupt_chunks"].as_u64(), Some(0), "{channel}");
        assert_eq!(got["unit"].as_str(), Some(channel.unit()), "{channel}");
        assert_eq!(
            got["checksum"].as_str(),
            Some(format!("{:016x}", checksum(&sent)).as_str()),
            "{channel}"
        );
        assert_eq!(
            got["first_us"].as_i64(),
            sent.first().map(|s| s.t_us),
            "{channel}"
        );
        assert_eq!(
            got["last_us"].as_i64(),
            sent.last().map(|s| s.t_us),
            "{channel}"
        );
    }

    // Vitals: a range, and three-value blood pressure.
    let page = server
        .json("/api/v1/sessions/s-a/vitals?channel=hr&from=5000000&to=8000000")
        .await;
    assert_eq!(page["unit"], "/min");
    let times: Vec<i64> = page["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    assert_eq!(times, vec![5_000_000, 6_000_000, 7_000_000]);
    assert_eq!(page["next_from_us"], Value::Null);
    let nibp = server
        .json("/api/v1/sessions/s-a/vitals?channel=nibp")
        .await;
    let rows: Vec<Vec<i64>> = serde_json::from_value(nibp["samples"].clone()).unwrap();
    let expected: Vec<Vec<i64>> = a.sent[&Channel::Nibp]
        .iter()
        .map(|s| {
            vec![
                s.t_us,
                i64::from(s.v[0]),
                i64::from(s.v[1]),
                i64::from(s.v[2]),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
    let empty = server.json("/api/v1/sessions/s-c/vitals?channel=ecg").await;
    assert_eq!(empty["samples"].as_array().map(Vec::len), Some(0));

    // The Automerge document loads in Automerge with the same heads.
    let response = server.get("/api/v1/sessions/s-a/automerge").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let bytes = response.bytes().await.unwrap();
    let mut loaded = AutoCommit::load(&bytes).unwrap();
    let (mut got, mut want) = (loaded.get_heads(), a.doc.automerge().get_heads());
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let reloaded = SessionDoc::from_automerge(loaded).unwrap();
    assert_eq!(reloaded.chunk_count(Channel::Ecg), 3);
    // A patient id is not a session document.
    assert_eq!(
        server.get("/api/v1/sessions/p-1/automerge").await.status(),
        StatusCode::NOT_FOUND
    );

    // The patient.
    let record = server.json("/api/v1/patients/p-1").await;
    assert_eq!(
        (
            record["family_name"].as_str(),
            record["course"]["infusions_planned"].as_u64()
        ),
        (Some("Lovelace"), Some(6))
    );

    // OpenAPI parses and lists the routes.
    let openapi = server.json("/api/v1/openapi.json").await;
    let paths = openapi["paths"].as_object().unwrap();
    for path in [
        "/api/v1/sites",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/sessions/{id}/vitals",
        "/api/v1/sessions/{id}/automerge",
        "/api/v1/patients/{id}",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path}");
    }

    // Metrics render, without a token.
    server.metrics.appliance_connected();
    server.metrics.reject("forbidden");
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            "# TYPE vigil_cloud_connected_appliances gauge\nvigil_cloud_connected_appliances 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("vigil_cloud_rejects_total{reason=\"forbidden\"} 1\n"),
        "{text}"
    );
}

#[tokio::test]
async fn vitals_page_through_a_long_ecg_session() {
    let server = Server::start().await;
    let mut s = Recording::new("s-ecg", "austin", "1", 0);
    // 27 chunks of 10,000 samples at 250 Hz: 270,000 samples, more than one page.
    s.record(Channel::Ecg, 0, 27, 10_000, 4_000);
    server.commit("s-ecg", DocKind::Session, "austin", s.doc.automerge());
    let sent = &s.sent[&Channel::Ecg];
    assert!(sent.len() > MAX_VITALS_PER_PAGE);

    let mut received: Vec<Sample> = Vec::new();
    let mut from: Option<i64> = None;
    let mut pages = 0;
    loop {
        let path = match from {
            Some(f) => format!("/api/v1/sessions/s-ecg/vitals?channel=ecg&from={f}"),
            None => "/api/v1/sessions/s-ecg/vitals?channel=ecg".to_owned(),
        };
        let page = server.json(&path).await;
        pages += 1;
        let rows: Vec<[i64; 2]> = serde_json::from_value(page["samples"].clone()).unwrap();
        assert!(rows.len() <= MAX_VITALS_PER_PAGE);
        received.extend(rows.iter().map(|[t, v]| Sample::scalar(*t, *v as i32)));
        match page["next_from_us"].as_i64() {
            Some(next) => from = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 2);
    assert_eq!(received.len(), sent.len());
    assert_eq!(checksum(&received), checksum(sent));
    assert!(
        received.windows(2).all(|w| w[0].t_us < w[1].t_us),
        "in time order, no repeats"
    );
    let summary = server.json("/api/v1/sessions/s-ecg").await;
    assert_eq!(
        summary["channels"]["ecg"]["samples"].as_u64(),
        Some(sent.len() as u64)
    );
}

/// Where `value` departs from `schema` (OpenAPI 3.0, the subset the document uses: `$ref`,
/// `type`, `nullable`, `enum`, `required`, `properties`, `items`), strictly: an object whose
/// schema lists its properties may carry no other key, so a field added to a response without
/// documenting it is caught. A schema of only `"type": "object"` takes any object.
fn departures(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "{at}: unresolved {r}");
        return departures(doc, target, value, at, out);
    }
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            out.push(format!("{at}: null, and the schema is not nullable"));
        }
        return;
    }
    let fits = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("{at}: the validator does not know type {other}"),
        None => true,
    };
    if !fits {
        out.push(format!("{at}: {value} is not {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            departures(doc, &schema["items"], item, &format!("{at}[{i}]"), out);
        }
    }
    let Some(object) = value.as_object() else {
        return;
    };
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap();
        if !object.contains_key(name) {
            out.push(format!("{at}: required {name} is missing"));
        }
    }
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    for (key, v) in object {
        match properties.get(key) {
            Some(s) => departures(doc, s, v, &format!("{at}.{key}"), out),
            None => out.push(format!("{at}: {key} is not in the document")),
        }
    }
}

/// The schema of a path's answer with `status` (`application/json`), through a shared
/// response's `$ref`.
fn response_schema<'a>(doc: &'a Value, path: &str, status: &str) -> &'a Value {
    let mut response = &doc["paths"][path]["get"]["responses"][status];
    if let Some(r) = response["$ref"].as_str() {
        response = &doc["components"]["responses"][r.trim_start_matches("#/components/responses/")];
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "no {status} JSON schema for {path}");
    schema
}

#[test]
fn the_schema_check_catches_what_it_should() {
    let doc: Value = serde_json::from_str(include_str!("../src/web/api/openapi.json")).unwrap();
    let room = serde_json::json!({
        "id": "1", "configured": true, "online": false, "connected": false, "software": null,
        "last_seen_us": null, "last_sync_us": null, "backlog_docs": 0, "backlog_bytes": 0
    });
    let schema = serde_json::json!({"$ref": "#/components/schemas/Room"});
    let check = |v: &Value| {
        let mut out = Vec::new();
        departures(&doc, &schema, v, "room", &mut out);
        out
    };
    assert_eq!(check(&room), Vec::<String>::new());
    let mut extra = room.clone();
    extra["undocumented"] = Value::Bool(true);
    let mut missing = room.clone();
    missing.as_object_mut().unwrap().remove("online");
    let mut wrong = room.clone();
    wrong["backlog_docs"] = Value::String("0".into());
    let mut null = room.clone();
    null["id"] = Value::Null;
    for (bad, says) in [
        (extra, "undocumented is not in the document"),
        (missing, "required online is missing"),
        (wrong, "is not \"integer\""),
        (null, "not nullable"),
    ] {
        let found = check(&bad).join("; ");
        assert!(found.contains(says), "{found}");
    }
}

#[tokio::test]
async fn every_answer_matches_the_openapi_document() {
    let server = Server::start().await;
    let doc = server.json("/api/v1/openapi.json").await;
    // A session with something in every list, so every item schema is exercised.
    let mut a = Recording::new("s-a", "austin", "1", 1_000_000);
    a.record(Channel::Hr, 1_000_000, 2, 10, 1_000_000);
    a.record(Channel::Nibp, 1_000_000, 1, 1, 180_000_000);
    a.doc.append_note("calm").unwrap();
    a.doc
        .update_meta(|m| {
            m.state = SessionState::Completed;
            m.ended_us = Some(60_000_000);
            m.dose_events.push(vigil_shared::doc::DoseEvent {
                id: "d1".into(),
                at_us: 1_000_000,
                action: vigil_shared::doc::DoseAction::Start,
                rate_mg_per_h: Some(52.5),
                by: "rn-ana".into(),
            });
            m.advisories.push(vigil_shared::doc::AdvisoryRecord {
                id: "a1".into(),
                kind: "spo2_low".into(),
                subject: "spo2".into(),
                priority: "high".into(),
                detail: "SpO2 89 %".into(),
                raised_us: 2_000_000,
                acknowledged_us: Some(2_500_000),
                acknowledged_by: Some("rn-ana".into()),
                cleared_us: None,
            });
            m.observations.push(vigil_shared::doc::Observation {
                id: "o1".into(),
                at_us: 3_000_000,
                effect: "nausea".into(),
                severity: "mild".into(),
                by: "rn-ana".into(),
            });
            m.scores.push(vigil_shared::doc::Score {
                id: "c1".into(),
                at_us: 4_000_000,
                instrument: "cadss".into(),
                phase: "post".into(),
                value: 12,
                by: "rn-ana".into(),
            });
            m.discharge = Some(vigil_shared::doc::Discharge {
                at_us: 5_000_000,
                aldrete: 10,
                escort: "Ben".into(),
                no_driving_ack: true,
                by: "rn-ana".into(),
            });
        })
        .unwrap();
    server.commit("s-a", DocKind::Session, "austin", a.doc.automerge());
    let mut record = patient("p-1", "austin");
    record.phone = Some("+1 512 555 0100".into());
    record.outcome_scores.push(vigil_shared::doc::Score {
        id: "s-a:phq9:pre".into(),
        at_us: 1_000_000,
        instrument: "phq9".into(),
        phase: "pre".into(),
        value: 18,
        by: "rn-ana".into(),
    });
    let mut p = PatientDoc::create(&record).unwrap();
    server.commit("p-1", DocKind::Patient, "austin", p.automerge());
    let now = now_us();
    server
        .store
        .appliance_connected(
            &vigil_cloud::store::Connected::new("austin", "1", "vigil-edge 0.1.0", "cloud-a"),
            now,
        )
        .unwrap();
    server
        .store
        .appliance_synced("austin", "1", now, 2, 2_048)
        .unwrap();

    let answers = [
        ("/api/v1/sites", "/api/v1/sites", "200"),
        ("/api/v1/sessions", "/api/v1/sessions", "200"),
        ("/api/v1/sessions/s-a", "/api/v1/sessions/{id}", "200"),
        (
            "/api/v1/sessions/s-a/vitals?channel=hr",
            "/api/v1/sessions/{id}/vitals",
            "200",
        ),
        (
            "/api/v1/sessions/s-a/vitals?channel=nibp",
            "/api/v1/sessions/{id}/vitals",
            "200",
        ),
        ("/api/v1/patients/p-1", "/api/v1/patients/{id}", "200"),
        ("/api/v1/sessions/nope", "/api/v1/sessions/{id}", "404"),
        ("/api/v1/sessions?limit=0", "/api/v1/sessions", "400"),
    ];
    let mut found = Vec::new();
    for (url, path, status) in answers {
        let response = server.get(url).await;
        assert_eq!(response.status().as_str(), status, "GET {url}");
        let value: Value = response.json().await.unwrap();
        departures(
            &doc,
            response_schema(&doc, path, status),
            &value,
            url,
            &mut found,
        );
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
