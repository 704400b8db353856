//! A minimal W3C WebDriver client for the browser tests: drives a headless Chromium through
//! `chromedriver` over HTTP, and saves screenshots under `target/screenshots/`.
//!
//! Chromium and chromedriver must be installed (Debian's `chromium` and `chromium-driver`):
//! without them a browser test fails, it does not skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The element key of the W3C WebDriver protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A minimal W3C WebDriver client over HTTP.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium is a child of chromedriver: ending the WebDriver session stops it.
        let _ = std::process::Command::new("curl")
            .args([
                "-s",
                "-X",
                "DELETE",
                &format!("{}/session/{}", self.base, self.session),
            ])
            .output();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    pub async fn start(downloads: &Path, profile: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "the browser tests need Debian's chromium and chromium-driver \
             (apt-get install -y chromium chromium-driver; .ci/run installs them)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.display())],
                "prefs": {"download.default_directory": downloads.display().to_string(),
                          "download.prompt_for_download": false}
            }
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let b = Browser {
            http,
            base,
            session,
            driver,
            shots,
        };
        b.cmd(
            "POST",
            "/chromium/send_command",
            json!({"cmd": "Page.setDownloadBehavior",
            "params": {"behavior": "allow", "downloadPath": downloads.display().to_string()}}),
        )
        .await;
        b
    }

    pub async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let res: Value = req
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver json");
        if let Some(err) = res["value"].get("error") {
            panic!(
                "webdriver {method} {path}: {err} {}",
                res["value"]["message"]
            );
        }
        res["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url})).await;
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits until the address contains `part` (a form submission may still be navigating
    /// when a click returns) and returns it.
    pub async fn wait_url(&self, part: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {part:?} in the address, at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matches `css`.
    pub async fn wait_for(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.find_all(css).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "waited for {css} at {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn find_all(&self, css: &str) -> Vec<String> {
        self.cmd(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        )
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[ELEMENT].as_str().unwrap().to_owned())
        .collect()
    }

    pub async fn find(&self, css: &str) -> String {
        let found = self.find_all(css).await;
        found
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css}"))
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), json!({}))
            .await;
    }

    /// Clicks a button that submits a form and waits until the browser shows the page that
    /// answered it. Waiting for a text instead can match the old page (its ledger line already
    /// says "unaccounted for"), and a navigation started next can then lose the race to the
    /// form's own redirect.
    pub async fn submit(&self, css: &str) {
        let mark = "window.__vigil_before_submit = true; return true;";
        self.cmd("POST", "/execute/sync", json!({"script": mark, "args": []}))
            .await;
        self.click(css).await;
        let answered =
            "return document.readyState === 'complete' && !window.__vigil_before_submit;";
        let deadline = Instant::now() + Duration::from_secs(15);
        while self
            .cmd(
                "POST",
                "/execute/sync",
                json!({"script": answered, "args": []}),
            )
            .await
            != Value::Bool(true)
        {
            assert!(
                Instant::now() < deadline,
                "waited for the answer to {css} at {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({"text": text}),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sets the value of the first input matching `css` inside the page (a date input, whose
    /// typed form depends on the browser's locale).
    pub async fn set_value(&self, css: &str, value: &str) {
        let script = "const e = document.querySelector(arguments[0]); e.value = arguments[1]; return e.value;";
        let set = self
            .cmd(
                "POST",
                "/execute/sync",
                json!({"script": script, "args": [css, value]}),
            )
            .await;
        assert_eq!(set.as_str(), Some(value), "{css}");
    }

    /// The rendered text of the first element matching `css`, read inside the page in one
    /// step, so an element replaced meanwhile (a page that updates itself from a server-sent
    /// event) is never a stale reference; `None` when nothing matches.
    pub async fn try_text(&self, css: &str) -> Option<String> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;";
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": [css]}),
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Waits until the text of the first element matching `css` contains `part`, and
    /// returns it.
    pub async fn wait_text(&self, css: &str, part: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.try_text(css).await;
            if let Some(t) = &text
                && t.contains(part)
            {
                return t.clone();
            }
            assert!(
                Instant::now() < deadline,
                "waited for {part:?} in {css} at {}, which reads {text:?}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn screenshot(&self, name: &str) {
        let b64 = self.cmd("GET", "/screenshot", Value::Null).await;
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for group in bytes.chunks(4) {
        let mut n = 0_u32;
        for (i, &c) in group.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        let take = group.len() - 1;
        out.extend(&n.to_be_bytes()[1..=take]);
    }
    out
}
