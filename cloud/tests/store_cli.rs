//! `vigil-cloud backup`, `restore` and `migrate-store` run as real processes, as the IT person
//! runs them: a SQLite cloud backed up, moved to PostgreSQL, and restored from its backup into
//! a second PostgreSQL database, with everything there each time.

use std::path::Path;
use std::process::{Command, Output};

use vigil_cloud::pg_cluster;
use vigil_cloud::store::CloudStore;

fn cloud(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil-cloud"))
        .args(args)
        .args(["--config", config.to_str().expect("utf-8 path")])
        .output()
        .expect("run vigil-cloud")
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = cloud(config, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A cloud.toml with `store` as its `[store]` section (the PKI files are not read here).
fn write_config(dir: &Path, name: &str, store: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "data_dir = \"data\"\nquic_bind = \"127.0.0.1:0\"\nhttp_bind = \"127.0.0.1:0\"\n\
             api_token = \"0123456789abcdef0123456789\"\n\
             [pki]\nca_cert = \"ca.pem\"\nserver_cert = \"s.pem\"\nserver_key = \"s.key\"\n\
             crl = \"crl.pem\"\n\
             [[sites]]\nid = \"austin\"\nname = \"Austin\"\nregion = \"central\"\nrooms = [\"1\"]\n\
             {store}"
        ),
    )
    .expect("write config");
    path
}

/// The users, tokens and audit log a store holds, as the dashboard reads them.
fn people(store: &CloudStore) -> (Vec<String>, usize, Vec<String>) {
    let users: Vec<_> = store.users().unwrap();
    let tokens = users
        .iter()
        .map(|u| store.api_tokens(u.id).unwrap().len())
        .sum();
    let (_, audit) = store.audit_log(100, 0).unwrap();
    (
        users.into_iter().map(|u| u.username).collect(),
        tokens,
        audit
            .into_iter()
            .map(|a| format!("{} {}", a.username, a.action))
            .collect(),
    )
}

#[test]
fn a_sqlite_cloud_is_backed_up_moved_to_postgres_and_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_config = write_config(dir.path(), "cloud.toml", "");
    {
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let store = CloudStore::open(&dir.path().join("data/vigil-cloud.db")).unwrap();
        let id = store.create_user("maria", "admin", "", "hash", 1).unwrap();
        store
            .create_api_token(&[1; 32], id, "export", 2, 99)
            .unwrap();
        store
            .audit(&vigil_cloud::store::AuditRow::cloud(
                3,
                "maria",
                "view session",
                "s-1",
                "::1",
            ))
            .unwrap();
    }
    let original = people(&CloudStore::open(&dir.path().join("data/vigil-cloud.db")).unwrap());

    // backup: a new file; a second backup onto it is refused.
    let backup = dir.path().join("backup.db");
    let backup_arg = backup.to_str().unwrap();
    let out = ok(&sqlite_config, &["backup", "--to", backup_arg]);
    assert!(out.contains("backup rows users: 1"), "{out}");
    let again = cloud(&sqlite_config, &["backup", "--to", backup_arg]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(people(&CloudStore::open(&backup).unwrap()), original);

    // migrate-store: into PostgreSQL, the address read from a file.
    let cluster = pg_cluster::cluster();
    let url = cluster.new_database();
    std::fs::write(dir.path().join("pg-url"), format!("{url}\n")).unwrap();
    let out = ok(
        &sqlite_config,
        &[
            "migrate-store",
            "--to",
            &format!("@{}", dir.path().join("pg-url").display()),
        ],
    );
    assert!(
        out.contains("migrate-store to: postgres 127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("migrate-store rows audit_log: 1"), "{out}");
    assert_eq!(
        people(&CloudStore::open_postgres(&url, None).unwrap()),
        original
    );

    // restore: the backup into a second, empty PostgreSQL database named by [store]; then
    // restoring again is refused, since it is no longer empty.
    let second = cluster.new_database();
    std::fs::write(dir.path().join("pg-url-2"), format!("{second}\n")).unwrap();
    let pg_config = write_config(
        dir.path(),
        "cloud-pg.toml",
        "[store]\nkind = \"postgres\"\nurl_file = \"pg-url-2\"\n",
    );
    ok(&pg_config, &["restore", "--from", backup_arg]);
    assert_eq!(
        people(&CloudStore::open_postgres(&second, None).unwrap()),
        original
    );
    let again = cloud(&pg_config, &["restore", "--from", backup_arg]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_cloud_that_cannot_reach_its_database_says_which_part_failed_and_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = pg_cluster::cluster();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases = [
        (
            cluster
                .url("postgres")
                .replace(pg_cluster::PASSWORD, "wrong"),
            "password authentication failed",
        ),
        (
            cluster.url("no_such_db"),
            "database \"no_such_db\" does not exist",
        ),
        (
            format!("postgres://vigil:x@127.0.0.1:{port}/vigil"),
            "onnection refused",
        ),
    ];
    for (i, (url, says)) in cases.iter().enumerate() {
        let config = write_config(
            dir.path(),
            &format!("cloud-{i}.toml"),
            &format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\n"),
        );
        let out = cloud(&config, &["run"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("cannot open the cloud database"),
            "{url}: {stderr}"
        );
    }
}
