//! `vigil`: the launcher. `vigil demo` runs a whole clinic on this machine: the cloud
//! aggregator and two sites with two rooms each, every room an appliance recording simulated
//! patients back to back at 60 times real speed, each with its own data directory, its own
//! certificate from a private CA, and real QUIC to the cloud on loopback.
//!
//! The room screens and the rooms' APIs are served over HTTPS on loopback, each with a
//! certificate for `localhost` and `127.0.0.1` from the demo's CA; the CA's file is printed
//! (`demo ca:`) so a browser can be told to trust it.
//!
//! It prints where to look as `name: value` lines and stops cleanly on Ctrl-C.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vigil::ble_rig::{self, BleRig};
use vigil_edge::app::Appliance;
use vigil_edge::config::{EdgeConfig, MonitorConfig, SourceConfig};
use vigil_edge::recorder::{
    NewPatient, NewSession, OrderInput, RiskScreenInput, ScreeningAnswerInput, SessionEvent,
    StopSession,
};
use vigil_hardware::ble::simulated::{self, SimMonitor, SimulateOptions};
use vigil_hardware::sim::Scenario;
use vigil_shared::clinical::checkpoints::{Checkpoint, SedationScale};
use vigil_shared::doc::{DoseAction, Protocol};
use vigil_shared::vitals::Channel;

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Vigil launcher")]
struct Cli {
    /// Log as JSON lines instead of readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a demo clinic: two sites, two rooms each, simulated patients.
    Demo {
        /// How much faster than real time the simulated rooms run.
        #[arg(long, default_value_t = 60.0)]
        time_factor: f64,
        /// Run the rooms' monitors as simulated Bluetooth peripherals on a simulated BlueZ,
        /// read by the appliances' real Bluetooth collector, at real time (needs dbus-daemon
        /// and `pip install bluezoo==1.0.2`).
        #[arg(long)]
        ble: bool,
        /// Keep the clinic's cloud data in this PostgreSQL database
        /// (`postgres://user:password@host:port/database`) and run two cloud instances on it,
        /// the rooms split between them, instead of one instance on a SQLite file.
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Run a fault-injecting UDP relay in front of a cloud's sync port until Ctrl-C or
    /// SIGTERM. Point appliances' `cloud.addr` at the address it prints as `relay:`.
    Relay {
        /// The real cloud sync (QUIC) address to forward to.
        #[arg(long)]
        upstream: std::net::SocketAddr,
        /// Where appliances send; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Faults over time, e.g. "0s ok; 5s cut; 10s ok; 15s loss=20% jitter=200ms; 60s ok"
        /// or "flap 5s 5s" (up 5 s, cut 5 s, repeating). Without it the link is clean.
        #[arg(long)]
        timeline: Option<vigil::relay::Timeline>,
        /// Seed of the random loss, jitter, duplication and reordering.
        #[arg(long, default_value_t = vigil::relay::DEFAULT_SEED)]
        seed: u64,
    },
    /// Write RELIABILITY.md from the rows the scenario tests appended to a file
    /// (`VIGIL_RELIABILITY_OUT`); `just reliability` runs the tests and this.
    ReliabilityTable {
        /// The rows file the tests wrote.
        #[arg(long)]
        rows: std::path::PathBuf,
        /// Where to write the table.
        #[arg(long, default_value = "RELIABILITY.md")]
        out: std::path::PathBuf,
        /// A line saying when, where and from which commit the rows were produced.
        #[arg(long, default_value = "")]
        produced: String,
    },
}

/// `(id, name, region, time zone)`.
const SITES: [(&str, &str, &str, &str); 2] = [
    ("austin", "Austin, TX", "central", "America/Chicago"),
    ("florida", "Florida", "southeast", "America/New_York"),
];
const ROOMS: [&str; 2] = ["1", "2"];
const NAMES: [(&str, &str); 6] = [
    ("Maria", "Alvarez"),
    ("James", "Okafor"),
    ("Linh", "Tran"),
    ("Robert", "Hale"),
    ("Aisha", "Bello"),
    ("Daniel", "Kowalski"),
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    vigil_edge::init_logging(cli.log_json);
    // The simulated BlueZ comes first: its bus goes into this process's environment, which
    // must happen before the runtime starts its threads.
    let rig = match &cli.command {
        Command::Demo { ble: true, .. } => Some(demo_ble_rig()?),
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Demo {
            time_factor,
            postgres,
            ..
        } => runtime.block_on(demo(time_factor, rig.as_ref(), postgres.as_deref())),
        Command::Relay {
            upstream,
            listen,
            timeline,
            seed,
        } => runtime.block_on(relay(listen, upstream, timeline, seed)),
        Command::ReliabilityTable {
            rows,
            out,
            produced,
        } => reliability_table(&rows, &out, &produced),
    }
}

/// Renders the scenario tests' rows into RELIABILITY.md. Refuses an empty run: a table with
/// no rows would claim nothing was lost in a run that did not happen.
fn reliability_table(
    rows: &std::path::Path,
    out: &std::path::Path,
    produced: &str,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(rows)
        .with_context(|| format!("cannot read reliability rows {}", rows.display()))?;
    let rows = vigil::reliability::read_rows(&text)?;
    anyhow::ensure!(
        !rows.is_empty(),
        "no reliability rows: did the scenario tests run?"
    );
    std::fs::write(out, vigil::reliability::render(&rows, produced))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("reliability rows: {}", rows.len());
    println!("reliability table: {}", out.display());
    Ok(())
}

/// Runs the fault-injecting relay until Ctrl-C or SIGTERM, then prints its counters.
async fn relay(
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    timeline: Option<vigil::relay::Timeline>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let relay = vigil::relay::Relay::start_with_seed(listen, upstream, seed)
        .await
        .with_context(|| format!("cannot listen for the relay on {listen}"))?;
    println!("relay: {}", relay.local_addr());
    println!("relay upstream: {upstream}");
    println!("relay seed: {seed}");
    if let Some(timeline) = timeline {
        println!("relay timeline: {timeline}");
        relay.run_timeline(timeline);
    }
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
        _ = term.recv() => {}
    }
    let stats = relay.stats();
    relay.shutdown().await;
    println!("relay stats: {stats}");
    Ok(())
}

/// A random token for the demo's API, from the kernel's random source.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0_u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The demo clinic's CA (in `dir/pki`, with a server certificate for this machine) and the
/// service token of its API.
fn demo_pki(dir: &std::path::Path) -> anyhow::Result<(std::path::PathBuf, String)> {
    let pki = dir.join("pki");
    let ca = vigil_cloud::pki::Ca::init(&pki, "Vigil Demo Clinic CA")?;
    ca.issue_server(&["localhost".to_owned()], &["127.0.0.1".parse()?], "server")?;
    Ok((pki, random_token()?))
}

/// Starts a cloud instance: on SQLite in `dir/cloud-NAME`, or on the PostgreSQL database
/// `postgres` as instance `NAME`.
async fn start_cloud(
    dir: &std::path::Path,
    pki: &std::path::Path,
    token: &str,
    name: &str,
    postgres: Option<&str>,
) -> anyhow::Result<vigil_cloud::app::Cloud> {
    let store = match postgres {
        Some(url) => vigil_cloud::config::StoreConfig {
            kind: vigil_cloud::config::StoreKind::Postgres,
            url: Some(url.to_owned()),
            ..Default::default()
        },
        None => vigil_cloud::config::StoreConfig::default(),
    };
    let config = vigil_cloud::config::CloudConfig {
        data_dir: dir.join(format!("cloud-{name}")),
        quic_bind: "127.0.0.1:0".parse()?,
        http_bind: "127.0.0.1:0".parse()?,
        api_token: token.to_owned(),
        // The demo's cloud issues certificates: `vigil-cloud enrol` works against it.
        pki: vigil_cloud::config::PkiFiles {
            ca_dir: Some(pki.to_owned()),
            ..vigil_cloud::config::PkiFiles::in_dir(pki)
        },
        sites: SITES
            .iter()
            .map(|(id, name, region, tz)| vigil_cloud::config::SiteInfo {
                id: (*id).into(),
                name: (*name).into(),
                region: (*region).into(),
                rooms: ROOMS.iter().map(|r| (*r).into()).collect(),
                tz: Some((*tz).into()),
            })
            .collect(),
        http: vigil_cloud::config::HttpConfig::default(),
        store,
        sync: Default::default(),
        instance: Some(format!("demo-{name}")),
    };
    config.validate(std::path::Path::new("(demo)"))?;
    Ok(vigil_cloud::app::Cloud::start(config).await?)
}

/// The demo's dashboard users, one per role (and a regional manager per region), with random
/// passwords: `(role, user, password)`.
fn demo_users(cloud: &vigil_cloud::app::Cloud) -> anyhow::Result<Vec<(String, String, String)>> {
    use vigil_cloud::auth::{NewUser, Role, add_user};
    let sites: Vec<vigil_cloud::config::SiteInfo> = SITES
        .iter()
        .map(|(id, name, region, tz)| vigil_cloud::config::SiteInfo {
            id: (*id).into(),
            name: (*name).into(),
            region: (*region).into(),
            rooms: ROOMS.iter().map(|r| (*r).into()).collect(),
            tz: Some((*tz).into()),
        })
        .collect();
    let users = [
        ("admin", Role::Admin, None, None),
        ("rm-central", Role::RegionalManager, Some("central"), None),
        (
            "rm-southeast",
            Role::RegionalManager,
            Some("southeast"),
            None,
        ),
        ("nurse-austin", Role::Clinician, None, Some("austin")),
    ];
    let mut out = Vec::new();
    for (user, role, region, site) in users {
        let password = random_token()?[..16].to_owned();
        let new = NewUser {
            username: user,
            role,
            region,
            site,
            password: &password,
        };
        // A demo on a PostgreSQL database of an earlier run has its users: new passwords.
        if cloud.store.user_by_name(user)?.is_some() {
            let hash = vigil_cloud::auth::hash_password(&password)?;
            cloud.store.set_password(user, &hash)?;
        } else {
            add_user(&cloud.store, &sites, &new, vigil_cloud::clock::now_us())
                .with_context(|| format!("cannot create demo user {user}"))?;
        }
        out.push((role.name().replace('_', "-"), user.to_owned(), password));
    }
    Ok(out)
}

/// The room left to people: no scripted sessions run there, so the room screen can run one
/// from check-in to discharge.
const SCREEN_ROOM: &str = "austin-2";

/// The demo's room-screen staff at every site: `(id, name, role)`.
const DEMO_STAFF: [(&str, &str, &str); 3] = [
    ("nurse-ana", "Ana Ruiz", "nurse"),
    ("dr-kim", "Dr Sam Kim", "clinician"),
    ("desk-lee", "Lee Park", "front_desk"),
];

/// Adds the demo staff to each site's configuration with random six-digit PINs, before any
/// appliance connects (so the first sync brings the list): `(site, name, role, pin)`.
fn demo_staff(
    cloud: &vigil_cloud::app::Cloud,
) -> anyhow::Result<Vec<(String, String, String, String)>> {
    use vigil_cloud::staff::{NewStaff, set_staff_member};
    let mut out = Vec::new();
    for (site, _, _, _) in SITES {
        for (id, name, role) in DEMO_STAFF {
            let n = u32::from_str_radix(&random_token()?[..8], 16)?;
            let pin = format!("{:06}", n % 1_000_000);
            let new = NewStaff {
                id,
                name,
                role,
                pin: &pin,
            };
            set_staff_member(&cloud.store, site, &new, vigil_cloud::clock::now_us())
                .with_context(|| format!("cannot add demo staff {id} at {site}"))?;
            out.push((site.to_owned(), name.to_owned(), role.to_owned(), pin));
        }
    }
    Ok(out)
}

/// Adapters per room in the Bluetooth demo: the appliance's, then one per monitor.
const BLE_ADAPTERS_PER_ROOM: usize = 1 + SimMonitor::ALL.len();

/// Starts the simulated BlueZ for `vigil demo --ble` and points this process's D-Bus at it.
fn demo_ble_rig() -> anyhow::Result<BleRig> {
    let rig = BleRig::start(SITES.len() * ROOMS.len() * BLE_ADAPTERS_PER_ROOM)
        .context("cannot start the simulated Bluetooth")?;
    #[allow(unsafe_code)]
    // SAFETY: called from `main` before the async runtime exists. The only other threads are
    // the rig's pipe readers, which never read the environment.
    unsafe {
        std::env::set_var(ble_rig::SYSTEM_BUS_ENV, rig.bus_address());
    }
    println!("bluetooth bus: {}", rig.bus_address());
    Ok(rig)
}

/// Room `k`'s simulated monitors and the `ble` source that reads them.
async fn demo_ble_room(
    k: usize,
    site: &str,
    room: &str,
    seed: u64,
) -> anyhow::Result<(SourceConfig, Vec<simulated::Running>)> {
    let first = k * BLE_ADAPTERS_PER_ROOM;
    let mut running = Vec::new();
    let mut monitors = Vec::new();
    for (i, m) in SimMonitor::ALL.into_iter().enumerate() {
        let hci = first + 1 + i;
        let opts = SimulateOptions {
            monitor: m,
            adapter: Some(format!("hci{hci}")),
            name: format!("Vigil {site}-{room} {}", m.device()),
            seed,
            scenario: Scenario::Baseline,
            nibp_interval_s: 180,
        };
        running.push(
            simulated::start(&opts)
                .await
                .with_context(|| format!("cannot start the simulated {}", m.device()))?,
        );
        monitors.push(MonitorConfig {
            device: m.device().into(),
            address: Some(ble_rig::adapter_address(hci)),
            name: None,
            measures: m.measures().to_vec(),
            silence_s: None,
        });
    }
    let source = SourceConfig::Ble {
        adapter: Some(format!("hci{first}")),
        monitors,
    };
    Ok((source, running))
}

async fn demo(
    time_factor: f64,
    ble: Option<&BleRig>,
    postgres: Option<&str>,
) -> anyhow::Result<()> {
    // Bluetooth monitors run at the speed of the world.
    let time_factor = if ble.is_some() { 1.0 } else { time_factor };
    let mut monitors = Vec::new();
    let dir = tempfile::Builder::new()
        .prefix("vigil-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    println!("data dir: {}", dir.path().display());
    let (pki, token) = demo_pki(dir.path())?;
    // On PostgreSQL, two instances share the clinic: the sites' rooms each try their own
    // first and the other when it is gone.
    let mut clouds = vec![start_cloud(dir.path(), &pki, &token, "a", postgres).await?];
    if postgres.is_some() {
        clouds.push(start_cloud(dir.path(), &pki, &token, "b", postgres).await?);
    }
    let cloud = &clouds[0];
    println!("cloud api: {}", cloud.api_url());
    if let Some(b) = clouds.get(1) {
        println!("cloud b api: {}", b.api_url());
        println!("cloud b sync: {}", b.sync_addr);
    }
    println!("cloud store: {}", cloud.store.describe());
    println!("api token: {token}");
    println!("dashboard: {}/", cloud.api_url());
    // The store blocks (PostgreSQL's client most of all): off the async threads.
    let (users, staff) =
        tokio::task::block_in_place(|| anyhow::Ok((demo_users(cloud)?, demo_staff(cloud)?)))?;
    for (role, user, password) in users {
        println!("login: {role} {user} {password}");
    }
    for (site, name, role, pin) in staff {
        println!("{site} staff: {name} ({role}) PIN {pin}");
    }
    let ca = vigil_cloud::pki::Ca::load(&pki)?;
    println!(
        "demo ca: {}",
        pki.join(vigil_cloud::pki::CA_CERT_FILE).display()
    );
    let mut appliances = Vec::new();
    // The rooms of a site are peers: each calls the ones started before it.
    let mut site_peers: std::collections::HashMap<&str, Vec<std::net::SocketAddr>> =
        std::collections::HashMap::new();
    for (s, (site, _, _, _)) in SITES.iter().enumerate() {
        for (r, room) in ROOMS.iter().enumerate() {
            let cert = ca.issue_appliance(&(*site).into(), &(*room).into())?;
            let screen = ca.issue_screen(
                &(*site).into(),
                &(*room).into(),
                &["localhost".to_owned()],
                &[std::net::Ipv4Addr::LOCALHOST.into()],
            )?;
            let n = (s * ROOMS.len() + r) as u64;
            let source = if ble.is_some() {
                let (source, running) =
                    demo_ble_room(s * ROOMS.len() + r, site, room, 1_000 + n).await?;
                monitors.extend(running);
                source
            } else {
                SourceConfig::Simulator {
                    seed: 1_000 + n,
                    scenario: Scenario::Baseline,
                    ecg_hz: 250,
                    time_factor,
                }
            };
            let config = EdgeConfig {
                site: (*site).into(),
                room: (*room).into(),
                data_dir: dir.path().join(format!("{site}-{room}")),
                http_bind: "127.0.0.1:0".parse()?,
                http_hosts: Vec::new(),
                http_tls: Some(vigil_edge::config::HttpTls {
                    cert: screen.cert_path.clone(),
                    key: screen.key_path.clone(),
                }),
                chunk_period_s: 10,
                group_commit_ms: 1_000,
                retention_days: 30,
                max_db_mb: None,
                clock_offset_s: 0,
                source,
                peer_bind: Some("127.0.0.1:0".parse()?),
                peers: site_peers
                    .get(site)
                    .map(|a| a.iter().map(|&a| a.into()).collect())
                    .unwrap_or_default(),
                mdns: false,
                mdns_interface: None,
                cloud: Some(vigil_edge::sync::CloudSettings {
                    addr: None,
                    addrs: (0..clouds.len())
                        .map(|k| clouds[(s + k) % clouds.len()].sync_addr.into())
                        .collect(),
                    server_name: "localhost".into(),
                    ca_cert: pki.join("ca.pem"),
                    cert: cert.cert_path.clone(),
                    key: cert.key_path.clone(),
                }),
            };
            config.validate(std::path::Path::new("(demo)"))?;
            let appliance = Appliance::start(config).await?;
            println!("{site}-{room} api: {}", appliance.api_url());
            println!("{site}-{room} api token: {}", appliance.api_token);
            println!("{site}-{room} screen: {}/screen", appliance.api_url());
            println!("{site}-{room} station: {}/station", appliance.api_url());
            if let Some(addr) = appliance.peer_addr {
                site_peers.entry(site).or_default().push(addr);
            }
            appliances.push((format!("{site}-{room}"), n, appliance));
        }
    }
    if ble.is_some() {
        println!("demo: monitors on simulated Bluetooth, real time; Ctrl-C stops it");
    } else {
        println!("demo: running at {time_factor}x real time; Ctrl-C stops it");
        println!("demo: {SCREEN_ROOM} runs no scripted sessions; run one on its screen");
    }
    let appliances: Vec<_> = appliances
        .into_iter()
        .map(|(name, n, a)| (name, n, std::sync::Arc::new(a)))
        .collect();
    let mut drivers = Vec::new();
    for (name, n, appliance) in &appliances {
        if name == SCREEN_ROOM {
            continue;
        }
        let (name, n, appliance) = (name.clone(), *n, appliance.clone());
        drivers.push(tokio::spawn(async move {
            if let Err(e) = drive_room(&appliance, n, time_factor).await {
                tracing::error!(room = %name, error = %e, "demo room stopped");
            }
        }));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
        _ = term.recv() => {}
    }
    println!("demo: stopping");
    for d in drivers {
        d.abort();
    }
    for (_, _, appliance) in appliances {
        match std::sync::Arc::try_unwrap(appliance) {
            Ok(a) => a.shutdown().await,
            Err(_) => tracing::warn!("an appliance is still in use at shutdown"),
        }
    }
    drop(monitors);
    for cloud in clouds {
        cloud.shutdown().await;
    }
    Ok(())
}

/// Sleeps for `sim_s` seconds of the room's simulated clock.
async fn sim_sleep(sim_s: f64, time_factor: f64) {
    tokio::time::sleep(Duration::from_secs_f64(sim_s / time_factor)).await;
}

/// A demo patient's PHQ-9, item by item, totalling `total` (at most 24), with no thoughts of
/// self-harm (item 9 is 0).
fn phq9_items(total: u64) -> Vec<i64> {
    let total = total.min(24) as i64;
    (0..9)
        .map(|i| if i == 8 { 0 } else { (total + 7 - i) / 8 })
        .collect()
}

/// Runs sessions back to back in one room, as a nurse would through the API.
async fn drive_room(a: &Appliance, n: u64, time_factor: f64) -> anyhow::Result<()> {
    let recorder = a.recorder();
    for i in 0_u64.. {
        let (given, family) = NAMES[((n + i * 4) % NAMES.len() as u64) as usize];
        let patient = recorder
            .create_patient(NewPatient {
                given_name: given.into(),
                family_name: family.into(),
                birth_date: format!("19{}-0{}-1{}", 60 + (n + i) % 40, 1 + i % 9, n % 10),
                sex: if (n + i).is_multiple_of(2) {
                    "female"
                } else {
                    "male"
                }
                .into(),
                phone: None,
                screening: Default::default(),
                medications: vec!["sertraline".into()],
                course: Default::default(),
            })
            .await?;
        let scenario = Scenario::ALL[((n + i) % Scenario::ALL.len() as u64) as usize];
        let planned_minutes = 40 + (n + i) % 16;
        let weight_kg = 60.0 + ((n * 7 + i * 3) % 35) as f64;
        let new = NewSession {
            patient_id: patient.id.clone(),
            protocol: Protocol {
                drug: "ketamine".into(),
                route: "iv".into(),
                dose_mg_per_kg: 0.5,
                weight_kg,
                planned_minutes,
            },
            by: "demo-nurse".into(),
            scenario: Some(scenario),
            order: Some(OrderInput {
                prescriber: "dr-kim".into(),
                indication: "depression".into(),
                rate_min_mg_per_h: None,
                rate_max_mg_per_h: None,
            }),
            risk_screen: Some(RiskScreenInput {
                phq9_items: phq9_items(14 + i % 8),
                cssrs: vec![false; 6],
            }),
            screening: ScreeningAnswerInput::all_no(),
            flag_overrides: vec![],
        };
        let id = recorder.start_session(new, None).await?.id;
        let rate = 0.5 * weight_kg * 60.0 / planned_minutes as f64;
        let event = |e: SessionEvent| recorder.add_event(id.clone(), e);
        // A checkpoint as the nurse records it: the room's last cuff reading and the patient
        // responding readily (MOAA/S 5), or nothing when the cuff has not read yet.
        let checkpoint = |checkpoint: Checkpoint| {
            a.latest(Channel::Nibp).map(|bp| SessionEvent::Checkpoint {
                checkpoint: checkpoint.code().into(),
                systolic: i64::from(bp.v[0]),
                diastolic: i64::from(bp.v[1]),
                sedation_scale: SedationScale::Moaas.code().into(),
                sedation: 5,
                by: "demo-nurse".into(),
            })
        };
        if let Some(c) = checkpoint(Checkpoint::BeforeStart) {
            event(c).await?;
        }
        event(SessionEvent::Score {
            instrument: "phq9".into(),
            phase: "pre".into(),
            value: phq9_items(14 + i % 8).iter().sum(),
            by: "demo-nurse".into(),
        })
        .await?;
        event(SessionEvent::Dose {
            action: DoseAction::Start,
            rate_mg_per_h: Some(rate),
            override_reason: None,
            by: "demo-nurse".into(),
        })
        .await?;
        sim_sleep(15.0 * 60.0, time_factor).await;
        event(SessionEvent::Observation {
            effect: "dissociation".into(),
            severity: "mild".into(),
            by: "demo-nurse".into(),
        })
        .await?;
        sim_sleep(25.0 * 60.0, time_factor).await;
        if let Some(c) = checkpoint(Checkpoint::At40Min) {
            event(c).await?;
        }
        sim_sleep((planned_minutes as f64 - 40.0) * 60.0, time_factor).await;
        event(SessionEvent::Dose {
            action: DoseAction::Stop,
            rate_mg_per_h: Some(0.0),
            override_reason: None,
            by: "demo-nurse".into(),
        })
        .await?;
        sim_sleep(10.0 * 60.0, time_factor).await;
        event(SessionEvent::Score {
            instrument: "cadss".into(),
            phase: "post".into(),
            value: (i % 5) as i64,
            by: "demo-nurse".into(),
        })
        .await?;
        // The site's observation time after the stop, then a blood pressure before discharge
        // and the discharge through its gate; a patient not ready yet is observed longer.
        sim_sleep(20.0 * 60.0, time_factor).await;
        for _ in 0..6 {
            if let Some(c) = checkpoint(Checkpoint::BeforeDischarge) {
                event(c).await?;
            }
            let discharge = event(SessionEvent::Discharge {
                aldrete_items: vec![2, 2, 2, 2, 2],
                escort: "Alex Rivera".into(),
                escort_phone: "+1 512 555 0142".into(),
                escort_relationship: "partner".into(),
                no_driving_ack: true,
                cadss_override_reason: None,
                by: "demo-nurse".into(),
            })
            .await;
            match discharge {
                Ok(_) => break,
                Err(e) => {
                    tracing::info!(session = %id, reason = %e, "demo patient not ready to go home yet")
                }
            }
            sim_sleep(10.0 * 60.0, time_factor).await;
        }
        let stop = StopSession {
            by: "demo-nurse".into(),
            aborted: false,
            disposition: None,
            note: String::new(),
        };
        recorder.stop_session(id.clone(), stop).await?;
        // Turnover between patients.
        sim_sleep(5.0 * 60.0, time_factor).await;
    }
    Ok(())
}
