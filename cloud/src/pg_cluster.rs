//! A private PostgreSQL cluster for tests: `initdb` into a temporary directory, `postgres` on
//! a free loopback port with password authentication, one per test process, each test in a
//! database of its own. Built from the PostgreSQL server binaries Debian installs
//! (`/usr/lib/postgresql/<version>/bin`, or the directory in `VIGIL_PG_BIN`).
//!
//! PostgreSQL refuses to run as root, and CI runs as root: the cluster then runs as `nobody`,
//! in a directory handed to it. It is torn down when the test process ends, however it ends:
//! the shell that runs the server waits on a pipe the test process holds, and when that pipe
//! closes it stops the server (fast shutdown) and deletes the directory.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The cluster's superuser.
pub const USER: &str = "vigil";

/// Its password (the cluster listens on loopback only and lives as long as the test process).
pub const PASSWORD: &str = "vigil-test-password";

/// A running cluster.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    bin: PathBuf,
    dir: PathBuf,
    next: AtomicU32,
    /// The shell that runs the server; it stops it when its stdin closes.
    guard: Mutex<Child>,
}

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// The process's cluster, started on first use. Panics, saying what is missing, when the
/// PostgreSQL server is not installed or does not start.
pub fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| PgCluster::start().unwrap_or_else(|e| panic!("{e}")))
}

impl PgCluster {
    fn start() -> Result<PgCluster, String> {
        let bin = server_bin()?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("vigil-pg-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        std::fs::write(dir.join("pwfile"), PASSWORD).map_err(|e| format!("pwfile: {e}"))?;
        let as_root = is_root();
        if as_root {
            run(Command::new("chown").args(["-R", "nobody"]).arg(&dir))?;
        }
        let data = dir.join("data");
        let script = format!(
            "set -e
             '{bin}/initdb' -D '{data}' -U {USER} --pwfile='{dir}/pwfile' --auth=scram-sha-256 \
                 -E UTF8 --locale=C --no-sync > '{dir}/initdb.log' 2>&1
             '{bin}/postgres' -D '{data}' -p {port} -c listen_addresses=127.0.0.1 \
                 -c unix_socket_directories='' -c fsync=off -c max_connections=200 \
                 > '{dir}/server.log' 2>&1 &
             pid=$!
             read _ || true
             kill -INT $pid 2>/dev/null || true
             wait $pid || true
             rm -rf '{dir}'",
            bin = bin.display(),
            data = data.display(),
            dir = dir.display(),
        );
        let mut cmd = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting PostgreSQL's initdb and server: {e}"))?;
        let cluster = PgCluster {
            port,
            bin,
            dir,
            next: AtomicU32::new(0),
            guard: Mutex::new(child),
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                // Accepting connections; creating a database proves it answers.
                if self.psql("SELECT 1").is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        Err(format!(
            "the test PostgreSQL cluster did not start within 60 s\ninitdb:\n{}\nserver:\n{}",
            log("initdb.log"),
            log("server.log")
        ))
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database; its URL.
    pub fn new_database(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{n}");
        self.psql(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        self.url(&name)
    }

    /// The URL of database `name` with the cluster's user and password.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// Runs SQL as the superuser in the `postgres` database through `psql`.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Turns TLS on with this certificate and key (PEM files, copied into the cluster's
    /// directory); clients without TLS are still accepted.
    pub fn enable_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let (cert_to, key_to) = (self.dir.join("server.crt"), self.dir.join("server.key"));
        std::fs::copy(cert, &cert_to).map_err(|e| format!("copying {}: {e}", cert.display()))?;
        std::fs::copy(key, &key_to).map_err(|e| format!("copying {}: {e}", key.display()))?;
        std::fs::set_permissions(&key_to, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", key_to.display()))?;
        if is_root() {
            run(Command::new("chown")
                .arg("nobody")
                .arg(&cert_to)
                .arg(&key_to))?;
        }
        for sql in [
            format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert_to.display()),
            format!("ALTER SYSTEM SET ssl_key_file = '{}'", key_to.display()),
            "ALTER SYSTEM SET ssl = on".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            self.psql(&sql)?;
        }
        Ok(())
    }

    /// Closes the shell's stdin pipe: the server stops and its directory goes.
    fn shutdown(&self) {
        if let Ok(mut child) = self.guard.lock() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Starts a cluster of the caller's own, apart from the process's shared one: for tests
    /// that stop and restart the server. Stop it with [`stop`](Self::stop).
    pub fn start_private() -> PgCluster {
        PgCluster::start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops the server and deletes its directory.
    pub fn stop(self) {
        drop(self);
    }
}

fn server_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("VIGIL_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "the PostgreSQL server is not installed (no /usr/lib/postgresql/*/bin/postgres; \
         `apt-get install postgresql`, or set VIGIL_PG_BIN)"
            .to_owned()
    })
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
