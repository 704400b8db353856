//! The dashboard in a real headless Chromium, driven over the W3C WebDriver protocol by
//! `chromedriver`, against the real `vigil-cloud` binary: sign-in and sign-out, the overview
//! with both sites, a session's charts and ECG zoom, filters and paging, a CSV download, and a
//! regional manager refused another region's session; the fleet page with two appliances
//! flagged, and a regional manager seeing only their region's. Screenshots of each step are saved
//! under `target/screenshots/`.
//!
//! The cloud's database is filled before the cloud starts, through `CloudStore` (as the sync
//! server fills it), with sessions from the deterministic simulator; users are created with
//! `vigil-cloud user add`. Chromium and chromedriver must be installed (`.ci/run` installs
//! Debian's `chromium` and `chromium-driver`): without them this test fails, it does not skip.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::webdriver::Browser;
use support::{bin, clinic_ca, free_udp_port, start_cloud, write_cloud_config};
use vigil_cloud::store::{CloudStore, Connected};
use vigil_hardware::sim::{PatientParams, Scenario, VirtualPatient};
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::{
    AdvisoryRecord, DoseAction, DoseEvent, Protocol, SessionDoc, SessionMeta, SessionState,
};
use vigil_shared::vitals::Channel;
use vigil_shared::wire::DocKind;

const PASSWORD: &str = "browser test password";
/// Austin sessions: more than one page of the list (25).
const AUSTIN_SESSIONS: usize = 30;
const FLORIDA_SESSIONS: usize = 4;

fn now_us() -> i64 {
    vigil_cloud::clock::now_us()
}

/// A session of `minutes` from the simulator (hypertension scenario, so the blood pressure
/// climbs), with its dose timeline and an advisory; ECG only when asked.
fn simulated_session(
    id: &str,
    site: &str,
    room: &str,
    start: i64,
    minutes: i64,
    ecg: bool,
    seed: u64,
) -> SessionDoc {
    let end = start + minutes * 60_000_000;
    let meta = SessionMeta {
        id: id.into(),
        site: site.into(),
        room: room.into(),
        patient_id: format!("patient-{id}"),
        protocol: Protocol {
            drug: "ketamine".into(),
            route: "iv".into(),
            dose_mg_per_kg: 0.5,
            weight_kg: 72.0,
            planned_minutes: minutes as u64,
        },
        state: SessionState::Completed,
        created_us: start,
        started_us: Some(start),
        ended_us: Some(end),
        dose_events: vec![
            DoseEvent {
                id: "d1".into(),
                at_us: start + 60_000_000,
                action: DoseAction::Start,
                rate_mg_per_h: Some(90.0),
                by: "nurse".into(),
            },
            DoseEvent {
                id: "d2".into(),
                at_us: end - 120_000_000,
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
            detail: "systolic 184 on two readings".into(),
            raised_us: start + minutes * 60_000_000 / 2,
            acknowledged_us: Some(start + minutes * 60_000_000 / 2 + 90_000_000),
            acknowledged_by: Some("nurse".into()),
            cleared_us: None,
        }],
        observations: vec![],
        scores: vec![],
        discharge: None,
    };
    let mut doc = SessionDoc::create(&meta).expect("create session");
    let mut patient = VirtualPatient::new(PatientParams::new(seed, Scenario::Hypertension, start))
        .expect("patient");
    let channels: &[Channel] = if ecg {
        &[
            Channel::Hr,
            Channel::Spo2,
            Channel::Pulse,
            Channel::Nibp,
            Channel::Ecg,
        ]
    } else {
        &[Channel::Hr, Channel::Spo2, Channel::Nibp]
    };
    for &channel in channels {
        let samples = patient.channel_between(channel, start, end);
        let mut t = start;
        while t < end {
            let part: Vec<_> = samples
                .iter()
                .filter(|s| s.t_us >= t && s.t_us < t + 10_000_000)
                .copied()
                .collect();
            if !part.is_empty() {
                let bytes = Chunk {
                    channel,
                    samples: part,
                }
                .encode()
                .expect("encode");
                doc.append_chunk(channel, bytes).expect("append");
            }
            t += 10_000_000;
        }
    }
    doc.automerge().commit();
    doc
}

/// Fills the cloud's database: Austin (region central) and Florida (region southeast).
fn fill(db: &Path) -> (String, String) {
    let store = CloudStore::open(db).expect("open the cloud database");
    let day = 86_400_000_000;
    let base = now_us() - 3 * day;
    let ecg_session = "austin-1-ecg".to_owned();
    let mut doc = simulated_session(&ecg_session, "austin", "1", base, 20, true, 7);
    store
        .commit_document(
            &ecg_session,
            DocKind::Session,
            "austin",
            doc.automerge(),
            now_us(),
        )
        .expect("commit");
    for i in 1..AUSTIN_SESSIONS {
        let id = format!("austin-{i:02}");
        let room = if i % 2 == 0 { "1" } else { "2" };
        let mut doc = simulated_session(
            &id,
            "austin",
            room,
            base + i as i64 * 3_600_000_000,
            5,
            false,
            i as u64,
        );
        store
            .commit_document(&id, DocKind::Session, "austin", doc.automerge(), now_us())
            .expect("commit");
    }
    let mut florida_session = String::new();
    for i in 0..FLORIDA_SESSIONS {
        let id = format!("florida-{i:02}");
        let mut doc = simulated_session(
            &id,
            "florida",
            "1",
            base + i as i64 * 3_600_000_000,
            5,
            false,
            100 + i as u64,
        );
        store
            .commit_document(&id, DocKind::Session, "florida", doc.automerge(), now_us())
            .expect("commit");
        florida_session = id;
    }
    fleet(&store);
    (ecg_session, florida_session)
}

/// The appliances as the sync server records them: austin 1 healthy, austin 2 with its disk
/// nearly full, florida 1 a protocol version behind.
fn fleet(store: &CloudStore) {
    let now = now_us();
    let year = 365 * 86_400_000_000;
    let report = |disk_used: u64| {
        serde_json::json!({
            "time_us": now, "uptime_s": 7200, "last_restart": "started after a clean shutdown",
            "disk_used_bytes": disk_used, "disk_total_bytes": 100, "db_bytes": 10,
            "retention": "ok", "monitors": [{"name": "hr-strap", "state": "connected"}],
            "cert_not_after_us": now + year
        })
        .to_string()
    };
    for (site, room, protocol, disk) in [
        ("austin", "1", 2, Some(40)),
        ("austin", "2", 2, Some(92)),
        ("florida", "1", 1, None),
    ] {
        let connected = Connected {
            protocol,
            cert_not_after_us: Some(now + year),
            cert_serial: "0a0b0c",
            ..Connected::new(site, room, "vigil-edge 0.1.0", "cloud-a")
        };
        store
            .appliance_connected(&connected, now)
            .expect("connected");
        if let Some(used) = disk {
            store
                .appliance_reported(site, room, &report(used), 200_000, now)
                .expect("reported");
        }
    }
}

fn add_user(config: &Path, name: &str, args: &[&str]) {
    let mut child = Command::new(bin("vigil-cloud"))
        .args(["user", "add", name, "--config", config.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run vigil-cloud user add");
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "user add {name} failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("user added"));
}

/// Signs in through the form and waits for the signed-in frame or the refusal.
async fn sign_in(b: &Browser, site: &str, user: &str, password: &str) {
    b.goto(&format!("{site}/login")).await;
    b.type_into("#username", user).await;
    b.type_into("#password", password).await;
    b.click("#signin").await;
    b.wait_for("#whoami, #login-error").await;
}

/// Waits for a finished download in `dir`.
async fn downloaded(dir: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(f) = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "csv"))
        {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "no CSV downloaded into {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    clinic_ca(dir.path());
    let config = write_cloud_config(dir.path(), free_udp_port());
    std::fs::create_dir_all(dir.path().join("cloud-data")).unwrap();
    let (ecg_session, florida_session) = fill(&dir.path().join("cloud-data/vigil-cloud.db"));
    add_user(&config, "admin", &["--role", "admin"]);
    add_user(
        &config,
        "rm-central",
        &["--role", "regional-manager", "--region", "central"],
    );
    let (_cloud, api) = start_cloud(&config);
    let site = api.base.clone();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let b = Browser::start(&downloads, &dir.path().join("chromium-profile")).await;

    // Signed out: every page sends the browser to the sign-in form.
    b.goto(&format!("{site}/sessions")).await;
    assert!(b.url().await.contains("/login?next="), "{}", b.url().await);
    b.screenshot("01-login").await;

    // A wrong password is refused with the generic message.
    sign_in(&b, &site, "admin", "not the password").await;
    assert!(
        b.text("#login-error")
            .await
            .contains("wrong user name or password")
    );

    // The admin's overview shows both sites.
    sign_in(&b, &site, "admin", PASSWORD).await;
    assert_eq!(b.url().await, format!("{site}/"));
    let html = b.source().await;
    assert!(html.contains("id=\"site-austin\"") && html.contains("id=\"site-florida\""));
    assert!(b.text("#site-austin").await.contains("Austin, TX"));
    assert_eq!(
        b.find_all("tr.room").await.len(),
        4,
        "two rooms at each site"
    );
    b.screenshot("02-overview").await;

    // Sessions: paging, then a filter.
    b.click("nav a[href='/sessions']").await;
    let total = AUSTIN_SESSIONS + FLORIDA_SESSIONS;
    assert!(
        b.text("#total")
            .await
            .starts_with(&format!("{total} sessions · page 1 of 2"))
    );
    assert_eq!(b.find_all("tr.session-row").await.len(), 25);
    b.click("#next").await;
    b.wait_url("page=2").await;
    // Each session in its own site's time: Austin on Central, Florida on Eastern time.
    let rows = b.text("#sessions tbody").await;
    let (mut austin, mut florida) = (0, 0);
    for line in rows.lines() {
        if line.contains("austin") {
            austin += 1;
            assert!(line.contains(" CST") || line.contains(" CDT"), "{line}");
        }
        if line.contains("florida") {
            florida += 1;
            assert!(line.contains(" EST") || line.contains(" EDT"), "{line}");
        }
    }
    assert!(
        austin > 0 && florida > 0,
        "both sites on the second page: {rows}"
    );
    b.screenshot("02b-sessions-local-times").await;
    assert!(b.text("#total").await.contains("page 2 of 2"));
    assert_eq!(b.find_all("tr.session-row").await.len(), total - 25);
    b.click("#f-site option[value='florida']").await;
    b.click("#apply").await;
    b.wait_url("site=florida").await;
    assert!(
        b.text("#total")
            .await
            .starts_with(&format!("{FLORIDA_SESSIONS} sessions"))
    );
    let rows = b.text("#sessions tbody").await;
    assert!(
        rows.contains("florida") && !rows.contains("austin"),
        "{rows}"
    );
    b.screenshot("03-sessions-filtered").await;

    // The CSV of the filtered list downloads with one line per session.
    b.click("#csv").await;
    let csv = std::fs::read_to_string(downloaded(&downloads).await).unwrap();
    assert!(csv.starts_with("id,site,room,patient_id,state"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + FLORIDA_SESSIONS, "{csv}");
    assert!(
        csv.lines().skip(1).all(|l| l.contains(",florida,")),
        "{csv}"
    );

    // A session's charts, advisories marked, and the ECG zoom.
    b.goto(&format!("{site}/sessions/{ecg_session}")).await;
    assert_eq!(
        b.find_all("svg.chart").await.len(),
        4,
        "HR, SpO2, BP and ECG charts"
    );
    assert!(
        !b.find_all("svg.chart g.marker").await.is_empty(),
        "the advisory is marked"
    );
    assert!(!b.find_all("svg.chart path.series").await.is_empty());
    assert!(b.source().await.contains("bp_high"));
    b.screenshot("04-session").await;
    b.click("#ecg-zoom-2").await;
    b.wait_url("ecg_span=2").await;
    assert!(b.source().await.contains("0 s to 2 s of"));
    b.click("#ecg-next").await;
    b.wait_url("ecg_from=2").await;
    assert!(b.source().await.contains("2 s to 4 s of"));
    b.screenshot("05-ecg-zoomed").await;

    // The fleet: every appliance, two of them flagged (a full disk, an old protocol), and the
    // filter to those alone.
    b.click("nav a[href='/fleet']").await;
    b.wait_for("#fleet").await;
    assert_eq!(b.find_all("#fleet tbody tr").await.len(), 3);
    assert_eq!(
        b.find_all("#fleet tr[data-attention='true']").await.len(),
        2
    );
    let flagged = b.text("#fleet").await;
    assert!(
        flagged.contains("disk 92 % full") && flagged.contains("speaks sync protocol 1"),
        "{flagged}"
    );
    assert!(flagged.contains("hr-strap: connected"), "{flagged}");
    b.screenshot("05b-fleet").await;
    b.click("#fleet-attention").await;
    b.wait_url("attention=1").await;
    assert_eq!(b.find_all("#fleet tbody tr").await.len(), 2);
    b.screenshot("05c-fleet-needs-attention").await;

    // Sign out: the session is gone.
    b.click("#logout").await;
    b.wait_url("/login").await;
    b.goto(&format!("{site}/")).await;
    b.wait_url("/login?next=").await;

    // A regional manager sees their region and is refused the other region's session.
    sign_in(&b, &site, "rm-central", PASSWORD).await;
    let html = b.source().await;
    assert!(html.contains("id=\"site-austin\"") && !html.contains("id=\"site-florida\""));
    b.goto(&format!("{site}/sessions/{florida_session}")).await;
    let html = b.source().await;
    assert!(html.contains("Not Found"), "{html}");
    assert!(!html.contains(&format!("patient-{florida_session}")));
    b.screenshot("06-regional-manager-refused").await;
    b.goto(&format!("{site}/sessions?site=florida")).await;
    assert!(b.text("#total").await.starts_with("0 sessions"));
    // Their region's appliances only.
    b.goto(&format!("{site}/fleet")).await;
    b.wait_for("#fleet").await;
    let rooms = b.find_all("#fleet tbody tr").await;
    assert_eq!(rooms.len(), 2, "austin's two rooms");
    assert!(!b.text("#fleet").await.contains("florida"));
}
