//! `vigil-cloud user …` run as a real process: what an admin types and sees when managing
//! dashboard users, and the refusals that name what is wrong.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `vigil-cloud user ARGS --config CONFIG` with `stdin` as standard input.
fn user(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-cloud"))
        .arg("user")
        .args(args)
        .args(["--config", config.to_str().expect("utf-8 path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vigil-cloud");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn ok(config: &Path, args: &[&str], stdin: &str) -> String {
    let out = user(config, args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fails(config: &Path, args: &[&str], stdin: &str, message: &str) {
    let out = user(config, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}

#[test]
fn an_admin_manages_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The PKI files are not read by `user`: only the database and the sites matter.
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\nquic_bind = \"127.0.0.1:0\"\nhttp_bind = \"127.0.0.1:0\"\n\
         api_token = \"0123456789abcdef0123456789\"\n\
         [pki]\nca_cert = \"ca.pem\"\nserver_cert = \"s.pem\"\nserver_key = \"s.key\"\ncrl = \"crl.pem\"\n\
         [[sites]]\nid = \"austin\"\nname = \"Austin\"\nregion = \"central\"\nrooms = [\"1\"]\n\
         [[sites]]\nid = \"florida\"\nname = \"Florida\"\nregion = \"southeast\"\nrooms = [\"1\"]\n",
    )
    .expect("write config");
    let password = "a good long password\n";

    let out = ok(
        &config,
        &[
            "add",
            "maria",
            "--role",
            "regional-manager",
            "--region",
            "central",
        ],
        password,
    );
    assert!(
        out.contains("user added: maria (regional_manager)"),
        "{out}"
    );
    ok(
        &config,
        &["add", "nurse1", "--role", "clinician", "--site", "florida"],
        password,
    );
    ok(&config, &["add", "root", "--role", "admin"], password);

    fails(
        &config,
        &["add", "maria", "--role", "admin"],
        password,
        "already exists",
    );
    fails(
        &config,
        &["add", "x", "--role", "regional-manager", "--region", "west"],
        password,
        "regions: central, southeast",
    );
    fails(
        &config,
        &["add", "y", "--role", "clinician", "--site", "paris"],
        password,
        "site \"paris\" is not configured",
    );
    fails(
        &config,
        &["add", "z", "--role", "clinician"],
        password,
        "needs --site",
    );
    fails(
        &config,
        &["add", "w", "--role", "superuser"],
        password,
        "unknown role",
    );
    fails(
        &config,
        &["add", "Bad Name", "--role", "admin"],
        password,
        "user name",
    );
    fails(
        &config,
        &["add", "short", "--role", "admin"],
        "abc\n",
        "10 to 256 characters",
    );

    let list = ok(&config, &["list"], "");
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        [
            "user: maria regional_manager central",
            "user: nurse1 clinician florida",
            "user: root admin -",
        ]
    );
    let out = ok(
        &config,
        &["token", "maria", "--label", "reports", "--days", "30"],
        "",
    );
    let mut lines = out.lines();
    let token = lines
        .next()
        .and_then(|l| l.strip_prefix("api token: "))
        .expect("a token line");
    assert_eq!(token.len(), 64);
    assert!(
        lines.next().is_some_and(|l| l.starts_with("expires: ")),
        "{out}"
    );
    fails(
        &config,
        &["token", "maria", "--days", "0"],
        "",
        "1 to 365 days",
    );

    ok(&config, &["passwd", "maria"], "another long password\n");
    fails(
        &config,
        &["passwd", "nobody"],
        "another long password\n",
        "no user \"nobody\"",
    );
    assert!(ok(&config, &["disable", "maria"], "").contains("user disabled: maria"));
    assert!(ok(&config, &["list"], "").contains("user: maria regional_manager central disabled"));
    fails(&config, &["token", "maria"], "", "disabled");
    ok(&config, &["enable", "maria"], "");
    assert!(!ok(&config, &["list"], "").contains("disabled"));
}
