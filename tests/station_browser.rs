//! The central station in real headless Chromium: two rooms of a site infusing, the cloud not
//! running at all, room 1's appliance showing both rooms live (numerics, moving ECG strips),
//! a high-priority advisory raised in room 2 appearing on room 1's station and acknowledged
//! there, and room 2's session recording the acknowledgement with the nurse's staff id.
//! Screenshots under `target/screenshots/`. Chromium and chromedriver must be installed:
//! without them this test fails, it does not skip.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::peers::{PeerSite, STAFF};
use support::webdriver::Browser;
use support::*;

/// Simulated monitors at 30 times real time, so room 2's hypertension advisory comes within
/// the test.
fn source(seed: u64, scenario: &str) -> String {
    format!(
        "[source]\nkind = \"simulator\"\nseed = {seed}\nscenario = \"{scenario}\"\necg_hz = 250\ntime_factor = 30.0\n"
    )
}

/// Waits (up to `limit`) for an element matching `css`.
async fn wait_long(b: &Browser, css: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while b.find_all(css).await.is_empty() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {css}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn attribute(b: &Browser, css: &str, name: &str) -> Value {
    let e = b.find(css).await;
    b.cmd(
        "GET",
        &format!("/element/{e}/attribute/{name}"),
        Value::Null,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_station_shows_every_room_live_and_acknowledges_another_rooms_advisory() {
    let (site, _) = PeerSite::austin_pair(
        false,
        true,
        [source(3, "baseline"), source(4, "hypertension")],
    )
    .await;
    site.peered(0, 1).await;
    let (one, two) = (&site.rooms[0].http, &site.rooms[1].http);
    let mut sessions = Vec::new();
    for (edge, scenario) in [(one, "baseline"), (two, "hypertension")] {
        let (st, p) = edge
            .post("/api/v1/patients", &patient_body("Station"))
            .await;
        assert_eq!(st, 201, "{p}");
        let mut body = session_body(p["id"].as_str().unwrap(), scenario);
        body["scenario"] = json!(scenario);
        let (st, s) = edge.post("/api/v1/sessions", &body).await;
        assert_eq!(st, 201, "{s}");
        let (st, d) = edge
            .post(
                &format!("/api/v1/sessions/{}/events", s["id"].as_str().unwrap()),
                &json!({"type": "dose", "action": "start", "rate_mg_per_h": 52.5}),
            )
            .await;
        assert_eq!(st, 201, "the infusion starts: {d}");
        sessions.push(s["id"].as_str().unwrap().to_owned());
    }
    let session2 = sessions[1].clone();

    let dir = tempfile::tempdir().unwrap();
    let b = Browser::start(&dir.path().join("dl"), &dir.path().join("profile")).await;
    let (nurse, name, _, pin) = STAFF[0];
    b.goto(&format!("{}/screen/login", one.base)).await;
    b.click(&format!("#staff option[value='{nurse}']")).await;
    b.type_into("#pin", pin).await;
    b.click("#signin").await;
    b.wait_for("#whoami").await;
    b.goto(&format!("{}/station", one.base)).await;
    for room in ["1", "2"] {
        wait_long(
            &b,
            &format!(
                "#tile-{room}[data-online='true'] .state-infusing, #tile-{room}.state-infusing"
            ),
            Duration::from_secs(20),
        )
        .await;
    }
    // Both strips move: their newest sample time advances.
    for room in ["1", "2"] {
        wait_long(
            &b,
            &format!("#tile-{room}[data-ecg]"),
            Duration::from_secs(10),
        )
        .await;
        let first = attribute(&b, &format!("#tile-{room}"), "data-ecg").await;
        let moved = Instant::now() + Duration::from_secs(10);
        loop {
            let now = attribute(&b, &format!("#tile-{room}"), "data-ecg").await;
            if now != first && now != Value::Null {
                break;
            }
            assert!(
                Instant::now() < moved,
                "room {room}'s ECG strip does not move"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let hr = b.text("#tile-2 .hr").await;
    assert!(
        hr.parse::<u32>().is_ok(),
        "room 2's heart rate on room 1's station: {hr:?}"
    );
    b.screenshot("station-01-two-rooms-infusing").await;

    // Room 2's hypertension raises a high-priority advisory; it shows on room 1's station.
    wait_long(
        &b,
        "#tile-2 li.adv-high button.ack",
        Duration::from_secs(90),
    )
    .await;
    let advisory = attribute(&b, "#tile-2 li.adv-high", "data-advisory").await;
    let advisory = advisory.as_str().unwrap().to_owned();
    b.screenshot("station-02-high-advisory-in-room-2").await;
    b.click("#tile-2 li.adv-high button.ack").await;
    b.wait_url("/station").await;
    wait_long(
        &b,
        &format!("#tile-2 li[data-advisory='{advisory}'].acked"),
        Duration::from_secs(10),
    )
    .await;
    b.screenshot("station-03-acknowledged-from-room-1").await;

    // Recorded in room 2's session, by the nurse signed in at room 1's station.
    let (st, s) = two.get(&format!("/api/v1/sessions/{session2}")).await;
    assert_eq!(st, 200, "{s}");
    let a = s["meta"]["advisories"]
        .as_array()
        .or_else(|| s["advisories"].as_array())
        .and_then(|list| list.iter().find(|a| a["id"] == advisory.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("advisory {advisory} in room 2's session: {s}"));
    assert_eq!(a["acknowledged_by"], nurse, "{a}");
    assert!(a["acknowledged_us"].as_i64().is_some(), "{a}");
    let who = b
        .text(&format!("#tile-2 li[data-advisory='{advisory}']"))
        .await;
    assert!(who.contains(nurse) || who.contains(name), "{who}");
}
