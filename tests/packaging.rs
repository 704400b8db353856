//! The Debian packages' parts, checked against the real binaries and the real systemd: each
//! unit passes `systemd-analyze verify` with its `ExecStart` pointing at the built binary; the
//! unit, the package metadata and the shipped configuration name the same paths; the shipped
//! `edge.toml` refuses to start until it names its site, room and monitors, and starts once it
//! does; the maintainer scripts are valid shell.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::bin;

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
    let text = read(&packaging(unit)).replace(
        &format!("/usr/bin/{binary}"),
        bin(binary).to_str().unwrap(),
    );
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
