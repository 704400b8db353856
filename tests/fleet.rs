//! The appliance fleet end to end, with real `vigil-cloud` and `vigil-edge` processes over real
//! QUIC on loopback: an appliance with no certificate enrols with a one-time code and syncs a
//! session (the code works once; a code naming another CA is refused before anything is
//! sent); certificates valid for a minute renew again and again while a session records, with
//! nothing lost and the superseded certificate refused after its grace period; an appliance
//! whose certificate ran out while it was offline says so and how to re-enrol; an appliance
//! one protocol version behind keeps syncing and the fleet API flags it, with a skewed clock;
//! a cloud that retired that version tells it to update, and a real appliance of the previous
//! release says so on its status API.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::peer::{connect_with, patient};
use support::*;
use vigil_shared::fleet::EnrolCode;
use vigil_shared::wire::Message;

const SIM: &str = "chunk_period_s = 10\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = 9\necg_hz = 250\ntime_factor = 60.0\n";

/// Real time: a session that records across several renewals without piling up hours of ECG.
const SIM_REAL_TIME: &str = "chunk_period_s = 5\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = 4\necg_hz = 250\ntime_factor = 1.0\n";

/// `cloud.toml` of a cloud that issues certificates (`[pki] ca_dir`), with more `[pki]` lines.
fn issuing_cloud_config(dir: &Path, port: u16, pki_extra: &str) -> PathBuf {
    let path = write_cloud_config(dir, port);
    let text = std::fs::read_to_string(&path).unwrap();
    let crl = format!("crl = \"{}/crl.pem\"\n", dir.join("pki").display());
    assert!(text.contains(&crl), "{text}");
    let text = text.replace(
        &crl,
        &format!(
            "{crl}ca_dir = \"{}\"\n{pki_extra}",
            dir.join("pki").display()
        ),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An appliance's configuration as the package installs it: no site, room or `[cloud]` yet.
fn fresh_edge_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("edge-{name}.toml"));
    let text = format!(
        "site = \"\"\nroom = \"\"\ndata_dir = \"{}\"\nhttp_bind = \"127.0.0.1:0\"\n{extra}",
        dir.join(format!("data-{name}")).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `vigil-cloud enrol`: the code it printed, or its error.
fn make_code(cloud_config: &Path, site: &str, room: &str, replace: bool) -> Result<String, String> {
    let mut args = vec![
        "enrol",
        "--config",
        cloud_config.to_str().unwrap(),
        "--site",
        site,
        "--room",
        room,
    ];
    if replace {
        args.push("--replace");
    }
    let out = Command::new(bin("vigil-cloud"))
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    for name in [
        "cloud sync: 127.0.0.1:",
        "ca fingerprint: sha256:",
        "enrolment expires: ",
    ] {
        assert!(stdout.contains(name), "{name} missing from {stdout}");
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("enrolment code: "))
        .map(str::to_owned)
        .ok_or(stdout)
}

/// `vigil-edge enrol CODE`: Ok(stdout) or Err(stderr).
fn enrol(code: &str, config: &Path) -> Result<String, String> {
    let out = Command::new(bin("vigil-edge"))
        .args(["enrol", code, "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

async fn record_session(edge: &Http, wall: Duration) -> String {
    let id = begin_session(edge, "Fleet", "baseline").await;
    tokio::time::sleep(wall).await;
    let (st, stopped) = edge
        .post(&format!("/api/v1/sessions/{id}/stop"), &json!({}))
        .await;
    assert_eq!(st, 200, "{stopped}");
    id
}

async fn fleet(cloud: &Http, query: &str) -> Vec<Value> {
    let (st, list) = cloud.get(&format!("/api/v1/appliances{query}")).await;
    assert_eq!(st, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

fn find<'a>(list: &'a [Value], site: &str, room: &str) -> Option<&'a Value> {
    list.iter().find(|a| a["site"] == site && a["room"] == room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_appliance_enrols_with_a_code_and_syncs_and_the_code_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let _ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let cloud_config = issuing_cloud_config(dir.path(), port, "");
    let (_cloud, cloud) = start_cloud(&cloud_config);

    // A mistyped code is caught on the appliance, before anything is sent.
    let code = make_code(&cloud_config, "austin", "1", false).unwrap();
    let config = fresh_edge_config(dir.path(), "a", SIM);
    let typo = code.replacen(&code[..1], if &code[..1] == "7" { "8" } else { "7" }, 1);
    let err = enrol(&typo, &config).unwrap_err();
    assert!(err.contains("mistyped"), "{err}");
    // A code naming another CA: the appliance will not talk to this cloud, and the code
    // (never sent) still works.
    let mut other_ca = EnrolCode::parse(&code).unwrap();
    other_ca.fingerprint = vigil_shared::fleet::fingerprint(&[9; 32]);
    let err = enrol(&other_ca.to_string(), &config).unwrap_err();
    assert!(
        err.contains("did not prove it is the one the code names"),
        "{err}"
    );

    let out = enrol(&code, &config).unwrap();
    assert!(
        out.contains("enrolled site: austin") && out.contains("enrolled room: 1"),
        "{out}"
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("site = \"austin\"") && written.contains("[cloud]"),
        "{written}"
    );
    let credentials = dir.path().join("data-a/appliance.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&credentials).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key is the service's alone");
    let key = std::fs::read_to_string(&credentials).unwrap();
    assert!(key.contains("PRIVATE KEY") && key.contains("CERTIFICATE"));

    // The same code again, on another box: refused, with the reason on both sides.
    let second = fresh_edge_config(dir.path(), "b", SIM);
    let err = enrol(&code, &second).unwrap_err();
    assert!(err.contains("already used"), "{err}");
    // The room has an active appliance now: no new code without --replace.
    let err = make_code(&cloud_config, "austin", "1", false).unwrap_err();
    assert!(
        err.contains("already has an active appliance") && err.contains("--replace"),
        "{err}"
    );
    let err = make_code(&cloud_config, "austin", "9", false).unwrap_err();
    assert!(err.contains("not among austin's rooms"), "{err}");

    // The enrolled appliance records and syncs.
    let (_edge, edge) = start_edge(&config);
    let id = record_session(&edge, Duration::from_secs(3)).await;
    converged(&edge, &cloud, &id, 1_000).await;
    let list = fleet(&cloud, "").await;
    let me = find(&list, "austin", "1").expect("in the fleet");
    assert_eq!(me["protocol"], 2, "{me}");
    assert!(me["cert_not_after_us"].as_i64().unwrap() > 0, "{me}");
    assert!(
        me["software"].as_str().unwrap().starts_with("vigil-edge"),
        "{me}"
    );

    // --replace: a new box in the room; the old one's certificate stops working once the
    // new one enrols.
    let code = make_code(&cloud_config, "austin", "1", true).unwrap();
    enrol(&code, &second).unwrap();
    let (_new, new) = start_edge(&second);
    eventually(
        Duration::from_secs(30),
        "the old appliance to be refused",
        || async {
            let (_, st) = edge.get("/api/v1/status").await;
            let error = st["sync"]["last_error"].as_str().unwrap_or("").to_owned();
            error.contains("was revoked").then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the new appliance to sync",
        || async {
            let (_, st) = new.get("/api/v1/status").await;
            (st["sync"]["connected"] == true).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_valid_for_a_minute_renew_again_and_again_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let _ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let cloud_config = issuing_cloud_config(
        dir.path(),
        port,
        "appliance_validity_s = 60\nrenewal_grace_s = 2\n",
    );
    let (_cloud, cloud) = start_cloud(&cloud_config);
    let config = fresh_edge_config(dir.path(), "r", SIM_REAL_TIME);
    enrol(
        &make_code(&cloud_config, "austin", "1", false).unwrap(),
        &config,
    )
    .unwrap();
    let first = dir.path().join("first.pem");
    std::fs::copy(dir.path().join("data-r/appliance.pem"), &first).unwrap();
    let (_edge, edge) = start_edge(&config);

    let id = begin_session(&edge, "Renew", "baseline").await;

    // Each renewal moves the certificate's end; three of them, the session recording on.
    let mut ends: Vec<i64> = Vec::new();
    while ends.len() < 4 {
        let end = eventually(Duration::from_secs(90), "a renewal", || async {
            let (_, st) = edge.get("/api/v1/status").await;
            st["sync"]["cert_not_after_us"]
                .as_i64()
                .filter(|end| ends.last() != Some(end))
        })
        .await;
        ends.push(end);
        if ends.len() == 2 {
            // The first certificate, superseded: refused once its grace period is over
            // (long before it expires).
            tokio::time::sleep(Duration::from_secs(3)).await;
            let hello = vigil_shared::wire::hello("old");
            let err = connect_with(dir.path(), (&first, &first), cloud_addr(port), None, &hello)
                .await
                .err()
                .expect("refused");
            // Refused by the cloud's record of it, or (once the cloud's sweep has put it on
            // the CRL) at the handshake.
            assert!(
                err.contains("was renewed and stopped working") || err.contains("Revoked"),
                "{err}"
            );
        }
    }
    assert!(ends.windows(2).all(|w| w[1] > w[0]), "{ends:?}");
    let (st, stopped) = edge
        .post(&format!("/api/v1/sessions/{id}/stop"), &json!({}))
        .await;
    assert_eq!(st, 200, "{stopped}");
    converged(&edge, &cloud, &id, 1_000).await;
    let (_, status) = edge.get("/api/v1/status").await;
    assert!(
        status["sync"]["cert_renewed_us"].as_i64().is_some(),
        "{status}"
    );
}

fn cloud_addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_whose_certificate_ran_out_offline_says_so_and_how_to_re_enrol() {
    let dir = tempfile::tempdir().unwrap();
    let _ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let cloud_config = issuing_cloud_config(dir.path(), port, "appliance_validity_s = 5\n");
    let (_cloud, cloud) = start_cloud(&cloud_config);
    let config = fresh_edge_config(dir.path(), "x", SIM);
    enrol(
        &make_code(&cloud_config, "florida", "2", false).unwrap(),
        &config,
    )
    .unwrap();
    // The box stays off past its certificate's end.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (_edge, edge) = start_edge(&config);
    let error = eventually(
        Duration::from_secs(30),
        "the expiry to be reported",
        || async {
            let (_, st) = edge.get("/api/v1/status").await;
            st["sync"]["last_error"]
                .as_str()
                .filter(|e| e.contains("certificate expired"))
                .map(str::to_owned)
        },
    )
    .await;
    assert!(
        error.contains("vigil-cloud enrol --site florida --room 2 --replace")
            && error.contains("vigil-edge enrol CODE")
            && error.contains("recording continues"),
        "{error}"
    );
    // And it still records.
    let (st, _) = edge
        .post("/api/v1/patients", &patient_body("Offline"))
        .await;
    assert_eq!(st, 201);
    // The cloud never saw it connect.
    assert!(find(&fleet(&cloud, "").await, "florida", "2").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_a_version_behind_keeps_syncing_and_the_fleet_flags_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let port = free_udp_port();
    let cloud_config = write_cloud_config(dir.path(), port);
    let (mut cloud_proc, cloud) = start_cloud(&cloud_config);

    // A current appliance whose clock is 30 s fast.
    let extra = format!(
        "clock_offset_s = 30\n{SIM}{}",
        cloud_section(&ca, dir.path(), port, "austin", "2")
    );
    let (_edge, _) = start_edge(&write_edge_config(dir.path(), "austin", "2", &extra));

    // Last version's appliance: protocol 1 only, its frames unchanged; it syncs a patient.
    let old = ca.issue_appliance(&"florida".into(), &"1".into()).unwrap();
    let v1 = Message::Hello {
        min_version: 1,
        max_version: 1,
        software: "vigil-edge 0.0.9".into(),
    };
    let files = (old.cert_path.as_path(), old.key_path.as_path());
    let (mut peer, version) = connect_with(dir.path(), files, cloud_addr(port), None, &v1)
        .await
        .unwrap();
    assert_eq!(version, 1);
    let id = "f1041da0-0000-4000-8000-00000000000a";
    let mut doc = patient(id, "florida");
    let heads = peer.upload(id, doc.automerge()).await.unwrap();
    assert_eq!(heads, doc.automerge().get_heads(), "confirmed durable");
    let (st, stored) = cloud.get(&format!("/api/v1/patients/{id}")).await;
    assert_eq!(st, 200, "{stored}");

    let list = eventually(Duration::from_secs(60), "both in the fleet", || async {
        let list = fleet(&cloud, "?attention=true").await;
        let skewed = find(&list, "austin", "2")
            .is_some_and(|a| a["attention"].to_string().contains("clock"));
        (skewed && find(&list, "florida", "1").is_some()).then_some(list)
    })
    .await;
    let behind = find(&list, "florida", "1").unwrap();
    assert_eq!(behind["protocol"], 1);
    assert!(
        behind["attention"][0]
            .as_str()
            .unwrap()
            .contains("speaks sync protocol 1"),
        "{behind}"
    );
    let fast = find(&list, "austin", "2").unwrap();
    let skew = fast["clock_skew_s"].as_f64().unwrap();
    assert!((25.0..35.0).contains(&skew), "{fast}");
    assert!(fast["disk_used_percent"].as_f64().is_some(), "{fast}");
    assert!(fast["uptime_s"].as_u64().is_some(), "{fast}");
    assert_eq!(fast["last_restart"], "first start", "{fast}");
    drop(peer);

    // The same cloud retiring version 1: the old appliance is told to update.
    cloud_proc.terminate();
    let text = std::fs::read_to_string(&cloud_config).unwrap();
    std::fs::write(
        &cloud_config,
        format!("{text}[sync]\noldest_protocol = 2\n"),
    )
    .unwrap();
    let (_cloud, _) = start_cloud(&cloud_config);
    let err = connect_with(dir.path(), files, cloud_addr(port), None, &v1)
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("unsupported_version") && err.contains("update vigil-edge"),
        "{err}"
    );
    // A real appliance of the previous release hears it and says so on its status API (and
    // its room screen, from the same field).
    let extra = format!(
        "{SIM}{}",
        cloud_section(&ca, dir.path(), port, "florida", "2")
    );
    let config = write_edge_config(dir.path(), "florida", "2", &extra);
    let mut old_edge = Proc::spawn_env(
        &bin("vigil-edge"),
        &["run", "--config", config.to_str().unwrap()],
        &[(vigil_edge::sync::PROTOCOL_MAX_ENV, "1")],
    );
    let old_api = edge_client(&mut old_edge);
    let refused = eventually(
        Duration::from_secs(30),
        "the refusal on the status API",
        || async {
            let (_, st) = old_api.get("/api/v1/status").await;
            st["sync"]["refused"].as_str().map(str::to_owned)
        },
    )
    .await;
    assert!(
        refused.contains("this appliance is too old") && refused.contains("update vigil-edge"),
        "{refused}"
    );
}
