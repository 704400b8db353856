//! The Debian packages' parts, checked against the real binaries and the real systemd: each
//! unit passes `systemd-analyze verify` with its `ExecStart` pointing at the built binary; the
//! unit, the package metadata and the shipped configuration name the same paths; the shipped
//! `edge.toml` refuses to start until it names its site, room and monitors, and starts once it
//! does; the maintainer scripts are valid shell; both servers tell systemd when they are ready
//! and feed its watchdog, as their `Type=notify` units expect.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Proc, bin, clinic_ca, free_udp_port, write_cloud_config, write_edge_config};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn packaging(rel: &str) -> PathBuf {
    Path::new(ROOT).join("packaging").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `systemd-analyze verify` on `unit` with `/usr/bin/<binary>` replaced by the built one
/// and returns its exit status and output.
fn verify(unit: &str, binary: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = read(&packaging(unit))
        .replace(&format!("/usr/bin/{binary}"), bin(binary).to_str().unwrap());
    let name = Path::new(unit).file_name().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed for this test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    for (unit, binary) in [
        ("edge/vigil-edge.service", "vigil-edge"),
        ("cloud/vigil-cloud.service", "vigil-cloud"),
    ] {
        let (ok, output) = verify(unit, binary);
        assert!(ok, "{unit}: {output}");
        // Warnings about the unit itself (unknown settings, bad values) come with its name.
        let unit_name = Path::new(unit).file_name().unwrap().to_str().unwrap();
        assert!(
            !output.contains(unit_name),
            "{unit}: systemd-analyze warned: {output}"
        );
        // The hardening the packages promise.
        let text = read(&packaging(unit));
        for line in [
            "Type=notify",
            "User=vigil",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "Restart=always",
            "WatchdogSec=",
            "StateDirectory=",
        ] {
            assert!(text.contains(line), "{unit} lacks {line}");
        }
    }
}

#[test]
fn a_broken_unit_fails_verification() {
    // The check above can fail: an unknown setting is reported with the unit's name.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil-broken.service");
    std::fs::write(
        &path,
        "[Service]\nExecStart=/bin/true\nProtectSystem=sideways\n",
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("vigil-broken.service"), "{text}");
}

#[test]
fn unit_metadata_and_conffile_agree() {
    for (krate, unit, conf) in [
        ("edge", "vigil-edge", "/etc/vigil/edge.toml"),
        ("cloud", "vigil-cloud", "/etc/vigil-cloud/cloud.toml"),
    ] {
        let service = read(&packaging(&format!("{krate}/{unit}.service")));
        assert!(
            service.contains(&format!("--config {conf}")),
            "{unit}.service does not read {conf}"
        );
        assert!(service.contains(&format!("ConditionPathExists={conf}")));
        let manifest = read(&Path::new(ROOT).join(krate).join("Cargo.toml"));
        assert!(
            manifest.contains(&format!("conf-files = [\"{conf}\"]")),
            "{krate}/Cargo.toml does not mark {conf} as a conffile"
        );
        let postinst = read(&packaging(&format!("{krate}/debian/postinst")));
        assert!(postinst.contains(conf), "postinst does not protect {conf}");
        assert!(postinst.contains("#DEBHELPER#"));
        let status = Command::new("sh")
            .arg("-n")
            .arg(packaging(&format!("{krate}/debian/postinst")))
            .status()
            .unwrap();
        assert!(status.success(), "{krate} postinst is not valid shell");
    }
}

/// `vigil-edge check-config` on `text`; its success and stderr.
fn check_edge_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin("vigil-edge"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_edge_config_waits_for_its_site_room_and_monitors() {
    let shipped = read(&packaging("edge/edge.toml"));
    let (ok, err) = check_edge_config(&shipped);
    assert!(!ok);
    assert!(err.contains("field `site`"), "{err}");

    let data = tempfile::tempdir().unwrap();
    let named = shipped
        .replace("site = \"\"", "site = \"austin\"")
        .replace("room = \"\"", "room = \"1\"")
        .replace("/var/lib/vigil", data.path().to_str().unwrap());
    let (ok, err) = check_edge_config(&named);
    assert!(!ok);
    assert!(err.contains("source.monitor"), "{err}");

    let with_monitor = format!(
        "{named}\n[[source.monitor]]\ndevice = \"hr-strap\"\nname = \"Polar H10 1234\"\nmeasures = [\"heart_rate\", \"ecg\"]\n"
    );
    let (ok, err) = check_edge_config(&with_monitor);
    assert!(ok, "{err}");
}

/// The datagrams a service sent to the notify socket until `want` have all been seen (or the
/// deadline passed), in order.
fn notifications(socket: &UnixDatagram, want: &[&str]) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0_u8; 4096];
    while Instant::now() < deadline && !want.iter().all(|w| seen.iter().any(|s| s.contains(w))) {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen
}

/// Starts `binary run --config config` as systemd would, with a notify socket and a 1 s
/// watchdog, and returns the process and what it sent.
fn run_notified(binary: &str, config: &Path, dir: &Path) -> (Proc, Vec<String>) {
    let path = dir.join(format!("{binary}.notify"));
    let socket = UnixDatagram::bind(&path).unwrap();
    let proc = Proc::spawn_env(
        &bin(binary),
        &["run", "--config", config.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let seen = notifications(&socket, &["READY=1", "WATCHDOG=1"]);
    (proc, seen)
}

#[test]
fn both_servers_report_ready_and_feed_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_edge_config(
        dir.path(),
        "austin",
        "1",
        "[source]\nkind = \"simulator\"\nseed = 1\n",
    );
    let (_edge, seen) = run_notified("vigil-edge", &config, dir.path());
    let ready = seen.iter().position(|s| s.contains("READY=1"));
    let fed = seen.iter().rposition(|s| s.contains("WATCHDOG=1"));
    assert!(
        ready.is_some(),
        "the appliance never said READY=1: {seen:?}"
    );
    assert!(
        fed > ready,
        "the appliance fed no watchdog after READY: {seen:?}"
    );

    clinic_ca(dir.path());
    let config = write_cloud_config(dir.path(), free_udp_port());
    let (_cloud, seen) = run_notified("vigil-cloud", &config, dir.path());
    let ready = seen.iter().position(|s| s.contains("READY=1"));
    let fed = seen.iter().rposition(|s| s.contains("WATCHDOG=1"));
    assert!(ready.is_some(), "the cloud never said READY=1: {seen:?}");
    assert!(
        fed > ready,
        "the cloud fed no watchdog after READY: {seen:?}"
    );
}

#[test]
fn without_systemd_the_appliance_starts_as_before() {
    // Outside systemd (no NOTIFY_SOCKET, no WATCHDOG_USEC) readiness and the watchdog are
    // no-ops and the appliance prints where to find it, as always.
    let dir = tempfile::tempdir().unwrap();
    let config = write_edge_config(dir.path(), "austin", "1", "[source]\nkind = \"none\"\n");
    let mut p = Proc::spawn(
        &bin("vigil-edge"),
        &["run", "--config", config.to_str().unwrap()],
    );
    let url = p.wait_for("edge api", Duration::from_secs(60));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
}
