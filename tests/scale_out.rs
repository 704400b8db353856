//! The cloud past one machine, end to end with real processes: two `vigil-cloud` instances on
//! one PostgreSQL database (a private cluster the test starts), four appliances split between
//! them, sessions recording. A staff change made through one instance reaches an appliance
//! held by the other; one instance is SIGKILLed mid-sync; its appliances move to the other;
//! afterwards every session in the database equals the appliances' (per-channel counts and
//! checksums), and a manager signed in through the dead instance is still signed in on the
//! live one.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const SIM: &str = "chunk_period_s = 10\ngroup_commit_ms = 200\n[source]\nkind = \"simulator\"\nseed = 9\necg_hz = 250\ntime_factor = 60.0\n";
const PASSWORD: &str = "a manager's long password";

/// `cloud-NAME.toml`: the shared test configuration, on PostgreSQL at `url`, as instance
/// `cloud-NAME`, syncing on `port`.
fn cloud_config(dir: &Path, name: &str, port: u16, url: &str) -> PathBuf {
    let base = std::fs::read_to_string(write_cloud_config(dir, port)).unwrap();
    let text = base
        .replace("[pki]", &format!("instance = \"cloud-{name}\"\n[pki]"))
        .replace("cloud-data", &format!("cloud-data-{name}"));
    let path = dir.join(format!("cloud-{name}.toml"));
    std::fs::write(
        &path,
        format!("{text}[store]\nkind = \"postgres\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    path
}

/// An appliance of `site`/`room` that knows both instances, `first` tried first.
fn edge_config(
    dir: &Path,
    ca: &vigil_cloud::pki::Ca,
    site: &str,
    room: &str,
    first: u16,
    second: u16,
) -> PathBuf {
    let section = cloud_section(ca, dir, first, site, room).replace(
        &format!("addr = \"127.0.0.1:{first}\""),
        &format!("addrs = [\"127.0.0.1:{first}\", \"127.0.0.1:{second}\"]"),
    );
    write_edge_config(dir, site, room, &format!("{SIM}{section}"))
}

/// `vigil-cloud ARGS` with a line on standard input; it must succeed.
fn vigil_cloud(args: &[&str], stdin: &str) {
    let out = vigil_cloud_with_stdin(args, stdin);
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// The prescriber the sessions' orders name (`dr-kim`), added at `sites` through `config`,
/// and on every appliance in `edges` before the test goes on.
async fn add_prescriber(config: &Path, sites: &[&str], edges: &[&Http]) {
    for site in sites {
        vigil_cloud(
            &[
                "staff",
                "add",
                "dr-kim",
                "--site",
                site,
                "--name",
                "Dr Kim",
                "--role",
                "clinician",
                "--config",
                config.to_str().unwrap(),
            ],
            "730461",
        );
    }
    for edge in edges {
        eventually(
            Duration::from_secs(30),
            "the prescriber on the appliance",
            || async {
                let (st, s) = edge.get("/api/v1/site").await;
                (st == 200 && s["staff"].as_u64() == Some(1)).then_some(())
            },
        )
        .await;
    }
}

/// Which address an appliance syncs with now, once connected.
async fn syncing_with(edge: &Http) -> Option<String> {
    let (_, status) = edge.get("/api/v1/status").await;
    (status["sync"]["connected"] == Value::Bool(true))
        .then(|| status["sync"]["cloud"].as_str().unwrap_or("").to_owned())
}

async fn dashboard_status(client: &reqwest::Client, base: &str, cookie: &str) -> u16 {
    client
        .get(format!("{base}/sessions"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_lose_one_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let url = vigil_cloud::pg_cluster::cluster().new_database();
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let config_a = cloud_config(dir.path(), "a", port_a, &url);
    let config_b = cloud_config(dir.path(), "b", port_b, &url);
    let (mut proc_a, cloud_a) = start_cloud(&config_a);
    let (_proc_b, cloud_b) = start_cloud(&config_b);
    vigil_cloud(
        &[
            "user",
            "add",
            "manager",
            "--role",
            "admin",
            "--config",
            config_a.to_str().unwrap(),
        ],
        PASSWORD,
    );

    // Austin's rooms try instance a first, Florida's instance b.
    let mut edges = Vec::new();
    for (site, room) in [
        ("austin", "1"),
        ("austin", "2"),
        ("florida", "1"),
        ("florida", "2"),
    ] {
        let (first, second) = if site == "austin" {
            (port_a, port_b)
        } else {
            (port_b, port_a)
        };
        let (proc, http) = start_edge(&edge_config(dir.path(), &ca, site, room, first, second));
        edges.push((site, room, proc, http));
    }
    for (site, room, _, edge) in &edges {
        let want = if *site == "austin" { port_a } else { port_b };
        let cloud = eventually(Duration::from_secs(60), "the appliance to connect", || {
            syncing_with(edge)
        })
        .await;
        assert_eq!(cloud, format!("127.0.0.1:{want}"), "{site}/{room}");
    }
    // The registry says which instance holds which appliance; either instance reads it.
    eventually(
        Duration::from_secs(20),
        "the registry to name both instances",
        || async {
            let (_, sites) = cloud_b.get("/api/v1/sites").await;
            let text = sites.to_string();
            (text.contains("\"cloud-a\"") && text.contains("\"cloud-b\"")).then_some(())
        },
    )
    .await;

    // A manager signs in through instance a.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = dashboard_sign_in(&client, &cloud_a.base, "manager", PASSWORD).await;
    assert_eq!(dashboard_status(&client, &cloud_a.base, &cookie).await, 200);

    // The prescriber the sessions' orders name, at both sites.
    let https: Vec<&Http> = edges.iter().map(|e| &e.3).collect();
    add_prescriber(&config_a, &["austin", "florida"], &https).await;

    // A staff member added for Florida through instance a's configuration reaches Florida's
    // rooms, which instance b holds, within seconds.
    let florida = &edges[2].3;
    let staff_before = 1;
    vigil_cloud(
        &[
            "staff",
            "add",
            "nurse-new",
            "--site",
            "florida",
            "--name",
            "New Nurse",
            "--role",
            "nurse",
            "--config",
            config_a.to_str().unwrap(),
        ],
        "482913",
    );
    eventually(
        Duration::from_secs(10),
        "the new staff member in Florida's room",
        || async {
            let (_, s) = florida.get("/api/v1/site").await;
            (s["staff"].as_u64() == Some(staff_before + 1)).then_some(())
        },
    )
    .await;

    // Every room records; chunks are reaching the database through both instances.
    let mut sessions = Vec::new();
    for (site, room, _, edge) in &edges {
        let (id, _) = start_session(edge, &format!("Scale{site}{room}"), "baseline").await;
        sessions.push(id);
    }
    for id in &sessions {
        eventually(
            Duration::from_secs(60),
            "the first chunks in the database",
            || async {
                let (st, s) = cloud_b.get(&format!("/api/v1/sessions/{id}")).await;
                (st == 200 && s["channels"]["ecg"]["samples"].as_u64().unwrap_or(0) > 0)
                    .then_some(())
            },
        )
        .await;
    }

    // Instance a dies mid-sync; Austin's rooms keep recording and move to instance b.
    proc_a.kill();
    let killed_at = Instant::now();
    for (site, room, _, edge) in &edges {
        let cloud = eventually(
            Duration::from_secs(90),
            "the appliance to reach instance b",
            || async {
                syncing_with(edge)
                    .await
                    .filter(|c| *c == format!("127.0.0.1:{port_b}"))
            },
        )
        .await;
        assert!(
            cloud.ends_with(&port_b.to_string()),
            "{site}/{room}: {cloud}"
        );
    }
    for ((_, _, _, edge), id) in edges.iter().zip(&sessions) {
        stop_session(edge, id).await;
    }

    // Every session in the database equals its appliance's: 0 lost, 0 duplicated.
    let pairs: Vec<(&Http, &str)> = edges
        .iter()
        .zip(&sessions)
        .map(|((_, _, _, edge), id)| (edge, id.as_str()))
        .collect();
    let (tally, took) =
        tally::converge(&pairs, &cloud_b, killed_at, Duration::from_secs(120)).await;
    tally::report(
        "Two cloud instances on one PostgreSQL",
        "4 rooms of 2 sites, one session each, split between the instances",
        "one instance SIGKILLed mid-sync; its rooms fail over to the other",
        tally,
        took,
    );

    // The manager's browser session, made through a, holds on b.
    assert_eq!(dashboard_status(&client, &cloud_b.base, &cookie).await, 200);
}

/// A TCP proxy in front of PostgreSQL that can be cut: every connection through it dropped
/// and new ones refused, as when the database's machine or the network to it goes away.
struct DbLink {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Bumped on every cut: connections of an older generation end.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl DbLink {
    async fn start(upstream: u16) -> DbLink {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let born = gen2.load(Ordering::SeqCst);
                let gen3 = gen2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let cut = async {
                        while gen3.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut => {}
                    }
                });
            }
        });
        DbLink {
            port,
            up,
            generation,
        }
    }

    fn set(&self, up: bool) {
        use std::sync::atomic::Ordering;
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_loses_nothing_and_the_cloud_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let ca = clinic_ca(dir.path());
    let cluster = vigil_cloud::pg_cluster::cluster();
    let direct = cluster.new_database();
    let link = DbLink::start(cluster.port()).await;
    let url = direct.replace(
        &format!(":{}/", cluster.port()),
        &format!(":{}/", link.port),
    );
    let port = free_udp_port();
    let (_cloud_proc, cloud) = start_cloud(&cloud_config(dir.path(), "a", port, &url));
    let (_edge_proc, edge) = start_edge(&edge_config(dir.path(), &ca, "austin", "1", port, port));
    eventually(Duration::from_secs(60), "the appliance to connect", || {
        syncing_with(&edge)
    })
    .await;
    add_prescriber(&dir.path().join("cloud-a.toml"), &["austin"], &[&edge]).await;
    let (id, _) = start_session(&edge, "Outage", "baseline").await;
    eventually(
        Duration::from_secs(60),
        "the first chunks in the database",
        || async {
            let (st, s) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
            (st == 200 && s["channels"]["ecg"]["samples"].as_u64().unwrap_or(0) > 0).then_some(())
        },
    )
    .await;

    // The database goes away: the appliance keeps recording, and hears why nothing is confirmed.
    link.set(false);
    let cut_at = Instant::now();
    let reason = eventually(
        Duration::from_secs(60),
        "the appliance to hear why",
        || async {
            let (_, status) = edge.get("/api/v1/status").await;
            let error = status["sync"]["last_error"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            error.contains("database is unavailable").then_some(error)
        },
    )
    .await;
    assert!(reason.contains("nothing was confirmed"), "{reason}");
    let (_, status) = edge.get("/api/v1/status").await;
    assert_eq!(
        status["recorder"]["session"]["id"].as_str(),
        Some(id.as_str()),
        "recording goes on: {status}"
    );
    // The cloud's own API says so too, instead of serving nothing.
    let (st, body) = cloud.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(st, 503, "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // It comes back: everything recorded meanwhile arrives, once.
    link.set(true);
    stop_session(&edge, &id).await;
    let (tally, took) = tally::converge(
        &[(&edge, id.as_str())],
        &cloud,
        cut_at,
        Duration::from_secs(120),
    )
    .await;
    tally::report(
        "PostgreSQL unreachable while recording",
        "1 room, 1 session",
        "the database cut off for several seconds mid-session, then back",
        tally,
        took,
    );
}

/// `vigil demo --postgres URL`: the same clinic on PostgreSQL, two instances, the rooms split
/// between them, both printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_on_postgres_with_two_instances() {
    let url = vigil_cloud::pg_cluster::cluster().new_database();
    let mut demo = Proc::spawn(&bin("vigil"), &["demo", "--postgres", &url]);
    let api_a = demo.wait_for("cloud api", Duration::from_secs(120));
    let api_b = demo.wait_for("cloud b api", Duration::from_secs(30));
    let store = demo.wait_for("cloud store", Duration::from_secs(30));
    assert!(store.starts_with("postgres 127.0.0.1:"), "{store}");
    let token = demo.wait_for("api token", Duration::from_secs(30));
    let (a, b) = (
        Http::with_token(&api_a, &token),
        Http::with_token(&api_b, &token),
    );
    // Each instance holds two rooms, and either one reads the whole clinic.
    let text = eventually(
        Duration::from_secs(60),
        "rooms on both instances",
        || async {
            let (_, sites) = b.get("/api/v1/sites").await;
            let text = sites.to_string();
            (text.matches("\"demo-a\"").count() == 2 && text.matches("\"demo-b\"").count() == 2)
                .then_some(text)
        },
    )
    .await;
    let (_, from_a) = a.get("/api/v1/sites").await;
    assert_eq!(
        from_a.to_string().matches("\"online\":true").count(),
        4,
        "{text}"
    );
    demo.terminate();
}
