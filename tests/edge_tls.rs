//! HTTPS on the room network, through real `vigil-edge` processes and real TLS on loopback:
//! the room screen served with a clinic-CA certificate to a client that trusts only that CA
//! (secure cookies, HSTS, ALPN http/1.1), refused to clients that don't trust it or use
//! another name, never in clear on the HTTPS port; a plain-HTTP bind off loopback and an
//! unusable certificate refused at start with what to do; and the accept loop's limits
//! (connections, handshake time, shutdown) on an in-process server.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustls::CertificateError;
use support::https::{Https, tls_error};
use support::{bin, clinic_ca, start_edge, write_edge_config};
use vigil_edge::config::HttpTls;
use vigil_edge::http_server::{self, ServerSettings};

/// The `[http_tls]` section for these files, the name tablets use, and a room with no monitors.
fn tls_section(cert: &Path, key: &Path) -> String {
    format!(
        "http_hosts = [\"room1.austin.clinic\"]\n[http_tls]\ncert = \"{}\"\nkey = \"{}\"\n[source]\nkind = \"none\"\n",
        cert.display(),
        key.display()
    )
}

/// Runs `vigil-edge ARGS` to its end: (exit code, stderr).
fn run_edge(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin("vigil-edge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vigil-edge");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_screen_is_served_over_https_with_the_clinic_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let ca_pem = ca.dir().join(vigil_cloud::pki::CA_CERT_FILE);
    let screen = ca
        .issue_screen(
            &"austin".into(),
            &"1".into(),
            &["room1.austin.clinic".to_owned()],
            &["10.1.2.3".parse().unwrap()],
        )
        .unwrap();
    let config = write_edge_config(
        dir.path(),
        "austin",
        "1",
        &tls_section(&screen.cert_path, &screen.key_path),
    );
    let (mut edge, http) = start_edge(&config);
    let url = http.base.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // A tablet trusting only the clinic CA, by address and by the room's name.
    let tablet = Https::trusting(&ca_pem, &url);
    for client in [tablet.clone(), tablet.clone().named("room1.austin.clinic")] {
        let page = client.get("/screen/login").await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("Room screen"), "{}", page.body);
        assert_eq!(page.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(page.header("strict-transport-security"), "max-age=31536000");
        let cookies = page.set_cookies();
        let csrf = cookies
            .iter()
            .find(|c| c.starts_with("vigil_room_login_csrf="))
            .unwrap_or_else(|| panic!("no sign-in cookie in {cookies:?}"));
        assert!(
            csrf.contains("; Secure") && csrf.contains("HttpOnly"),
            "{csrf}"
        );
    }
    // HSTS on every answer, a redirect and the API included.
    let redirect = tablet.get("/screen").await;
    assert_eq!(redirect.status, 303);
    assert_eq!(redirect.header("location"), "/screen/login");
    assert_eq!(
        redirect.header("strict-transport-security"),
        "max-age=31536000"
    );
    let api = tablet.get("/api/v1/status").await;
    assert_eq!(api.header("strict-transport-security"), "max-age=31536000");

    // A browser that does not trust the clinic CA is refused in the handshake.
    let other = vigil_cloud::pki::Ca::init(&dir.path().join("other"), "Other CA").unwrap();
    let stranger = Https::trusting(&other.dir().join(vigil_cloud::pki::CA_CERT_FILE), &url);
    let err = stranger.get_err("/screen/login").await;
    assert!(
        matches!(
            tls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
    // So is a name the certificate does not carry (another room's).
    let err = tablet
        .clone()
        .named("room2.austin.clinic")
        .get_err("/screen/login")
        .await;
    assert!(
        matches!(
            tls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err:?}"
    );
    // Plain HTTP on the HTTPS port gets no page.
    let plain = reqwest::get(format!("{}/screen/login", url.replacen("https", "http", 1))).await;
    assert!(plain.is_err(), "{plain:?}");

    // The appliance still stops cleanly.
    let status = edge.terminate();
    assert!(status.success(), "{status:?}");
}

impl Https {
    /// The error of a request that must fail.
    async fn get_err(&self, path: &str) -> std::io::Error {
        match self.request("GET", path, &[], None).await {
            Ok(reply) => panic!("GET {path} answered {}: {}", reply.status, reply.body),
            Err(e) => e,
        }
    }
}

#[test]
fn plain_http_off_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (i, bind) in ["0.0.0.0:0", "[::]:0", "10.1.2.3:8443"].iter().enumerate() {
        let data = dir.path().join(format!("data-{i}"));
        let config = dir.path().join(format!("edge-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "site = \"austin\"\nroom = \"1\"\ndata_dir = \"{}\"\nhttp_bind = \"{bind}\"\n",
                data.display()
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        for command in ["run", "check-config"] {
            let (code, stderr) = run_edge(&[command, "--config", config]);
            assert_eq!(code, Some(1), "{command} {bind}: {stderr}");
            for expected in [
                config,
                "`http_bind`",
                "not a loopback address",
                "[http_tls]",
                "cert = ",
                "key = ",
                "vigil-cloud pki issue-appliance",
                "--screen-ip",
                "screen-austin-1.pem",
            ] {
                assert!(
                    stderr.contains(expected),
                    "{command} {bind}: {expected:?} not in {stderr}"
                );
            }
        }
        assert!(!data.exists(), "{bind}: nothing may be created");
    }
}

#[test]
fn an_unusable_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let screen = ca
        .issue_screen(
            &"austin".into(),
            &"1".into(),
            &["localhost".to_owned()],
            &[],
        )
        .unwrap();
    let appliance = ca.issue_appliance(&"austin".into(), &"1".into()).unwrap();
    let missing = dir.path().join("nowhere.pem");
    // (certificate, key, what stderr must say)
    let cases = [
        (
            &missing,
            &screen.key_path,
            vec![missing.display().to_string(), "`http_tls.cert`".into()],
        ),
        (
            &screen.cert_path,
            &appliance.key_path,
            vec![
                screen.cert_path.display().to_string(),
                appliance.key_path.display().to_string(),
                "cannot be used together".into(),
            ],
        ),
    ];
    for (cert, key, expected) in cases {
        let config = write_edge_config(dir.path(), "austin", "1", &tls_section(cert, key));
        let (code, stderr) = run_edge(&["run", "--config", config.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{stderr}");
        for e in expected {
            assert!(stderr.contains(&e), "{e:?} not in {stderr}");
        }
    }
}

/// An in-process HTTPS server answering `ok` on `/`, with these limits.
async fn small_server(
    dir: &Path,
    max_connections: usize,
    handshake_timeout: Duration,
) -> (
    std::net::SocketAddr,
    Https,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let ca = clinic_ca(dir);
    let screen = ca
        .issue_screen(
            &"austin".into(),
            &"1".into(),
            &["localhost".to_owned()],
            &[],
        )
        .unwrap();
    let tls = http_server::server_config(&HttpTls {
        cert: screen.cert_path,
        key: screen.key_path,
    })
    .unwrap();
    let settings = ServerSettings {
        max_connections,
        handshake_timeout,
        ..ServerSettings::new(Some(tls))
    };
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http_server::serve(listener, app, settings, async move {
        let _ = stopped.await;
    }));
    let client = Https::trusting(
        &ca.dir().join(vigil_cloud::pki::CA_CERT_FILE),
        &format!("https://{addr}"),
    );
    (addr, client, stop, server)
}

/// A guard against a hang, not a measurement: generous, and only a failure path waits for it.
const HANG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_loses_its_slot_at_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (addr, client, stop, server) =
        small_server(dir.path(), 1, Duration::from_millis(200)).await;
    // A client that connects and says nothing holds the only slot, until the server hangs up.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0_u8; 16];
    let read = tokio::time::timeout(HANG, silent.read(&mut buf))
        .await
        .expect("the server never closed the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The slot is free again.
    let reply = tokio::time::timeout(HANG, client.get("/")).await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    stop.send(()).unwrap();
    tokio::time::timeout(HANG, server).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_and_shutdown_drains() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, client, stop, server) = small_server(dir.path(), 1, HANG).await;
    let holder = tokio::net::TcpStream::connect(addr).await.unwrap();
    // With the only slot held, a second client is not served: it waits in the backlog.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.get("/").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a connection past the limit was served"
    );
    // Once the slot is given back, the waiting client is served.
    drop(holder);
    let reply = tokio::time::timeout(HANG, waiting)
        .await
        .expect("the waiting client was never served")
        .unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));

    // Shutdown ends the server even with a client connected mid-handshake, and then nothing
    // listens any more.
    let _connected = tokio::net::TcpStream::connect(addr).await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(HANG, server)
        .await
        .expect("the server did not stop")
        .unwrap();
    assert!(client.request("GET", "/", &[], None).await.is_err());
}
