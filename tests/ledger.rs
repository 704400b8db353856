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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_received_in_one_room_is_drawn_in_another_and_the_cloud_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let config = write_cloud_config(dir.path(), port);
    let c = config.to_str().unwrap();
    let (_cloud, cloud) = start_cloud(&config);
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
    let (room1, room2) = (&rooms[0].1, &rooms[1].1);
    for edge in [room1, room2] {
        eventually(
            Duration::from_secs(30),
            "the staff list on the appliance",
            || async {
                let (st, s) = edge.get("/api/v1/site").await;
                (st == 200 && s["staff"].as_u64() == Some(2)).then_some(())
            },
        )
        .await;
    }

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
