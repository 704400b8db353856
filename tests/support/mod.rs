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
        let mut child = Command::new(bin)
            .args(args)
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
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            base: base.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
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

/// A patient registration body.
pub fn patient_body(given: &str) -> Value {
    serde_json::json!({
        "given_name": given,
        "family_name": "Test",
        "birth_date": "1975-04-02",
        "sex": "female",
    })
}

/// A session start body.
pub fn session_body(patient_id: &str, scenario: &str) -> Value {
    serde_json::json!({
        "patient_id": patient_id,
        "protocol": {"drug": "ketamine", "route": "iv", "dose_mg_per_kg": 0.5, "weight_kg": 70.0, "planned_minutes": 40},
        "by": "test-nurse",
        "scenario": scenario,
    })
}
