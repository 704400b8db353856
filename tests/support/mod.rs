//! Test support for the end-to-end tier: finding and starting the real binaries, reading the
//! `name: value` lines they print, and small HTTP helpers.
//!
//! Not a mock of anything: processes are the real `vigil-edge`, files are real SQLite files.

#![allow(dead_code)] // reason: each test file uses its own subset of these helpers

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod fleet;
pub mod https;
pub mod peer;
pub mod peers;
pub mod tally;
pub mod webdriver;

/// Path to a workspace binary of another package, built (or found up to date) first: a test
/// of the root package alone (`cargo test -p vigil`) would otherwise run a stale binary.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    // Integration tests live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--locked", "--workspace", "--bin", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_owned());
    }
    dir.join(name)
}

/// A child process whose stdout `name: value` lines are collected.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    /// Starts `bin` with `args`; stderr goes to the test's stderr (shown on failure).
    pub fn spawn(bin: &Path, args: &[&str]) -> Proc {
        Proc::spawn_env(bin, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a `name: value` line and returns the value.
    pub fn wait_for(&mut self, name: &str, timeout: Duration) -> String {
        let prefix = format!("{name}: ");
        if let Some(v) = self.seen.iter().find_map(|l| l.strip_prefix(&prefix)) {
            return v.to_owned();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.strip_prefix(&prefix).map(str::to_owned);
                    self.seen.push(line);
                    if let Some(v) = found {
                        return v;
                    }
                }
                Err(_) => panic!("no `{name}:` line within {timeout:?}; saw {:?}", self.seen),
            }
        }
    }

    /// SIGKILL, as a power cut or OOM kill would.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("send SIGTERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes an appliance config into `dir` and returns its path.
pub fn write_edge_config(dir: &Path, site: &str, room: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("edge-{site}-{room}.toml"));
    let text = format!(
        "site = \"{site}\"\nroom = \"{room}\"\ndata_dir = \"{}\"\nhttp_bind = \"127.0.0.1:0\"\n{extra}\n",
        dir.join(format!("data-{site}-{room}")).display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A small JSON client.
pub struct Http {
    pub base: String,
    client: reqwest::Client,
    pub token: Option<String>,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            base: base.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            token: None,
        }
    }

    /// A client that sends `Authorization: Bearer TOKEN`.
    pub fn with_token(base: &str, token: &str) -> Http {
        Http {
            token: Some(token.to_owned()),
            ..Http::new(base)
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let req = self.client.get(format!("{}{path}", self.base));
        let resp = self.authorised(req).send().await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn authorised(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .authorised(self.client.post(format!("{}{path}", self.base)))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .authorised(self.client.patch(format!("{}{path}", self.base)))
            .json(body)
            .send()
            .await
            .expect("PATCH");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .authorised(self.client.post(format!("{}{path}", self.base)))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Every sample of a channel, following `next_from_us` pages.
    pub async fn all_vitals(&self, session: &str, channel: &str) -> Vec<Vec<i64>> {
        let mut out = Vec::new();
        let mut from: Option<i64> = None;
        loop {
            let q = match from {
                Some(f) => format!("/api/v1/sessions/{session}/vitals?channel={channel}&from={f}"),
                None => format!("/api/v1/sessions/{session}/vitals?channel={channel}"),
            };
            let (status, page) = self.get(&q).await;
            assert_eq!(status, 200, "{page}");
            for s in page["samples"].as_array().expect("samples") {
                out.push(
                    s.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_i64().unwrap())
                        .collect(),
                );
            }
            match page["next_from_us"].as_i64() {
                Some(f) => from = Some(f),
                None => return out,
            }
        }
    }
}

/// Writes a site's configuration document into an appliance database at `db`, as the sync
/// client stores what the cloud sends: `staff` as (id, name, role, PIN), then `edit` (limits,
/// tokens) on the document. No cloud needed.
pub fn seed_site_config(
    db: &Path,
    site: &str,
    staff: &[(&str, &str, &str, &str)],
    edit: impl FnOnce(&mut vigil_shared::doc::SiteConfigDoc),
) {
    use vigil_shared::doc::{DocKind, SiteConfig, SiteConfigDoc, StaffMember};
    let hash = |pin: &str| vigil_cloud::auth::hash_password(pin).expect("hash");
    let config = SiteConfig {
        site: site.into(),
        name: format!("Site {site}"),
        region: "central".into(),
        rooms: vec![],
        thresholds: vigil_shared::advisory::Thresholds::default(),
        staff: staff
            .iter()
            .map(|(id, name, role, pin)| StaffMember {
                id: (*id).into(),
                name: (*name).into(),
                role: (*role).into(),
                pin_hash: hash(pin),
            })
            .collect(),
    };
    let mut doc = SiteConfigDoc::create(&config).unwrap();
    edit(&mut doc);
    let bytes = doc.automerge().save();
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let mut conn = vigil_edge::store::open_writer(db).expect("open the appliance database");
    let tx = vigil_edge::store::write_tx(&mut conn).unwrap();
    vigil_edge::store::insert_document(&tx, site, DocKind::SiteConfig.as_str(), site, &bytes, 0)
        .unwrap();
    tx.commit().unwrap();
}

/// The database of the appliance [`write_edge_config`] configured in `dir`.
pub fn edge_db(dir: &Path, site: &str, room: &str) -> PathBuf {
    dir.join(format!("data-{site}-{room}"))
        .join("vigil-edge.db")
}

/// `name=value` of the `Set-Cookie` named `name` in a response.
pub fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of the first hidden `csrf` field in a page.
pub fn csrf_field(html: &str) -> String {
    let start = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    html[start..start + 64].to_owned()
}

/// A patient registration body.
pub fn patient_body(given: &str) -> Value {
    serde_json::json!({
        "given_name": given,
        "family_name": "Test",
        "birth_date": "1975-04-02",
        "sex": "female",
    })
}

/// A PHQ-9 as the room screen's check-in form posts it, item by item (total 14, item 9 "not
/// at all"), with no C-SSRS "yes".
pub const PHQ9_FORM: [(&str, &str); 9] = [
    ("q1", "2"),
    ("q2", "2"),
    ("q3", "2"),
    ("q4", "2"),
    ("q5", "2"),
    ("q6", "2"),
    ("q7", "1"),
    ("q8", "1"),
    ("q9", "0"),
];

/// Every screening question as the check-in form posts it: "yes" for the flags named in
/// `yes`, "no" for the rest.
pub fn screening_form(yes: &[&str]) -> Vec<(String, String)> {
    vigil_shared::clinical::screening::ScreeningFlag::ALL
        .iter()
        .map(|f| {
            let answer = if yes.contains(&f.code()) { "yes" } else { "no" };
            (format!("f_{}", f.code()), answer.to_owned())
        })
        .collect()
}

/// A session start body.
pub fn session_body(patient_id: &str, scenario: &str) -> Value {
    serde_json::json!({
        "patient_id": patient_id,
        "protocol": {"drug": "ketamine", "route": "iv", "dose_mg_per_kg": 0.5, "weight_kg": 70.0, "planned_minutes": 40},
        "order": {"prescriber": "dr-kim", "indication": "depression"},
        "risk_screen": {"phq9_items": [2, 2, 2, 2, 2, 2, 1, 1, 0], "cssrs": [false, false, false, false, false, false]},
        "screening": vigil_shared::clinical::screening::ScreeningFlag::ALL
            .iter()
            .map(|f| serde_json::json!({"flag": f.code(), "yes": false}))
            .collect::<Vec<_>>(),
        "scenario": scenario,
    })
}

/// The clinic's private CA in `dir/pki`, with a server certificate for localhost.
pub fn clinic_ca(dir: &Path) -> vigil_cloud::pki::Ca {
    clinic_ca_with_server(dir).0
}

/// [`clinic_ca`], also returning the server certificate it issued.
pub fn clinic_ca_with_server(dir: &Path) -> (vigil_cloud::pki::Ca, vigil_cloud::pki::IssuedCert) {
    let ca = vigil_cloud::pki::Ca::init(&dir.join("pki"), "Test Clinic CA").expect("init CA");
    let server = ca
        .issue_server(
            &["localhost".to_owned()],
            &["127.0.0.1".parse().unwrap()],
            "server",
        )
        .expect("server cert");
    (ca, server)
}

/// A UDP port free right now on loopback (for a cloud that must come back on the same port).
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().unwrap().port()
}

pub const TOKEN: &str = "test-token-0123456789abcdef0123";

/// Runs `vigil-cloud ARGS` with `stdin` (a line: a password or a PIN) as its standard input.
pub fn vigil_cloud_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(bin("vigil-cloud"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vigil-cloud");
    writeln!(child.stdin.take().unwrap(), "{stdin}").unwrap();
    child.wait_with_output().unwrap()
}

/// Writes `cloud.toml` for sites austin and florida (rooms 1 and 2) and returns its path.
pub fn write_cloud_config(dir: &Path, quic_port: u16) -> PathBuf {
    let pki = dir.join("pki");
    let text = format!(
        r#"data_dir = "{data}"
quic_bind = "127.0.0.1:{quic_port}"
http_bind = "127.0.0.1:0"
api_token = "{TOKEN}"
[pki]
ca_cert = "{pki}/ca.pem"
server_cert = "{pki}/server.pem"
server_key = "{pki}/server.key"
crl = "{pki}/crl.pem"
[[sites]]
id = "austin"
name = "Austin, TX"
region = "central"
tz = "America/Chicago"
rooms = ["1", "2"]
[[sites]]
id = "florida"
name = "Florida"
region = "southeast"
tz = "America/New_York"
rooms = ["1", "2"]
"#,
        data = dir.join("cloud-data").display(),
        pki = pki.display()
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).expect("write cloud config");
    path
}

/// The `[cloud]` section of an appliance's config, with a fresh certificate for site/room.
pub fn cloud_section(
    ca: &vigil_cloud::pki::Ca,
    dir: &Path,
    quic_port: u16,
    site: &str,
    room: &str,
) -> String {
    let cert = ca
        .issue_appliance(&site.into(), &room.into())
        .expect("appliance cert");
    format!(
        "[cloud]\naddr = \"127.0.0.1:{quic_port}\"\nserver_name = \"localhost\"\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("pki/ca.pem").display(),
        cert.cert_path.display(),
        cert.key_path.display()
    )
}

/// Starts `vigil-cloud run` and returns it with its API client.
pub fn start_cloud(config: &Path) -> (Proc, Http) {
    let mut p = Proc::spawn(
        &bin("vigil-cloud"),
        &["run", "--config", config.to_str().unwrap()],
    );
    let url = p.wait_for("cloud api", Duration::from_secs(60));
    (p, Http::with_token(&url, TOKEN))
}

/// Starts `vigil-edge run` and returns it with its API client.
pub fn start_edge(config: &Path) -> (Proc, Http) {
    let mut p = Proc::spawn(
        &bin("vigil-edge"),
        &["run", "--config", config.to_str().unwrap()],
    );
    let http = edge_client(&mut p);
    (p, http)
}

/// The API client of a started `vigil-edge`, holding the local API token it printed.
pub fn edge_client(p: &mut Proc) -> Http {
    let url = p.wait_for("edge api", Duration::from_secs(60));
    let token = p.wait_for("edge api token", Duration::from_secs(5));
    Http::with_token(&url, &token)
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Signs `user` in to the dashboard at `base` with `password`; the session cookie.
pub async fn dashboard_sign_in(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> String {
    let res = client.get(format!("{base}/login")).send().await.unwrap();
    let csrf_cookie = set_cookie(&res, "vigil_login_csrf").expect("login csrf cookie");
    let html = res.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    let csrf = html[start..].split('"').next().unwrap().to_owned();
    let res = client
        .post(format!("{base}/login"))
        .header("cookie", csrf_cookie)
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", csrf.as_str()),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert_eq!(
        status,
        303,
        "sign-in: {}",
        res.text().await.unwrap_or_default()
    );
    set_cookie(&res, "vigil_session").expect("session cookie")
}

/// Registers a patient named `given` on an appliance and starts a session for them with the
/// simulator's `scenario`; the session's id.
pub async fn begin_session(edge: &Http, given: &str, scenario: &str) -> String {
    let (st, patient) = edge.post("/api/v1/patients", &patient_body(given)).await;
    assert_eq!(st, 201, "{patient}");
    let (st, session) = edge
        .post(
            "/api/v1/sessions",
            &session_body(patient["id"].as_str().unwrap(), scenario),
        )
        .await;
    assert_eq!(st, 201, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

/// Waits (at most 90 s) until the cloud's per-channel counts and checksums of session `id`
/// equal the appliance's, which must hold more than `min_ecg` ECG samples; the digest.
pub async fn converged(
    edge: &Http,
    cloud: &Http,
    id: &str,
    min_ecg: u64,
) -> Vec<(String, u64, String)> {
    let (_, local) = edge.get(&format!("/api/v1/sessions/{id}")).await;
    let expected = channel_digest(&local);
    assert!(
        expected.iter().any(|(c, n, _)| c == "ecg" && *n > min_ecg),
        "{expected:?}"
    );
    eventually(
        Duration::from_secs(90),
        "the cloud to hold the session",
        || async {
            let (st, remote) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
            (st == 200 && channel_digest(&remote) == expected).then_some(())
        },
    )
    .await;
    expected
}

/// Per-channel (samples, checksum) of a session summary, from either API.
pub fn channel_digest(summary: &Value) -> Vec<(String, u64, String)> {
    summary["channels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v["samples"].as_u64().unwrap_or(0),
                        v["checksum"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Registers a patient and starts a session; returns its id and start time (appliance clock).
pub async fn start_session(edge: &Http, given: &str, scenario: &str) -> (String, i64) {
    let (st, patient) = edge.post("/api/v1/patients", &patient_body(given)).await;
    assert_eq!(st, 201, "{patient}");
    let (st, session) = edge
        .post(
            "/api/v1/sessions",
            &session_body(patient["id"].as_str().unwrap(), scenario),
        )
        .await;
    assert_eq!(st, 201, "{session}");
    (
        session["id"].as_str().unwrap().to_owned(),
        session["started_us"].as_i64().unwrap(),
    )
}

/// Stops a session; returns its end time (appliance clock).
pub async fn stop_session(edge: &Http, id: &str) -> i64 {
    let (st, stopped) = edge
        .post(
            &format!("/api/v1/sessions/{id}/stop"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(st, 200, "{stopped}");
    stopped["ended_us"].as_i64().unwrap()
}
