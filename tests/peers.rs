//! The rooms of a site as peers, end to end: real `vigil-edge` processes syncing with each other
//! over QUIC on loopback with the appliance certificates of one clinic CA, the cloud cut off by
//! the fault-injecting relay (or not running at all), and the central station read over HTTP.
//!
//! - A patient registered in room 1 is found in room 2 within 2 s with the cloud cut off, a
//!   session starts there, concurrent edits in both rooms converge, and once the link returns
//!   the cloud holds one merged patient.
//! - A florida appliance calling an austin one is refused on both sides, and nothing of
//!   either site crosses.
//! - An appliance whose certificate IT revokes is refused by its peers once the cloud sends
//!   the site's configuration: the open link closes, and its patients stop crossing.
//! - A peer killed mid-stream shows offline on the other room's station within 5 s and online
//!   again when it restarts.
//! - Peer sync while the link between the rooms loses packets and flaps: nothing lost, nothing
//!   duplicated (a row of RELIABILITY.md).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::peers::{PeerSite, RoomSpec, STAFF, patient, screen_sign_in};
use support::tally::{Tally, report};
use support::*;
use vigil::relay::{Faults, Relay, Timeline};

/// Simulated monitors in real time, ECG at 250 Hz.
const SIM: &str = "[source]\nkind = \"simulator\"\nseed = 5\necg_hz = 250\ntime_factor = 1.0\n";

fn room(site: &'static str, room: &'static str, calls: &[String], extra: &str) -> RoomSpec {
    RoomSpec {
        site,
        room,
        calls: calls.to_vec(),
        extra: extra.to_owned(),
    }
}

/// Austin's rooms 1 and 2, each calling the other, with real-time simulators; with a cloud
/// behind the relay or none, with the site's staff seeded or not.
async fn austin_pair(with_cloud: bool, seed_staff: bool) -> (PeerSite, Vec<u16>) {
    PeerSite::austin_pair(with_cloud, seed_staff, [SIM.to_owned(), SIM.to_owned()]).await
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Registers a patient named `given` in `from` and waits up to `within` for `to` to hold it;
/// its id.
async fn registered_and_found(
    (from, to): (&Http, &Http),
    given: &str,
    within: Duration,
    what: &str,
) -> String {
    let (st, p) = from.post("/api/v1/patients", &patient_body(given)).await;
    assert_eq!(st, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    eventually(within, what, || patient(to, &id)).await;
    id
}

fn medications(p: &Value) -> Vec<String> {
    p["medications"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_registered_in_one_room_is_found_in_the_other_with_the_cloud_cut_off() {
    let (site, _) = austin_pair(true, false).await;
    // Both rooms reach the cloud, then the relay cuts it off.
    for r in &site.rooms {
        eventually(
            Duration::from_secs(60),
            "the room to reach the cloud",
            || async {
                let (_, s) = r.http.get("/api/v1/status").await;
                (s["sync"]["connected"] == json!(true)).then_some(())
            },
        )
        .await;
    }
    site.relay.set(Faults::CUT).unwrap();
    site.peered(0, 1).await;
    site.peered(1, 0).await;
    let (r1, r2) = (&site.rooms[0].http, &site.rooms[1].http);

    let id = registered_and_found(
        (r1, r2),
        "Peer",
        Duration::from_secs(2),
        "room 2 to find the patient registered in room 1",
    )
    .await;
    let (st, session) = r2
        .post("/api/v1/sessions", &session_body(&id, "baseline"))
        .await;
    assert_eq!(
        st, 201,
        "room 2 starts a session for room 1's patient: {session}"
    );
    let session_id = session["id"].as_str().unwrap().to_owned();

    // Both rooms edit the patient at once.
    let path = format!("/api/v1/patients/{id}");
    let one = json!({"phone": "+1 512 555 0100", "add_medications": ["sertraline"]});
    let two = json!({"add_medications": ["lamotrigine"]});
    let ((st1, b1), (st2, b2)) = tokio::join!(r1.patch(&path, &one), r2.patch(&path, &two));
    assert_eq!((st1, st2), (200, 200), "{b1} {b2}");
    let merged = |p: &Value| {
        let meds = medications(p);
        meds.contains(&"sertraline".to_owned())
            && meds.contains(&"lamotrigine".to_owned())
            && p["phone"] == "+1 512 555 0100"
    };
    for (name, edge) in [("room 1", r1), ("room 2", r2)] {
        eventually(
            Duration::from_secs(10),
            &format!("{name} to hold both rooms' edits"),
            || async { patient(edge, &id).await.filter(|p| merged(p)).map(|_| ()) },
        )
        .await;
    }
    let (st, _) = site.cloud().get(&path).await;
    assert_eq!(st, 404, "nothing reached the cloud while it was cut off");
    // A peer's copy is no confirmation: in both rooms' databases the patient is still not
    // delivered to the cloud (so retention would keep it).
    for room in ["1", "2"] {
        let db = rusqlite::Connection::open(edge_db(site.dir.path(), "austin", room)).unwrap();
        let delivered: Option<i64> = db
            .query_row(
                "SELECT s.synced_version FROM documents d JOIN sync_docs s ON s.doc_id = d.id
                 WHERE d.id = ?1 AND s.synced_version >= d.version",
                [&id],
                |r| r.get(0),
            )
            .ok();
        assert_eq!(
            delivered, None,
            "room {room} counts a peer's copy as delivered"
        );
    }
    assert!(
        site.relay.stats().to_upstream.dropped_cut > 0,
        "the appliances really tried the cloud"
    );

    site.relay.set(Faults::OK).unwrap();
    let in_cloud = eventually(
        Duration::from_secs(60),
        "the cloud to hold the merged patient",
        || async {
            let (st, p) = site.cloud().get(&path).await;
            (st == 200 && merged(&p)).then_some(p)
        },
    )
    .await;
    let meds = medications(&in_cloud);
    assert_eq!(
        meds.len(),
        2,
        "one merged document, each edit once: {in_cloud}"
    );
    eventually(
        Duration::from_secs(60),
        "room 2's session to reach the cloud",
        || async {
            let (st, _) = site
                .cloud()
                .get(&format!("/api/v1/sessions/{session_id}"))
                .await;
            (st == 200).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_sites_appliance_is_refused_and_nothing_crosses() {
    let ports = PeerSite::ports(2);
    let site = PeerSite::start(
        false,
        false,
        &ports,
        vec![
            room("austin", "1", &[], SIM),
            room("florida", "1", &[addr(ports[0])], SIM),
        ],
    )
    .await;
    let (austin, florida) = (&site.rooms[0].http, &site.rooms[1].http);
    let (_, a) = austin
        .post("/api/v1/patients", &patient_body("Austin"))
        .await;
    let (_, f) = florida
        .post("/api/v1/patients", &patient_body("Florida"))
        .await;
    let (a, f) = (a["id"].as_str().unwrap(), f["id"].as_str().unwrap());
    for (name, edge, other) in [
        ("austin", austin, "florida"),
        ("florida", florida, "austin"),
    ] {
        let status = eventually(
            Duration::from_secs(30),
            &format!("{name} to refuse the other site's appliance"),
            || async {
                let (_, s) = edge.get("/api/v1/status").await;
                (s["peers"]["refused"].as_u64().unwrap_or(0) > 0).then_some(s)
            },
        )
        .await;
        let why = status["peers"]["last_refusal"].as_str().unwrap_or("");
        assert!(
            why.contains(&format!("appliance {other}/1 is not of site {name}")),
            "{name}: {why}"
        );
    }
    // Several of the callers' retries later, still nothing crossed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        patient(austin, f).await.is_none(),
        "florida's patient reached austin"
    );
    assert!(
        patient(florida, a).await.is_none(),
        "austin's patient reached florida"
    );
    for edge in [austin, florida] {
        let (_, s) = edge.get("/api/v1/status").await;
        assert_eq!(s["peers"]["rooms"], json!({}), "no peer link: {s}");
    }

    // An appliance certificate of another clinic's CA, naming austin: refused in the handshake.
    let other = tempfile::tempdir().unwrap();
    clinic_ca(other.path());
    let (_, before) = austin.get("/api/v1/status").await;
    let before = before["peers"]["refused"].as_u64().unwrap();
    let attempt = connect_as(other.path(), "austin", "2", ports[0]).await;
    assert!(attempt.is_err(), "a certificate of another CA got through");
    eventually(
        Duration::from_secs(10),
        "austin to count the refused handshake",
        || async {
            let (_, s) = austin.get("/api/v1/status").await;
            let why = s["peers"]["last_refusal"].as_str().unwrap_or("").to_owned();
            (s["peers"]["refused"].as_u64().unwrap() > before && why.contains("handshake failed"))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_appliance_whose_certificate_is_revoked_is_refused_by_its_peers() {
    let (site, _) = austin_pair(true, false).await;
    site.peered(0, 1).await;
    let (r1, r2) = (&site.rooms[0].http, &site.rooms[1].http);
    registered_and_found(
        (r2, r1),
        "Before",
        Duration::from_secs(10),
        "room 1 to hold room 2's patient before the revocation",
    )
    .await;

    // IT revokes room 2's box (stolen, say) as README says: `vigil-cloud pki revoke`.
    let config = std::fs::read_to_string(&site.rooms[1].config).unwrap();
    let cert = config
        .lines()
        .find_map(|l| l.strip_prefix("cert = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("room 2's certificate path in its config");
    let pki = site.dir.path().join("pki");
    let out = std::process::Command::new(bin("vigil-cloud"))
        .args([
            "pki",
            "revoke",
            "--dir",
            pki.to_str().unwrap(),
            "--cert",
            cert,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The cloud puts the revocation in the site's configuration, room 1 receives it and closes
    // the link, and refuses room 2's calls from then on, saying why.
    let status = eventually(
        Duration::from_secs(30),
        "room 1 to refuse room 2's revoked certificate",
        || async {
            let (_, s) = r1.get("/api/v1/status").await;
            let why = s["peers"]["last_refusal"].as_str().unwrap_or("");
            (why.contains("appliance austin/2's certificate") && why.contains("was revoked at"))
                .then_some(s)
        },
    )
    .await;
    assert_eq!(status["peers"]["rooms"], json!({}), "no link: {status}");
    let refused = status["peers"]["refused"].as_u64().unwrap();
    let (st, p) = r2.post("/api/v1/patients", &patient_body("After")).await;
    assert_eq!(st, 201, "the revoked box still records: {p}");
    let after = p["id"].as_str().unwrap();
    // Room 2 calls again every second or so; each call is refused and nothing crosses.
    eventually(
        Duration::from_secs(15),
        "room 2's next call to be refused",
        || async {
            let (_, s) = r1.get("/api/v1/status").await;
            (s["peers"]["refused"].as_u64().unwrap() > refused).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        patient(r1, after).await.is_none(),
        "a patient of the revoked appliance reached room 1"
    );
    let (_, s) = r1.get("/api/v1/status").await;
    assert_eq!(s["peers"]["rooms"], json!({}), "no link: {s}");
}

/// The station page as `cookie` sees it.
async fn station(http: &reqwest::Client, base: &str, cookie: &str) -> String {
    let res = http
        .get(format!("{base}/station"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// Room `room`'s tile in a station page, and whether it shows online.
fn tile(page: &str, room: &str) -> Option<(String, bool)> {
    let start = page.find(&format!("id=\"tile-{room}\""))?;
    let open = page[..start].rfind("<section")?;
    let end = page[start..]
        .find("</section>")
        .map_or(page.len(), |e| start + e);
    let html = page[open..end].to_owned();
    let online = html.contains("data-online=\"true\"");
    Some((html, online))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_peer_shows_offline_on_the_station_and_returns_when_it_restarts() {
    let (mut site, _) = austin_pair(false, true).await;
    site.peered(0, 1).await;
    let (id, _) = start_session(&site.rooms[1].http, "Killed", "baseline").await;
    let base = site.rooms[0].http.base.clone();
    let (nurse, pin) = (STAFF[0].0, STAFF[0].3);
    let (http, cookie, _) = screen_sign_in(&base, nurse, pin).await;
    // Room 2 infusing, its numerics on room 1's station.
    eventually(
        Duration::from_secs(15),
        "room 2's tile live on room 1's station",
        || async {
            let page = station(&http, &base, &cookie).await;
            let (html, online) = tile(&page, "2")?;
            (online && html.contains("checked in") && !html.contains("class=\"hr\">–"))
                .then_some(())
        },
    )
    .await;

    site.rooms[1].kill();
    let killed = Instant::now();
    let html = eventually(
        Duration::from_secs(5),
        "room 2's tile to show offline within 5 s of its appliance being killed",
        || async {
            let page = station(&http, &base, &cookie).await;
            tile(&page, "2").filter(|(_, online)| !online).map(|t| t.0)
        },
    )
    .await;
    assert!(html.contains("offline since"), "{html}");
    eprintln!(
        "offline on the station {:?} after the kill",
        killed.elapsed()
    );
    // Room 1's own tile goes on.
    let page = station(&http, &base, &cookie).await;
    assert!(tile(&page, "1").is_some_and(|t| t.1), "room 1 stays online");

    site.rooms[1].restart();
    eventually(
        Duration::from_secs(30),
        "room 2's tile to come back once its appliance restarted",
        || async {
            let page = station(&http, &base, &cookie).await;
            tile(&page, "2").filter(|(_, online)| *online).map(|_| ())
        },
    )
    .await;
    // The session it was recording resumed.
    let (st, s) = site.rooms[1]
        .http
        .get(&format!("/api/v1/sessions/{id}"))
        .await;
    assert_eq!(st, 200, "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_sync_under_loss_and_a_flapping_link_loses_and_duplicates_nothing() {
    let ports = PeerSite::ports(2);
    // Room 2 reaches room 1 only through a relay; room 1 calls nobody, so every byte between
    // them crosses the relay.
    let link = Relay::start_with_seed(
        "127.0.0.1:0".parse().unwrap(),
        addr(ports[0]).parse().unwrap(),
        23,
    )
    .await
    .unwrap();
    let site = PeerSite::start(
        true,
        false,
        &ports,
        vec![
            room("austin", "1", &[], SIM),
            room("austin", "2", &[link.local_addr().to_string()], SIM),
        ],
    )
    .await;
    site.peered(1, 0).await;
    let rooms = [&site.rooms[0].http, &site.rooms[1].http];
    let lossy = Faults {
        loss_pct: 20.0,
        jitter: Duration::from_millis(50),
        ..Faults::OK
    };
    let faults = "between the rooms: 20 % loss with 50 ms jitter for 4 s, then cut for 4 s, repeating; the cloud link clean";
    link.run_timeline(
        Timeline::new(
            vec![
                (Duration::ZERO, lossy),
                (Duration::from_secs(4), Faults::CUT),
            ],
            Some(Duration::from_secs(8)),
        )
        .unwrap(),
    );
    // For 24 s, a patient registered each second, alternately in each room, and a medication
    // added to the previous one in the other room: every change made once, by one room.
    let mut made: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut changes = 0_u64;
    let mut previous: Option<String> = None;
    for i in 0..24 {
        let (here, there) = (rooms[i % 2], rooms[(i + 1) % 2]);
        let (st, p) = here
            .post("/api/v1/patients", &patient_body(&format!("Flap{i}")))
            .await;
        assert_eq!(st, 201, "{p}");
        let id = p["id"].as_str().unwrap().to_owned();
        made.insert(id.clone(), Vec::new());
        changes += 1;
        if let Some(prev) = previous.replace(id) {
            // The other room may not have it yet; it adds the medication when it does.
            let med = format!("med-{i}");
            let edited = tokio::time::timeout(Duration::from_secs(8), async {
                loop {
                    let (st, _) = there
                        .patch(
                            &format!("/api/v1/patients/{prev}"),
                            &json!({"add_medications": [med]}),
                        )
                        .await;
                    if st == 200 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            if edited.is_ok() {
                made.get_mut(&prev).unwrap().push(med);
                changes += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    link.stop_timeline();
    let stats = link.stats();
    assert!(
        stats.to_upstream.dropped_cut + stats.to_client.dropped_cut > 0
            && stats.to_upstream.dropped_loss + stats.to_client.dropped_loss > 0,
        "the link really flapped and lost: {stats:?}"
    );
    link.set(Faults::OK).unwrap();
    let repaired = Instant::now();

    // Every change, once, in both rooms and the cloud.
    let holds_all = |p: &Value, meds: &[String]| {
        let have = medications(p);
        meds.iter().all(|m| have.contains(m))
    };
    for (name, edge) in [
        ("room 1", rooms[0]),
        ("room 2", rooms[1]),
        ("the cloud", site.cloud()),
    ] {
        for (id, meds) in &made {
            eventually(
                Duration::from_secs(90),
                &format!("{name} to hold patient {id} with every edit"),
                || async {
                    patient(edge, id)
                        .await
                        .filter(|p| holds_all(p, meds))
                        .map(|_| ())
                },
            )
            .await;
        }
    }
    let took = repaired.elapsed();
    let mut tally = Tally {
        recorded: changes,
        ..Tally::default()
    };
    let mut everywhere = 0_u64;
    for (id, meds) in &made {
        let mut held_everywhere = true;
        for edge in [rooms[0], rooms[1], site.cloud()] {
            let p = patient(edge, id).await.unwrap_or(Value::Null);
            let have = medications(&p);
            for m in meds {
                match have.iter().filter(|h| *h == m).count() {
                    0 => held_everywhere = false,
                    1 => {}
                    n => tally.duplicated += n as u64 - 1,
                }
            }
            held_everywhere &= p != Value::Null;
        }
        if held_everywhere {
            everywhere += 1 + meds.len() as u64;
        }
    }
    tally.in_cloud = everywhere;
    tally.lost = changes - everywhere;
    report(
        "Peer sync: two rooms of a site, the link between them lossy and flapping (short)",
        &format!(
            "2 rooms, {} patients registered and {} edits, alternating rooms, over 24 s (counted in changes, not samples)",
            made.len(),
            changes as usize - made.len()
        ),
        faults,
        tally,
        took,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_that_know_no_addresses_find_each_other_by_mdns_on_the_loopback_interface() {
    // mDNS only on the loopback interface: nothing of the test leaves this machine.
    let mdns = "mdns = true\nmdns_interface = \"lo\"\n";
    let ports = PeerSite::ports(2);
    let site = PeerSite::start(
        false,
        false,
        &ports,
        vec![
            room("austin", "1", &[], &format!("{mdns}{SIM}")),
            room("austin", "2", &[], &format!("{mdns}{SIM}")),
        ],
    )
    .await;
    site.peered(0, 1).await;
    site.peered(1, 0).await;
    registered_and_found(
        (&site.rooms[1].http, &site.rooms[0].http),
        "Mdns",
        Duration::from_secs(10),
        "room 1 to find room 2's patient",
    )
    .await;
}

/// Connects to `port` as appliance `site`/`room` of the CA in `dir/pki`.
async fn connect_as(
    dir: &std::path::Path,
    site: &str,
    room: &str,
    port: u16,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let ca = vigil_cloud::pki::Ca::load(&dir.join("pki")).unwrap();
    let cert = ca.issue_appliance(&site.into(), &room.into()).unwrap();
    let files = vigil_edge::sync::CloudSettings {
        addr: None,
        addrs: Vec::new(),
        server_name: "localhost".into(),
        ca_cert: dir.join("pki/ca.pem"),
        cert: cert.cert_path,
        key: cert.key_path,
    };
    let (_, client) = vigil_edge::peer::peer_configs(&files).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint
        .connect_with(client, addr(port).parse().unwrap(), "vigil-peer")
        .unwrap()
        .await
}

/// Why the appliance closed a connection: (code, reason).
async fn closed_with(conn: &quinn::Connection) -> (u64, String) {
    match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => (
            c.error_code.into_inner(),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        other => panic!("expected the appliance to close the connection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_frames_from_a_peer_close_only_its_link_and_store_nothing() {
    use vigil_shared::wire::{DocKind, Message, RejectCode, encode_message};
    let (site, ports) = austin_pair(false, true).await;
    site.peered(0, 1).await;
    let dir = site.dir.path();

    // An acknowledgement for someone not on room 1's staff list, then for a nurse of the site
    // but a session not in progress there: each refused, saying why, and the link stays.
    let conn = connect_as(dir, "austin", "3", ports[0]).await.unwrap();
    for (by, refusal) in [
        (
            "mallory",
            "mallory is not a nurse or clinician of site austin",
        ),
        ("nurse-ana", "is not in progress in room 1"),
    ] {
        let request = vigil_edge::peer::Request::Acknowledge {
            session_id: "7d1e0c3a-0000-4000-8000-000000000002".into(),
            advisory_id: "a1".into(),
            by: by.into(),
        };
        let body = serde_json::to_vec(&request).unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[1]).await.unwrap();
        send.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        send.write_all(&body).await.unwrap();
        send.finish().unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(4096))
            .await
            .unwrap()
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply[4..]).unwrap();
        let why = reply["Refused"].as_str().unwrap_or_default();
        assert!(why.contains(refusal), "{by}: {reply}");
    }
    assert!(
        conn.close_reason().is_none(),
        "a refused request keeps the link"
    );
    conn.close(0_u32.into(), b"done");

    // A live frame that claims 4 GiB.
    let conn = connect_as(dir, "austin", "3", ports[0]).await.unwrap();
    let mut live = conn.open_uni().await.unwrap();
    live.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let (code, why) = closed_with(&conn).await;
    assert_eq!(code, u64::from(RejectCode::Malformed.code()), "{why}");
    assert!(why.contains("over the"), "{why}");

    // A live frame that is not JSON.
    let conn = connect_as(dir, "austin", "3", ports[0]).await.unwrap();
    let mut live = conn.open_uni().await.unwrap();
    live.write_all(&[0, 0, 0, 4, b'{', b'{', b'{', b'{'])
        .await
        .unwrap();
    let (code, why) = closed_with(&conn).await;
    assert_eq!(code, u64::from(RejectCode::Malformed.code()), "{why}");

    // A session document offered by a peer: sessions are their room's.
    let conn = connect_as(dir, "austin", "3", ports[0]).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let offer = Message::Sync {
        seq: 1,
        doc_id: "7d1e0c3a-0000-4000-8000-000000000001".into(),
        kind: DocKind::Session,
        message: Vec::new(),
    };
    send.write_all(&[0]).await.unwrap();
    send.write_all(&encode_message(&offer).unwrap())
        .await
        .unwrap();
    let (code, why) = closed_with(&conn).await;
    assert_eq!(code, u64::from(RejectCode::Forbidden.code()), "{why}");
    assert!(
        why.contains("peers do not exchange session documents"),
        "{why}"
    );

    // A stream of an unknown kind.
    let conn = connect_as(dir, "austin", "3", ports[0]).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[9, 1, 2, 3]).await.unwrap();
    let (code, why) = closed_with(&conn).await;
    assert_eq!(code, u64::from(RejectCode::Malformed.code()), "{why}");

    // Room 1 stored none of it, and its link with room 2 carries on.
    let (st, _) = site.rooms[0]
        .http
        .get("/api/v1/sessions/7d1e0c3a-0000-4000-8000-000000000001")
        .await;
    assert_eq!(st, 404);
    registered_and_found(
        (&site.rooms[1].http, &site.rooms[0].http),
        "After",
        Duration::from_secs(10),
        "room 1 to still sync with room 2",
    )
    .await;
}
