//! The `vigil-cloud pki …` command line, run as a real process: what an operator types and sees.

use std::path::Path;
use std::process::{Command, Output};

fn vigil_cloud(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil-cloud"))
        .args(args)
        .output()
        .expect("run vigil-cloud")
}

fn ok(args: &[&str]) -> String {
    let out = vigil_cloud(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn fails(args: &[&str], code: i32, stderr_contains: &str) {
    let out = vigil_cloud(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(stderr.contains(stderr_contains), "{args:?}: {stderr}");
}

#[test]
fn an_operator_sets_up_and_revokes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir_path = tmp.path().join("pki");
    let dir = dir_path.to_str().expect("utf-8 path");

    let out = ok(&[
        "pki", "init", "--dir", dir, "--name", "Test CA", "--days", "365",
    ]);
    assert!(out.contains("created CA"), "{out}");
    fails(&["pki", "init", "--dir", dir], 1, "--force");

    let out = ok(&[
        "pki",
        "issue-server",
        "--dir",
        dir,
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(out.contains("server.pem"), "{out}");
    let out = ok(&[
        "pki",
        "issue-appliance",
        "--dir",
        dir,
        "--site",
        "austin",
        "--room",
        "1",
    ]);
    assert!(out.contains("appliance-austin-1.key"), "{out}");

    let cert = dir_path.join("appliance-austin-1.pem");
    let cert = cert.to_str().expect("utf-8 path");
    let out = ok(&["pki", "identify", cert]);
    assert!(out.starts_with("site austin room 1 (serial "), "{out}");

    let out = ok(&["pki", "revoke", "--dir", dir, "--cert", cert]);
    assert!(out.starts_with("revoked serial"), "{out}");
    let out = ok(&["pki", "revoke", "--dir", dir, "--cert", cert]);
    assert!(out.starts_with("already revoked serial"), "{out}");
    assert!(Path::new(dir).join("crl.pem").exists());

    fails(
        &[
            "pki",
            "issue-appliance",
            "--dir",
            dir,
            "--site",
            "Austin",
            "--room",
            "1",
        ],
        1,
        "invalid site \"Austin\"",
    );
    fails(
        &["pki", "revoke", "--dir", dir, "--serial", "0123"],
        1,
        "not issued by this CA",
    );
    fails(&["pki", "revoke", "--dir", dir], 2, "--cert");
    let missing = tmp.path().join("nowhere");
    fails(
        &[
            "pki",
            "issue-appliance",
            "--dir",
            missing.to_str().expect("utf-8"),
            "--site",
            "a",
            "--room",
            "1",
        ],
        1,
        "cannot read CA certificate",
    );
}

#[test]
fn run_is_not_implemented_yet() {
    fails(&["run", "--config", "cloud.toml"], 2, "not yet implemented");
}
