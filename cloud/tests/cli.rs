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
fn run_names_a_missing_certificate_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = tmp.path().join("pki");
    ok(&["pki", "init", "--dir", pki.to_str().expect("utf-8 path")]);
    // No server certificate was issued.
    let config = tmp.path().join("cloud.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\nquic_bind = \"127.0.0.1:0\"\nhttp_bind = \"127.0.0.1:0\"\n\
         api_token = \"0123456789abcdef0123456789\"\n[pki]\nca_cert = \"pki/ca.pem\"\n\
         server_cert = \"pki/server.pem\"\nserver_key = \"pki/server.key\"\ncrl = \"pki/crl.pem\"\n\
         [[sites]]\nid = \"austin\"\nname = \"Austin\"\nregion = \"central\"\nrooms = [\"1\"]\n",
    )
    .expect("write config");
    let missing = pki.join("server.pem");
    fails(
        &["run", "--config", config.to_str().expect("utf-8 path")],
        1,
        &missing.display().to_string(),
    );
    fails(
        &["run", "--config", "/nonexistent/cloud.toml"],
        1,
        "/nonexistent/cloud.toml",
    );
}

#[test]
fn issue_appliance_also_issues_the_room_screen_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir_path = tmp.path().join("pki");
    let dir = dir_path.to_str().expect("utf-8 path");
    ok(&["pki", "init", "--dir", dir]);
    fn issue<'a>(dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "pki",
            "issue-appliance",
            "--dir",
            dir,
            "--site",
            "austin",
            "--room",
            "1",
        ];
        args.extend_from_slice(extra);
        args
    }

    // A bad screen name is refused before anything is written, the appliance's files included.
    let bad = issue(dir, &["--screen-dns", "room 1.austin.clinic"]);
    fails(&bad, 1, "invalid DNS name \"room 1.austin.clinic\"");
    assert!(!dir_path.join("appliance-austin-1.pem").exists());
    fails(
        &issue(dir, &["--screen-ip", "10.1.2"]),
        2,
        "invalid value '10.1.2'",
    );

    let good = issue(
        dir,
        &[
            "--screen-dns",
            "room1.austin.clinic",
            "--screen-ip",
            "10.1.2.3",
        ],
    );
    let out = ok(&good);
    for file in [
        "appliance-austin-1.pem",
        "appliance-austin-1.key",
        "screen-austin-1.pem",
        "screen-austin-1.key",
    ] {
        assert!(out.contains(file), "{file} not in {out}");
        assert!(dir_path.join(file).exists(), "{file}");
    }
    assert!(out.contains("[http_tls] cert = "), "{out}");

    // Without screen names only the appliance's certificate is issued, as before.
    std::fs::remove_file(dir_path.join("screen-austin-1.pem")).expect("remove");
    ok(&issue(dir, &[]));
    assert!(!dir_path.join("screen-austin-1.pem").exists());
}
