//! The appliance's HTTP server as an attacker on the room network meets it, against the real
//! `vigil-edge` binary: every patient route needs a credential (none, a forged, a revoked, an
//! expired or another site's token, another appliance's screen cookie: all refused), `by` comes
//! from the credential, the clinical rules hold on the API path, a wrong `Host` is refused,
//! every read lands in the audit log with the client's address, PIN guesses are reserved before
//! they are checked and never lock the nurse out of the room's tablet, and a live stream ends at
//! sign-out.
//!
//! Site configuration (staff, tokens) is put in the appliance's database as the sync client
//! stores it, so no cloud is needed; `tests/sync_security.rs` covers the way it arrives.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::COOKIE;
use serde_json::json;
use support::{
    Http, csrf_field, edge_db, patient_body, seed_site_config, session_body, set_cookie,
    start_edge, write_edge_config,
};
use vigil_edge::access::token_sha256;
use vigil_shared::doc::SiteApiToken;

const NURSE_PIN: &str = "246802";
const CLINICIAN_PIN: &str = "135790";
const GOOD_TOKEN: &str = "vgt_austin_0f0f0f0f0f0f";
const REVOKED_TOKEN: &str = "vgt_austin_revoked00";
const EXPIRED_TOKEN: &str = "vgt_austin_expired00";

const STAFF: [(&str, &str, &str, &str); 2] = [
    ("nurse-ana", "Ana Ruiz", "nurse", NURSE_PIN),
    ("dr-kim", "Dr Sam Kim", "clinician", CLINICIAN_PIN),
];

fn tokens() -> Vec<SiteApiToken> {
    let token = |label: &str, t: &str, expires_us: i64, revoked: bool| SiteApiToken {
        label: label.into(),
        sha256: token_sha256(t),
        created_us: 0,
        expires_us,
        revoked,
    };
    vec![
        token("ehr", GOOD_TOKEN, i64::MAX, false),
        token("old-ehr", REVOKED_TOKEN, i64::MAX, true),
        token("pilot", EXPIRED_TOKEN, 1, false),
    ]
}

/// An appliance of austin with staff and tokens, and its local-token client.
fn appliance(dir: &std::path::Path, room: &str) -> (support::Proc, Http) {
    let config = write_edge_config(dir, "austin", room, "[source]\nkind = \"none\"\n");
    seed_site_config(&edge_db(dir, "austin", room), "austin", &STAFF, |doc| {
        doc.set_api_tokens(&tokens()).unwrap();
    });
    start_edge(&config)
}

/// A client that does not follow redirects, from a loopback address of its own (so the
/// appliance sees a different client).
fn browser(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The sign-in form's cookie and token, for `client`.
async fn login_form(client: &reqwest::Client, base: &str) -> (String, String) {
    let res = client
        .get(format!("{base}/screen/login"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&res, "vigil_room_login_csrf").expect("sign-in cookie");
    (cookie, csrf_field(&res.text().await.unwrap()))
}

async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    form: &(String, String),
    staff: &str,
    pin: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/screen/login"))
        .header(COOKIE, &form.0)
        .form(&[("staff", staff), ("pin", pin), ("csrf", form.1.as_str())])
        .send()
        .await
        .unwrap()
}

/// Every audit entry of the appliance whose database is `db`.
fn audit_entries(db: &std::path::Path) -> Vec<vigil_shared::audit::AuditEntry> {
    let conn = vigil_edge::store::open_reader(db).unwrap();
    vigil_edge::audit::all_entries(&conn).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_only_credentials_and_keeps_the_clinical_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (_edge, local) = appliance(dir.path(), "1");
    let base = local.base.clone();
    let anon = Http::new(&base);

    // A patient with every contraindication flag, registered with the local token.
    let mut flagged = patient_body("Flagged");
    flagged["screening"] = json!({
        "uncontrolled_hypertension": true, "cardiovascular_disease": true,
        "psychosis_history": true, "pregnancy": true, "substance_use": true
    });
    let (st, patient) = local.post("/api/v1/patients", &flagged).await;
    assert_eq!(st, 201, "{patient}");
    let pid = patient["id"].as_str().unwrap().to_owned();
    assert_eq!(
        patient["screening"]["by"], "local",
        "who screened comes from the token"
    );

    // No credential: 401 with a JSON error on every patient route, reads and writes alike.
    let reads = [
        "/api/v1/site".to_owned(),
        "/api/v1/sessions".to_owned(),
        format!("/api/v1/patients/{pid}"),
        "/api/v1/sessions/s1".to_owned(),
        "/api/v1/sessions/s1/vitals?channel=hr".to_owned(),
    ];
    for path in &reads {
        let (st, body) = anon.get(path).await;
        assert_eq!(st, 401, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("credential"),
            "{body}"
        );
    }
    let writes = [
        ("/api/v1/patients".to_owned(), patient_body("Mallory")),
        (
            "/api/v1/sessions".to_owned(),
            session_body(&pid, "baseline"),
        ),
        (
            "/api/v1/sessions/s1/events".to_owned(),
            json!({"type": "dose", "action": "start", "rate_mg_per_h": 2000}),
        ),
        ("/api/v1/sessions/s1/stop".to_owned(), json!({})),
    ];
    for (path, body) in &writes {
        let (st, answer) = anon.post(path, body).await;
        assert_eq!(st, 401, "{path}: {answer}");
    }
    let (st, _) = anon
        .patch(
            &format!("/api/v1/patients/{pid}"),
            &json!({"screening": {}}),
        )
        .await;
    assert_eq!(st, 401, "clearing the screening flags needs a credential");

    // The status shows the appliance's health, and nothing about patients, without one.
    let (st, status) = anon.get("/api/v1/status").await;
    assert_eq!(st, 200);
    assert!(
        status.get("recorder").is_none() && status["recording"] == json!(false),
        "{status}"
    );
    let (st, status) = local.get("/api/v1/status").await;
    assert_eq!(
        (st, status["recorder"].is_object()),
        (200, true),
        "{status}"
    );

    // Forged, revoked, expired and other sites' tokens.
    for (token, expected) in [
        ("vgl_0000", 401),
        ("hunter2", 401),
        (REVOKED_TOKEN, 401),
        (EXPIRED_TOKEN, 401),
        ("vgt_austin_ffffffffffff", 401),
        ("vgt_florida_0f0f0f0f0f0f", 403),
    ] {
        let (st, body) = Http::with_token(&base, token).get("/api/v1/sessions").await;
        assert_eq!(st, expected, "{token}: {body}");
    }

    // A good site token reads and writes, as itself.
    let ehr = Http::with_token(&base, GOOD_TOKEN);
    let (st, _) = ehr.get(&format!("/api/v1/patients/{pid}")).await;
    assert_eq!(st, 200);

    // The attacks of the review, replayed with a credential: each refused with its reason.
    // A body that names `by` is refused outright.
    let (st, body) = ehr
        .post(
            "/api/v1/sessions",
            &json!({"patient_id": pid, "by": "dr-kim",
                "protocol": {"drug": "ketamine", "route": "iv", "dose_mg_per_kg": 0.5,
                             "weight_kg": 70.0, "planned_minutes": 40}}),
        )
        .await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("credential"),
        "{body}"
    );
    // Five flags answered "yes" at registration, the rest of the list not asked, and no
    // clinician's override: blocked, as at the screen, each flag named.
    let mut flagged_start = session_body(&pid, "baseline");
    flagged_start.as_object_mut().unwrap().remove("screening");
    let (st, body) = ehr.post("/api/v1/sessions", &flagged_start).await;
    assert_eq!(st, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    for part in [
        "start blocked by screening",
        "Pregnancy: a clinician must override with a reason",
        "Severe liver disease: not asked",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    // The API's credential is no clinician: its override does not pass the flags.
    flagged_start["screening"] = session_body(&pid, "baseline")["screening"].clone();
    for answer in flagged_start["screening"].as_array_mut().unwrap() {
        if answer["flag"] == "pregnancy" {
            answer["yes"] = json!(true);
        }
    }
    flagged_start["flag_overrides"] =
        json!([{"flag": "pregnancy", "reason": "negative test this morning"}]);
    let (st, body) = ehr.post("/api/v1/sessions", &flagged_start).await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Pregnancy: only a clinician may override"),
        "{body}"
    );
    // 5 mg/kg × 350 kg × 600 min for an unflagged patient: over the site's limits.
    let (_, clean) = ehr.post("/api/v1/patients", &patient_body("Clean")).await;
    let clean_id = clean["id"].as_str().unwrap().to_owned();
    let mut huge = session_body(&clean_id, "baseline");
    huge["protocol"] = json!({"drug": "ketamine", "route": "iv", "dose_mg_per_kg": 5.0,
        "weight_kg": 350.0, "planned_minutes": 600});
    let (st, body) = ehr.post("/api/v1/sessions", &huge).await;
    assert_eq!(st, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("site"), "{body}");
    // A sensible start goes through, recorded by the token; 2000 mg/h is then refused.
    let (st, session) = ehr
        .post("/api/v1/sessions", &session_body(&clean_id, "baseline"))
        .await;
    assert_eq!(st, 201, "{session}");
    let sid = session["id"].as_str().unwrap().to_owned();
    let events = format!("/api/v1/sessions/{sid}/events");
    let (st, body) = ehr
        .post(
            &events,
            &json!({"type": "dose", "action": "start", "rate_mg_per_h": 52.5}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = ehr
        .post(
            &events,
            &json!({"type": "dose", "action": "rate_change", "rate_mg_per_h": 2000}),
        )
        .await;
    assert_eq!(st, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("over the site limit"),
        "{body}"
    );
    let (st, body) = ehr
        .post(
            &events,
            &json!({"type": "discharge", "aldrete_items": [2, 2, 2, 2, 2], "escort": "Sam",
            "escort_phone": "+1 512 555 0100", "escort_relationship": "friend",
            "no_driving_ack": true, "by": "dr-kim"}),
        )
        .await;
    assert_eq!(st, 422, "a forged discharge: {body}");
    let (st, body) = ehr
        .post(
            &events,
            &json!({"type": "discharge", "aldrete_items": [2, 2, 2, 2, 2], "escort": "Sam",
            "escort_phone": "+1 512 555 0100", "escort_relationship": "friend",
            "no_driving_ack": true}),
        )
        .await;
    assert_eq!(st, 409, "a discharge with the pump running: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("the infusion has not been stopped"),
        "{body}"
    );
    let (_, view) = ehr.get(&format!("/api/v1/sessions/{sid}")).await;
    let doses = view["dose_events"].as_array().unwrap();
    assert_eq!(doses.len(), 1, "{view}");
    assert_eq!(doses[0]["by"], "token:ehr");
    assert!(view["discharge"].is_null());

    // DNS rebinding: another Host is refused on the API and the screen.
    for path in ["/api/v1/sessions", "/screen/login"] {
        let res = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("host", "attacker.example")
            .bearer_auth(GOOD_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
    }
    // Patient data is never cached or sniffed.
    let res = reqwest::Client::new()
        .get(format!("{base}/api/v1/patients/{pid}"))
        .bearer_auth(GOOD_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");

    // Every read and write above is in the audit log, with who and from where; refusals
    // served nothing and so read nothing.
    let entries = audit_entries(&edge_db(dir.path(), "austin", "1"));
    let read_by_token = entries.iter().find(|e| {
        e.actor == "token:ehr" && e.action == "api GET /api/v1/patients/{id}" && e.target == pid
    });
    assert!(read_by_token.is_some(), "{entries:#?}");
    assert!(
        entries.iter().all(|e| e.client == "127.0.0.1"),
        "{entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e.actor == "local" || e.actor == "token:ehr"),
        "no entry for a refused credential: {entries:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_are_reserved_before_they_are_checked_and_never_lock_out_the_tablet() {
    let dir = tempfile::tempdir().unwrap();
    let (_edge, local) = appliance(dir.path(), "1");
    let base = local.base.clone();

    // 60 parallel guesses from one device, the right PIN as the 31st: at most the free tries
    // are checked at all, the rest wait.
    let attacker = browser("127.0.0.3");
    let form = login_form(&attacker, &base).await;
    let guesses = (0..60).map(|i| {
        let (attacker, base, form) = (attacker.clone(), base.clone(), form.clone());
        let pin = if i == 30 {
            NURSE_PIN.to_owned()
        } else {
            format!("{:06}", 100_000 + i)
        };
        tokio::spawn(async move {
            sign_in(&attacker, &base, &form, "nurse-ana", &pin)
                .await
                .status()
        })
    });
    let mut evaluated = 0;
    for g in guesses {
        match g.await.unwrap() {
            StatusCode::UNAUTHORIZED | StatusCode::SEE_OTHER => evaluated += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected answer {other}"),
        }
    }
    let free = vigil_edge::throttle::FREE_TRIES;
    assert!(
        evaluated <= free,
        "{evaluated} PINs checked, at most {free} allowed"
    );

    // More wrong PINs from that device: still waiting.
    for _ in 0..20 {
        let res = sign_in(&attacker, &base, &form, "nurse-ana", "999999").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    // The nurse signs in from the room's tablet all the same.
    let tablet = browser("127.0.0.1");
    let tablet_form = login_form(&tablet, &base).await;
    let res = sign_in(&tablet, &base, &tablet_form, "nurse-ana", NURSE_PIN).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the tablet is not locked out"
    );
    let nurse = set_cookie(&res, "vigil_room").unwrap();

    // The refused and accepted sign-ins are in the audit log, with each device's address.
    let entries = audit_entries(&edge_db(dir.path(), "austin", "1"));
    let refused = entries
        .iter()
        .filter(|e| e.action == "screen sign-in refused" && e.client == "127.0.0.3")
        .count();
    assert!(refused >= 1 && refused <= free as usize, "{entries:#?}");
    assert!(
        entries
            .iter()
            .any(|e| e.action == "screen sign-in" && e.client == "127.0.0.1")
    );

    // The nurse may see who waits, not clear it; a clinician clears it.
    let page = tablet
        .get(format!("{base}/screen/pins"))
        .header(COOKIE, &nurse)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("127.0.0.3") && !page.contains("class=\"unlock\""),
        "{page}"
    );
    let res = sign_in(&tablet, &base, &tablet_form, "dr-kim", CLINICIAN_PIN).await;
    let doctor = set_cookie(&res, "vigil_room").unwrap();
    let page = tablet
        .get(format!("{base}/screen/pins"))
        .header(COOKIE, &doctor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_field(&page);
    let res = tablet
        .post(format!("{base}/screen/pins"))
        .header(COOKIE, &doctor)
        .form(&[("csrf", csrf.as_str()), ("staff", "nurse-ana")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = sign_in(&attacker, &base, &form, "nurse-ana", "999999").await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "cleared: checked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_cookie_works_only_where_it_was_issued_and_only_until_sign_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_one, one) = appliance(dir.path(), "1");
    let (_two, two) = appliance(dir.path(), "2");
    let tablet = browser("127.0.0.1");
    let form = login_form(&tablet, &two.base).await;
    let res = sign_in(&tablet, &two.base, &form, "nurse-ana", NURSE_PIN).await;
    let cookie = set_cookie(&res, "vigil_room").expect("signed in at room 2");

    // Room 2's cookie reads room 2's API, and is a stranger at room 1.
    let get = |base: &str| {
        tablet
            .get(format!("{base}/api/v1/sessions"))
            .header(COOKIE, &cookie)
            .send()
    };
    assert_eq!(get(&two.base).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get(&one.base).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // A live stream ends when its browser signs out.
    let mut live = tablet
        .get(format!("{}/screen/sessions/none/live", two.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let home = tablet
        .get(format!("{}/screen", two.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_field(&home);
    let res = tablet
        .post(format!("{}/screen/logout", two.base))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // The stream runs for ten minutes when nobody signs out; this bound only stops a hang.
    let ended = tokio::time::timeout(Duration::from_secs(120), async {
        while live.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream outlived the sign-out");
    assert_eq!(
        get(&two.base).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
