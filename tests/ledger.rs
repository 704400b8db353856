//! The controlled-substance ledger end to end, with real `vigil-cloud` and `vigil-edge`
//! processes over QUIC on loopback: stock received in room 1 with a witness's PIN reaches
//! room 2 through the cloud; room 2's infusion waits for its draw, which comes from that lot;
//! a wrong or missing witness PIN and the front desk's draw are refused; the cloud's ledger
//! page shows the lot's balance with both rooms' entries and their receive times, and its
//! dispensing log, inventory and loss reports download as CSV, for an admin and the site's
//! regional manager, not for another region's.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const SIM: &str = "chunk_period_s = 10\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = 9\necg_hz = 130\ntime_factor = 1.0\n";

const PASSWORD: &str = "a manager's long password";

fn cloud_cli(args: &[&str], stdin: &str) {
    let out = vigil_cloud_with_stdin(args, stdin);
    assert!(out.status.success(), "{args:?}: {out:?}");
}

fn receipt(witness_pin: &str) -> Value {
    json!({
        "type": "receipt",
        "lot": {
            "id": "L1", "ndc": "0409-2051-05", "product": "Ketamine HCl 50 mg/mL, 10 mL vial",
            "lot_number": "LN-2207", "mg_per_ml": 50.0, "expiry": "2030-06-30"
        },
        "ml": 10.0, "supplier": "McKesson", "invoice": "INV-88",
        "witness": "dr-kim", "witness_pin": witness_pin,
    })
}

async fn lot_balance(edge: &Http) -> Option<f64> {
    let (st, ledger) = edge.get("/api/v1/ledger").await;
    assert_eq!(st, 200, "{ledger}");
    ledger["lots"]
        .as_array()?
        .iter()
        .find(|l| l["id"] == "L1")
        .and_then(|l| l["balance_ul"].as_f64())
}

/// A running cloud with austin's clinician `dr-kim` and nurse `rn-ana`, and austin's rooms 1
/// and 2 holding the staff list.
struct Site {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    cloud_proc: Proc,
    cloud: Http,
    rooms: Vec<(Proc, Http)>,
}

async fn site_with_two_rooms() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let config = write_cloud_config(dir.path(), port);
    let c = config.to_str().unwrap();
    let (cloud_proc, cloud) = start_cloud(&config);
    for (id, role, pin) in [
        ("dr-kim", "clinician", "730461"),
        ("rn-ana", "nurse", "551902"),
    ] {
        cloud_cli(
            &[
                "staff", "add", id, "--site", "austin", "--name", id, "--role", role, "--config", c,
            ],
            pin,
        );
    }
    let mut rooms = Vec::new();
    for room in ["1", "2"] {
        let extra = format!(
            "{SIM}{}",
            cloud_section(&ca, dir.path(), port, "austin", room)
        );
        rooms.push(start_edge(&write_edge_config(
            dir.path(),
            "austin",
            room,
            &extra,
        )));
    }
    for (_, edge) in &rooms {
        eventually(Duration::from_secs(30), "the staff list", || async {
            let (st, s) = edge.get("/api/v1/site").await;
            (st == 200 && s["staff"].as_u64() == Some(2)).then_some(())
        })
        .await;
    }
    Site {
        _dir: dir,
        config,
        cloud_proc,
        cloud,
        rooms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_received_in_one_room_is_drawn_in_another_and_the_cloud_reports_it() {
    let site = site_with_two_rooms().await;
    let c = site.config.to_str().unwrap();
    cloud_cli(
        &["user", "add", "admin", "--role", "admin", "--config", c],
        PASSWORD,
    );
    cloud_cli(
        &[
            "user",
            "add",
            "rm-se",
            "--role",
            "regional-manager",
            "--region",
            "southeast",
            "--config",
            c,
        ],
        PASSWORD,
    );
    let (room1, room2) = (&site.rooms[0].1, &site.rooms[1].1);
    let cloud = &site.cloud;

    // Room 1 receives stock into the safe, witnessed.
    let (st, body) = room1
        .post("/api/v1/ledger/entries", &receipt("000000"))
        .await;
    assert_eq!(st, 422, "a wrong witness PIN: {body}");
    let mut no_pin = receipt("");
    no_pin.as_object_mut().unwrap().remove("witness_pin");
    let (st, body) = room1.post("/api/v1/ledger/entries", &no_pin).await;
    assert_eq!(st, 422, "{body}");
    assert!(body.to_string().contains("witness_pin"), "{body}");
    let (st, entry) = room1
        .post("/api/v1/ledger/entries", &receipt("730461"))
        .await;
    assert_eq!(st, 201, "{entry}");
    assert_eq!(entry["witness"], "dr-kim");
    assert_eq!(lot_balance(room1).await, Some(10_000.0));

    // It reaches room 2 through the cloud.
    eventually(Duration::from_secs(30), "the lot in room 2", || async {
        (lot_balance(room2).await == Some(10_000.0)).then_some(())
    })
    .await;

    // Room 2's infusion waits for its draw.
    let session = begin_session(room2, "Ledger", "baseline").await;
    let start = json!({"type": "dose", "action": "start", "rate_mg_per_h": 52.5});
    let (st, body) = room2
        .post(&format!("/api/v1/sessions/{session}/events"), &start)
        .await;
    assert_eq!(st, 409, "{body}");
    assert!(body.to_string().contains("record the draw first"), "{body}");
    let draw = json!({"type": "draw", "lot_id": "L1", "ml": 1.0, "session_id": session});
    let (st, body) = room2.post("/api/v1/ledger/entries", &draw).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = room2
        .post(&format!("/api/v1/sessions/{session}/events"), &start)
        .await;
    assert_eq!(st, 201, "{body}");
    eventually(
        Duration::from_secs(30),
        "room 2's draw in room 1",
        || async { (lot_balance(room1).await == Some(9_000.0)).then_some(()) },
    )
    .await;

    // The cloud's ledger: the balance, both rooms' entries with their receive times, the
    // reports; for the admin, not for another region's manager.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let admin = dashboard_sign_in(&client, &cloud.base, "admin", PASSWORD).await;
    let page = |path: String, cookie: String| {
        let client = client.clone();
        let base = cloud.base.clone();
        async move {
            let res = client
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let html = eventually(Duration::from_secs(30), "both entries at the cloud", || {
        let page = page("/ledger?site=austin".into(), admin.clone());
        async move {
            let (st, html) = page.await;
            (st == 200 && html.matches("class=\"entry").count() == 2).then_some(html)
        }
    })
    .await;
    assert!(html.contains("data-lot=\"L1\""), "{html}");
    assert!(
        html.contains("9.000") && html.contains("450.00"),
        "9 mL, 450 mg left: {html}"
    );
    assert!(html.contains("room 2") && html.contains("safe"), "{html}");
    assert!(
        !html.contains("not yet"),
        "every entry has its receive time"
    );
    let (st, csv) = page(
        "/ledger.csv?site=austin&report=dispensing".into(),
        admin.clone(),
    )
    .await;
    assert_eq!(st, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].contains(",receipt,") && lines[1].contains("dr-kim"),
        "{csv}"
    );
    assert!(
        lines[2].contains(",draw,") && lines[2].contains(&session),
        "{csv}"
    );
    let (_, inventory) = page(
        "/ledger.csv?site=austin&report=inventory".into(),
        admin.clone(),
    )
    .await;
    assert!(
        inventory
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("L1,") && l.contains(",9.000,")),
        "{inventory}"
    );
    // Filtered by type: the draw alone, on the page and in the log.
    let (_, drawn) = page("/ledger?site=austin&kind=draw".into(), admin.clone()).await;
    assert_eq!(drawn.matches("class=\"entry").count(), 1, "{drawn}");
    let (_, log) = page(
        "/ledger.csv?site=austin&report=dispensing&lot=L1&kind=draw".into(),
        admin.clone(),
    )
    .await;
    assert_eq!(log.lines().count(), 2, "{log}");
    let (st, _) = page(
        "/ledger.csv?site=austin&report=everything".into(),
        admin.clone(),
    )
    .await;
    assert_eq!(st, 400);
    let other = dashboard_sign_in(&client, &cloud.base, "rm-se", PASSWORD).await;
    let (st, _) = page("/ledger?site=austin".into(), other.clone()).await;
    assert_eq!(st, 404, "austin is not in the southeast region");
    let (st, _) = page("/ledger.csv?site=austin&report=dispensing".into(), other).await;
    assert_eq!(st, 404);
}

/// Signs `staff` in to an appliance's room screen over HTTP; the session cookie and the CSRF
/// token of its forms.
async fn screen_sign_in(
    client: &reqwest::Client,
    base: &str,
    staff: &str,
    pin: &str,
) -> (String, String) {
    let res = client
        .get(format!("{base}/screen/login"))
        .send()
        .await
        .unwrap();
    let login_cookie = set_cookie(&res, "vigil_room_login_csrf").expect("sign-in token cookie");
    let csrf = csrf_field(&res.text().await.unwrap());
    let res = client
        .post(format!("{base}/screen/login"))
        .header("cookie", login_cookie)
        .form(&[("staff", staff), ("pin", pin), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{staff} signs in");
    let session = set_cookie(&res, "vigil_room").expect("room cookie");
    let page = client
        .get(format!("{base}/screen"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (session, csrf_field(&page))
}

async fn discrepancies(edge: &Http) -> Vec<Value> {
    let (_, ledger) = edge.get("/api/v1/ledger").await;
    ledger["open_discrepancies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn entry_count(edge: &Http) -> usize {
    let (_, ledger) = edge.get("/api/v1/ledger").await;
    ledger["entries"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_offline_draw_from_one_lot_and_a_count_that_disagrees_waits_for_a_clinician() {
    let mut site = site_with_two_rooms().await;
    let config = site.config.clone();
    let (room1, room2) = (&site.rooms[0].1, &site.rooms[1].1);
    let (st, body) = room1
        .post("/api/v1/ledger/entries", &receipt("730461"))
        .await;
    assert_eq!(st, 201, "{body}");
    eventually(Duration::from_secs(30), "the lot in room 2", || async {
        (lot_balance(room2).await == Some(10_000.0)).then_some(())
    })
    .await;

    // Hostile entries: refused with the reason, nothing written.
    let before = entry_count(room1).await;
    for (body, status, reason) in [
        (
            json!({"type": "count", "lot_id": "L1", "ml": -1.0}),
            422,
            "not a volume",
        ),
        (
            json!({"type": "count", "lot_id": "L1", "ml": 1e12}),
            422,
            "not a volume",
        ),
        (
            json!({"type": "waste", "lot_id": "ZZ", "ml": 1.0, "reason": "x",
            "witness": "dr-kim", "witness_pin": "730461"}),
            409,
            "not in the safe",
        ),
        (
            json!({"type": "correction", "reverses": "no-such-entry", "reason": "typo", "witness": "dr-kim", "witness_pin": "730461"}),
            409,
            "does not exist",
        ),
        (
            json!({"type": "receipt", "lot": {"id": "L1"}, "ml": 1.0}),
            422,
            "missing field",
        ),
    ] {
        let (st, answer) = room1.post("/api/v1/ledger/entries", &body).await;
        assert_eq!(st, status, "{body}: {answer}");
        assert!(answer.to_string().contains(reason), "{body}: {answer}");
    }
    let (_, ledger) = room1.get("/api/v1/ledger").await;
    let first = ledger["entries"][0]["id"].as_str().unwrap().to_owned();
    for method in [
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ] {
        let res = reqwest::Client::new()
            .request(
                method.clone(),
                format!("{}/api/v1/ledger/entries/{first}", room1.base),
            )
            .bearer_auth(room1.token.as_deref().unwrap())
            .json(&json!({"ml": 0.0}))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(res.status().as_u16(), 404 | 405),
            "{method}: {}",
            res.status()
        );
    }
    assert_eq!(entry_count(room1).await, before, "nothing written");

    // The network goes; each room draws a mL from the same lot for its own session.
    site.cloud_proc.terminate();
    for edge in [room1, room2] {
        eventually(Duration::from_secs(60), "the room to notice", || async {
            let (_, st) = edge.get("/api/v1/status").await;
            (st["sync"]["connected"] == false).then_some(())
        })
        .await;
    }
    for (edge, name) in [(room2, "Two"), (room1, "One")] {
        let session = begin_session(edge, name, "baseline").await;
        let draw = json!({"type": "draw", "lot_id": "L1", "ml": 1.0, "session_id": session});
        let (st, body) = edge.post("/api/v1/ledger/entries", &draw).await;
        assert_eq!(st, 201, "{body}");
    }
    assert_eq!(
        lot_balance(room1).await,
        Some(9_000.0),
        "room 1 sees its own draw"
    );
    // Room 1 counts what it believes is there, witnessed: it agrees, as far as room 1 knows.
    let count = json!({"type": "count", "lot_id": "L1", "ml": 9.0,
        "witness": "dr-kim", "witness_pin": "730461"});
    let (st, body) = room1.post("/api/v1/ledger/entries", &count).await;
    assert_eq!(st, 201, "{body}");
    assert!(discrepancies(room1).await.is_empty());

    // The network is back: both draws merge, the balance is the site's, and the count now
    // disagrees — the site's discrepancy, in both rooms.
    let (_cloud, _) = start_cloud(&config);
    for edge in [room1, room2] {
        eventually(Duration::from_secs(60), "the merged ledger", || async {
            (lot_balance(edge).await == Some(8_000.0) && discrepancies(edge).await.len() == 1)
                .then_some(())
        })
        .await;
    }
    let d = discrepancies(room1).await.remove(0);
    assert_eq!(
        (d["expected_ul"].as_i64(), d["counted_ul"].as_i64()),
        (Some(8_000), Some(9_000))
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (cookie, csrf) = screen_sign_in(&client, &room1.base, "dr-kim", "730461").await;
    let home = client
        .get(format!("{}/screen", room1.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("id=\"ledger-discrepancy\""),
        "the room shows it"
    );
    let count_id = d["count_id"].as_str().unwrap();
    let resolve = |witness: &'static str, pin: &'static str| {
        let (client, base, cookie, csrf) = (
            client.clone(),
            room1.base.clone(),
            cookie.clone(),
            csrf.clone(),
        );
        let count_id = count_id.to_owned();
        async move {
            let res = client
                .post(format!("{base}/screen/ledger"))
                .header("cookie", cookie)
                .form(&[
                    ("what", "resolution"),
                    ("count_id", count_id.as_str()),
                    (
                        "reason",
                        "room 2 drew offline; both draws are on the sessions",
                    ),
                    ("witness", witness),
                    ("witness_pin", pin),
                    ("csrf", csrf.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (st, page) = resolve("dr-kim", "730461").await;
    assert_eq!(st, 422, "the clinician cannot witness herself");
    assert!(page.contains("not the person recording it"), "{page}");
    let (st, _) = resolve("rn-ana", "000000").await;
    assert_eq!(st, 422, "a wrong witness PIN");
    assert_eq!(discrepancies(room1).await.len(), 1, "still open");
    let (st, page) = resolve("rn-ana", "551902").await;
    assert_eq!(st, 303, "{page}");
    for edge in [room1, room2] {
        eventually(
            Duration::from_secs(60),
            "the discrepancy resolved",
            || async { discrepancies(edge).await.is_empty().then_some(()) },
        )
        .await;
    }
}
