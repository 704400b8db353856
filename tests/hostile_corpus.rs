//! Escaping everywhere, proven by a hostile corpus: strings built to break out of HTML go into
//! every free-text field a person or a peer types (site and staff names, patient names, phone,
//! medications, notes, side effects, the override reason, the escort), through the real ways
//! in (cloud.toml, `vigil-cloud staff add`, the appliance's API, the room screen's forms), sync
//! to the cloud over real QUIC, and then every page of the room screen and of the dashboard is
//! fetched and searched: no hostile markup may appear unescaped, no link may point at
//! `javascript:`, no NUL byte may pass, and CSV exports neutralise formulas. Bytes that are not
//! UTF-8 are refused (JSON) or replaced (forms), never a server error.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::{Value, json};
use support::*;

/// Markup and script that must only ever appear escaped.
const MARKUP: &[&str] = &[
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "<form action=//evil.example><button>go</button></form>",
    "<meta http-equiv=refresh content=\"0;url=//evil.example\">",
    "</textarea><svg onload=alert(1)>",
    "' onmouseover='alert(1)",
];

/// Text that is harmless as text but must never become an attribute's value unescaped.
const PLAIN: &[&str] = &[
    "javascript:alert(1)",
    "{{7*7}}",
    "'; DROP TABLE patients; --",
    "\u{202e}gnp.exe",
];

/// Values that a spreadsheet would run as formulas.
const FORMULAS: &[&str] = &[
    "=HYPERLINK(\"http://evil.example\",\"x\")",
    " =1+1",
    "\n@SUM(A1)",
    "+cmd|' /C calc'!A0",
];

const NURSE_PIN: &str = "246813";
const CLINICIAN_PIN: &str = "135791";
const PASSWORD: &str = "correct horse battery staple";

/// The whole corpus, one string per free-text field use.
fn corpus() -> Vec<String> {
    MARKUP
        .iter()
        .chain(PLAIN)
        .map(|s| (*s).to_owned())
        .collect()
}

/// Fails if `body` (fetched from `what`) shows any hostile string unescaped.
fn assert_escaped(what: &str, body: &str) {
    for h in MARKUP {
        if h.contains(['<', '>', '"', '&']) {
            assert!(!body.contains(h), "{what}: {h:?} appears unescaped");
        } else {
            // Only single quotes: maud leaves them as they are and quotes every attribute
            // with `"`, so they are harmless in text and inside a double-quoted value.
            for (at, _) in body.match_indices(h) {
                assert!(!in_markup(body, at), "{what}: {h:?} appears in a tag");
            }
        }
    }
    for tag in [
        "<script>alert",
        "<img src=x",
        "<svg onload",
        "<form action=//evil",
    ] {
        assert!(!body.contains(tag), "{what}: {tag:?} appears as markup");
    }
    // An attribute pointing at script or another site, inside a real tag (escaped text may
    // show the same letters between `&lt;` and `&gt;`, which is harmless).
    for attr in ["href", "src", "action", "formaction"] {
        for quote in ["\"", "'", ""] {
            for bad in ["javascript:", "//evil"] {
                let needle = format!("{attr}={quote}{bad}");
                for (at, _) in body.match_indices(&needle) {
                    assert!(!inside_tag(body, at), "{what}: {needle:?} in a tag");
                }
            }
        }
    }
    assert!(!body.contains('\0'), "{what}: a NUL byte passed");
}

/// Whether byte `at` of an HTML page lies inside a tag: the nearest `<` or `>` before it is a
/// `<`.
fn inside_tag(html: &str, at: usize) -> bool {
    html[..at]
        .rfind(['<', '>'])
        .is_some_and(|i| html.as_bytes()[i] == b'<')
}

/// Whether byte `at` of an HTML page is markup: inside a tag and not inside a double-quoted
/// attribute value (an even number of `"` since the tag opened).
fn in_markup(html: &str, at: usize) -> bool {
    inside_tag(html, at) && {
        let open = html[..at].rfind('<').unwrap_or(0);
        html[open..at].matches('"').count().is_multiple_of(2)
    }
}

/// Fails if a CSV export holds a cell that starts a formula.
fn assert_neutralised(what: &str, csv: &str) {
    for f in FORMULAS {
        // Up to the first quote: a quoted CSV cell doubles the quotes inside it.
        let bare = f.trim_start().split('"').next().unwrap_or_default();
        for before in [",", "\n", ",\"", "\n\"", ", ", ",\" ", ",\"\n"] {
            let needle = format!("{before}{bare}");
            assert!(!csv.contains(&needle), "{what}: a formula cell {needle:?}");
        }
    }
}

#[test]
fn the_checks_themselves_tell_markup_from_escaped_text() {
    let escaped = "<p>&lt;form action=//evil.example&gt;</p>";
    assert!(!inside_tag(escaped, escaped.find("action").unwrap()));
    let raw = "<p><form action=//evil.example></p>";
    assert!(inside_tag(raw, raw.find("action").unwrap()));
    assert!(std::panic::catch_unwind(|| assert_escaped("raw", raw)).is_err());
    assert_escaped("escaped", escaped);
    let quoted = r#"<pre>' onmouseover='alert(1)</pre><input value="' onmouseover='alert(1)">"#;
    assert_escaped("single quotes in text and a double-quoted value", quoted);
    let breakout = "<input value='' onmouseover='alert(1)'>";
    assert!(std::panic::catch_unwind(|| assert_escaped("breakout", breakout)).is_err());
    assert!(std::panic::catch_unwind(|| assert_neutralised("csv", "a,=HYPERLINK(1)\n")).is_err());
    assert_neutralised("csv", "a,'=HYPERLINK(1)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hostile_string_reaches_a_page_unescaped() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let quic_port = free_udp_port();
    let config = write_cloud_config(dir.path(), quic_port);
    // A site name as hostile as the rest (cloud.toml is typed by a person too).
    let text = std::fs::read_to_string(&config).unwrap();
    let site_name = "<script>alert(1)</script> Austin";
    std::fs::write(&config, text.replace("Austin, TX", site_name)).unwrap();
    let config_arg = config.to_str().unwrap();
    let staff = [
        ("nurse-ana", MARKUP[1], "nurse", NURSE_PIN),
        ("dr-kim", MARKUP[0], "clinician", CLINICIAN_PIN),
    ];
    // Staff and the admin are added while the cloud runs, as an operator would.
    let (_cloud_proc, cloud) = start_cloud(&config);
    for (id, name, role, pin) in staff {
        let out = vigil_cloud_with_stdin(
            &[
                "staff", "add", id, "--site", "austin", "--name", name, "--role", role, "--config",
                config_arg,
            ],
            pin,
        );
        assert!(out.status.success(), "staff add {id}: {out:?}");
    }
    let out = vigil_cloud_with_stdin(
        &[
            "user", "add", "admin", "--role", "admin", "--config", config_arg,
        ],
        PASSWORD,
    );
    assert!(out.status.success(), "user add: {out:?}");
    // A minute's observation after the stop (a second of the appliance's 60x clock), so the
    // discharge below needn't wait half an hour.
    let out = vigil_cloud_with_stdin(
        &[
            "staff",
            "discharge",
            "--site",
            "austin",
            "--min-observation-min",
            "1",
            "--config",
            config_arg,
        ],
        "",
    );
    assert!(out.status.success(), "staff discharge: {out:?}");

    let section = cloud_section(&ca, dir.path(), quic_port, "austin", "1");
    let edge_config = write_edge_config(
        dir.path(),
        "austin",
        "1",
        &format!("{section}[source]\nkind = \"simulator\"\ntime_factor = 60.0\n"),
    );
    let (_edge_proc, edge) = start_edge(&edge_config);
    eventually(Duration::from_secs(60), "the site's staff list", || async {
        let (st, site) = edge.get("/api/v1/site").await;
        (st == 200 && site["staff"] == json!(2)).then_some(())
    })
    .await;

    // Through the API: a patient whose every free-text field is hostile, a session with notes.
    let corpus = corpus();
    let mut patient = patient_body(&corpus[0]);
    patient["family_name"] = json!(corpus[1]);
    patient["phone"] = json!(FORMULAS[0]);
    patient["medications"] = json!(corpus);
    let (st, p) = edge.post("/api/v1/patients", &patient).await;
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    // The protocol's drug and route are free text too, and reach the CSV export.
    let mut start = session_body(&pid, "baseline");
    start["protocol"]["drug"] = json!(FORMULAS[0]);
    start["protocol"]["route"] = json!(FORMULAS[1]);
    let (st, s) = edge.post("/api/v1/sessions", &start).await;
    assert_eq!(st, 201, "{s}");
    let sid = s["id"].as_str().unwrap().to_owned();
    let events = format!("/api/v1/sessions/{sid}/events");
    for text in corpus
        .iter()
        .map(String::as_str)
        .chain(FORMULAS.iter().copied())
    {
        let (st, body) = edge
            .post(&events, &json!({"type": "note", "text": text}))
            .await;
        assert_eq!(st, 201, "{text:?}: {body}");
    }
    let (st, body) = edge
        .post(
            &events,
            &json!({"type": "observation", "effect": corpus[2], "severity": "mild"}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = edge
        .post(
            &events,
            &json!({"type": "dose", "action": "start", "rate_mg_per_h": 52.5}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = edge
        .post(&events, &json!({"type": "dose", "action": "stop"}))
        .await;
    assert_eq!(st, 201, "{body}");
    for event in [
        json!({"type": "score", "instrument": "cadss", "phase": "post", "value": 2}),
        json!({"type": "checkpoint", "checkpoint": "before_discharge", "systolic": 124,
            "diastolic": 80, "sedation_scale": "moaas", "sedation": 5}),
    ] {
        let (st, body) = edge.post(&events, &event).await;
        assert_eq!(st, 201, "{body}");
    }
    let discharge = json!({"type": "discharge", "aldrete_items": [2, 2, 2, 2, 2],
        "escort": FORMULAS[0], "escort_phone": "+1 512 555 0100",
        "escort_relationship": FORMULAS[1], "no_driving_ack": true});
    eventually(
        Duration::from_secs(60),
        "the observation time to pass",
        || async {
            let (st, body) = edge.post(&events, &discharge).await;
            assert!(st == 201 || st == 409, "{body}");
            (st == 201).then_some(())
        },
    )
    .await;
    stop_session(&edge, &sid).await;

    // A 10,000-character name (with markup at its end) is stored or refused with a clear
    // error, never a failure; stored, it is listed on the patients page below.
    let mut long = patient_body("Long");
    long["family_name"] = json!(format!("{}{}", "x".repeat(10_000), MARKUP[0]));
    let (st, body) = edge.post("/api/v1/patients", &long).await;
    assert!(
        st == 201 || (400..500).contains(&st),
        "{st}: {}",
        body["error"]
    );
    // Bytes that are not UTF-8 in JSON: a client error (the body is never parsed into a
    // record, so nothing is stored).
    let mut raw = b"{\"given_name\": \"".to_vec();
    raw.extend_from_slice(&[0xff, 0xfe, 0x3c]);
    raw.extend_from_slice(b"\", \"family_name\": \"X\", \"birth_date\": \"1980-01-01\"}");
    let (st, _) = edge.post_raw("/api/v1/patients", raw).await;
    assert!((400..500).contains(&st), "{st}");

    // Through the room screen: a clinician registers a flagged patient with a hostile name and
    // starts despite the flag, with a hostile override reason.
    let tablet = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = edge.base.clone();
    let res = tablet
        .get(format!("{base}/screen/login"))
        .send()
        .await
        .unwrap();
    let login_cookie = set_cookie(&res, "vigil_room_login_csrf").unwrap();
    let login_page = res.text().await.unwrap();
    assert_escaped("/screen/login", &login_page);
    let res = tablet
        .post(format!("{base}/screen/login"))
        .header(COOKIE, &login_cookie)
        .form(&[
            ("staff", "dr-kim"),
            ("pin", CLINICIAN_PIN),
            ("csrf", csrf_field(&login_page).as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let doctor = set_cookie(&res, "vigil_room").unwrap();
    let screen = |path: String| {
        let (tablet, base, doctor) = (tablet.clone(), base.clone(), doctor.clone());
        async move {
            let res = tablet
                .get(format!("{base}{path}"))
                .header(COOKIE, &doctor)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            res.text().await.unwrap()
        }
    };
    let home = screen("/screen".into()).await;
    let csrf = csrf_field(&home);
    let res = tablet
        .post(format!("{base}/screen/patients"))
        .header(COOKIE, &doctor)
        .form(&[
            ("csrf", csrf.as_str()),
            ("given_name", MARKUP[2]),
            ("family_name", MARKUP[3]),
            ("birth_date", "1984-06-30"),
            ("phone", PLAIN[0]),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let checkin = res.headers()[LOCATION].to_str().unwrap().to_owned();
    let screened_pid = checkin
        .trim_start_matches("/screen/patients/")
        .trim_end_matches("/checkin")
        .to_owned();
    let start = [
        ("csrf", csrf.as_str()),
        ("action", "start"),
        ("bp_sys", "120"),
        ("bp_dia", "80"),
        ("weight", "70"),
        ("gad7", "9"),
        ("dose", "0.5"),
        ("minutes", "40"),
        ("conc", "0.5"),
        ("prescriber", "dr-kim"),
        ("indication", "ptsd"),
        ("c_escort", "on"),
        ("c_consent", "on"),
        ("c_npo", "on"),
        ("ovr_psychosis_history", MARKUP[4]),
    ];
    let screening = screening_form(&["psychosis_history"]);
    let start: Vec<(&str, &str)> = start
        .into_iter()
        .chain(PHQ9_FORM)
        .chain(screening.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    let res = tablet
        .post(format!("{base}{checkin}"))
        .header(COOKIE, &doctor)
        .form(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the override starts it"
    );
    let screen_sid = res.headers()[LOCATION]
        .to_str()
        .unwrap()
        .trim_start_matches("/screen/sessions/")
        .to_owned();
    let res = tablet
        .post(format!("{base}/screen/sessions/{screen_sid}/note"))
        .header(COOKIE, &doctor)
        .form(&[("csrf", csrf.as_str()), ("text", MARKUP[5])])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // A form body that is not UTF-8: the form decoder replaces the bytes (U+FFFD), so the
    // note holds valid text, or it is refused; never a server error.
    let mut body = format!("csrf={csrf}&text=").into_bytes();
    body.extend_from_slice(&[0xff, 0xfe]);
    let res = tablet
        .post(format!("{base}/screen/sessions/{screen_sid}/note"))
        .header(COOKIE, &doctor)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        res.status() == StatusCode::SEE_OTHER || res.status().is_client_error(),
        "{}",
        res.status()
    );
    // The patient leaves against advice, in hostile words: the session page, the monitoring
    // form and the dashboard's attention list show them.
    let res = tablet
        .post(format!("{base}/screen/sessions/{screen_sid}/end"))
        .header(COOKIE, &doctor)
        .form(&[
            ("csrf", csrf.as_str()),
            ("disposition", "against_advice"),
            ("note", MARKUP[3]),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // The site's ledger, with hostile text in every free field (stock received after the
    // sessions above, so their infusions were not gated on a draw).
    let receipt = json!({
        "type": "receipt",
        "lot": {"id": "L1", "ndc": "0409-2051-05", "product": MARKUP[2],
            "lot_number": "LN-1", "mg_per_ml": 50.0, "expiry": "2030-06-30"},
        "ml": 10.0, "supplier": MARKUP[4], "invoice": FORMULAS[0],
        "witness": "dr-kim", "witness_pin": CLINICIAN_PIN,
    });
    let (st, body) = edge.post("/api/v1/ledger/entries", &receipt).await;
    assert_eq!(st, 201, "{body}");
    let loss = json!({"type": "loss", "lot_id": "L1", "ml": 0.5, "kind": "loss",
        "reason": FORMULAS[3], "witness": "dr-kim", "witness_pin": CLINICIAN_PIN});
    let (st, body) = edge.post("/api/v1/ledger/entries", &loss).await;
    assert_eq!(st, 201, "{body}");

    // Every page of the room screen.
    for path in [
        "/screen".to_owned(),
        "/screen/patients".to_owned(),
        format!("/screen/patients?q={}", urlencode(MARKUP[0])),
        format!("/screen/patients/{pid}/checkin"),
        format!("/screen/patients/{screened_pid}/checkin"),
        format!("/screen/patients/{pid}/course"),
        format!("/screen/patients/{screened_pid}/course"),
        format!("/screen/sessions/{sid}"),
        format!("/screen/sessions/{sid}/after"),
        format!("/screen/sessions/{screen_sid}"),
        format!("/screen/sessions/{screen_sid}/after"),
        format!("/screen/sessions/{sid}/form"),
        format!("/screen/sessions/{screen_sid}/form"),
        "/screen/pins".to_owned(),
        "/screen/ledger".to_owned(),
        "/station".to_owned(),
    ] {
        let body = screen(path.clone()).await;
        assert_escaped(&path, &body);
    }

    // The cloud holds both sessions; every dashboard page, signed in as an admin.
    for id in [&sid, &screen_sid] {
        eventually(
            Duration::from_secs(90),
            "the session in the cloud",
            || async {
                // The screen's session in the state it ended in (against advice).
                let (st, s) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
                (st == 200 && (*id != screen_sid || s["state"] == "aborted")).then_some(())
            },
        )
        .await;
    }
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let dash = cloud.base.clone();
    let res = browser.get(format!("{dash}/login")).send().await.unwrap();
    let csrf_cookie = set_cookie(&res, "vigil_login_csrf").unwrap();
    let page = res.text().await.unwrap();
    let res = browser
        .post(format!("{dash}/login"))
        .header(COOKIE, &csrf_cookie)
        .form(&[
            ("username", "admin"),
            ("password", PASSWORD),
            ("csrf", csrf_field(&page).as_str()),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let admin = set_cookie(&res, "vigil_session").unwrap();
    let get = |path: String| {
        let (browser, dash, admin) = (browser.clone(), dash.clone(), admin.clone());
        async move {
            let res = browser
                .get(format!("{dash}{path}"))
                .header(COOKIE, &admin)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            res.text().await.unwrap()
        }
    };
    assert!(
        get("/attention".to_owned())
            .await
            .contains("Left against medical advice"),
        "the ending is on the attention list"
    );
    eventually(Duration::from_secs(60), "the ledger in the cloud", || {
        let page = get("/ledger?site=austin".to_owned());
        async move { page.await.contains("data-lot=\"L1\"").then_some(()) }
    })
    .await;
    for path in [
        "/".to_owned(),
        "/sessions".to_owned(),
        format!("/sessions?patient={}", urlencode(MARKUP[0])),
        format!("/sessions/{sid}"),
        format!("/sessions/{screen_sid}"),
        "/reports/advisories".to_owned(),
        "/reports/utilisation".to_owned(),
        "/reports/outcomes".to_owned(),
        "/attention".to_owned(),
        "/audit".to_owned(),
        "/account".to_owned(),
        "/fleet".to_owned(),
        "/ledger?site=austin".to_owned(),
    ] {
        let body = get(path.clone()).await;
        assert_escaped(&path, &body);
    }
    // FHIR is JSON: the hostile strings stay strings.
    let fhir: Value = serde_json::from_str(&get(format!("/sessions/{sid}/fhir")).await).unwrap();
    assert_eq!(fhir["resourceType"], "Bundle");
    // CSV exports: no formula survives, and the ones put in (the drug and the route) are there,
    // neutralised.
    let sessions_csv = get("/sessions.csv".to_owned()).await;
    assert!(sessions_csv.contains("'=HYPERLINK"), "{sessions_csv}");
    assert!(sessions_csv.contains("' =1+1"), "{sessions_csv}");
    for path in [
        "/sessions.csv",
        "/reports/advisories.csv",
        "/reports/utilisation.csv",
        "/reports/outcomes.csv",
        "/audit.csv",
        "/ledger.csv?site=austin&report=dispensing",
        "/ledger.csv?site=austin&report=inventory",
        "/ledger.csv?site=austin&report=losses",
    ] {
        let body = get(path.to_owned()).await;
        assert_neutralised(path, &body);
    }
    let dispensing = get("/ledger.csv?site=austin&report=dispensing".to_owned()).await;
    // The formula sits inside a longer cell there: inert, and kept as the text it was.
    assert!(dispensing.contains("invoice =HYPERLINK"), "{dispensing}");
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
