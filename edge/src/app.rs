//! The appliance assembled: the recorder thread (source polling, group commits, API commands)
//! and the HTTP server (HTTPS with `[http_tls]`, see [`crate::http_server`]), started from an
//! [`EdgeConfig`] and stopped cleanly.
//!
//! The recorder thread is the only writer of the database. It wakes every
//! [`POLL_INTERVAL`] to pull samples from the source, and every `group_commit_ms` to commit;
//! API commands wake it in between. Recording never waits on the network or the API: commands
//! are queued in a bounded channel and answered when durable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vigil_hardware::ble::collector::{BleCollector, BleError, Clock};
use vigil_hardware::sim::{PatientParams, Scenario, SimulatedSource, session_seed};
use vigil_hardware::source::VitalsSource;
use vigil_shared::advisory::Thresholds;

use crate::access::{self, AllowedHosts};
use crate::audit::AuditLog;
use crate::clock::{ScaledClock, wall_now_us};
use crate::config::{EdgeConfig, SourceConfig};
use crate::http_server::{self, ServerSettings, Transport};
use crate::peer::{self, PeerContext, Peers};
use crate::recorder::{Command, Handle, Recorder, RecorderConfig, RecorderError};
use crate::station::{self, Station};
use crate::store;
use crate::sync::{DbAccess, SyncClient, SyncStatus};
use crate::web::{self, ApiState, Security, Status};

/// How often the recorder pulls from its source. Short enough that live values on the room
/// screen trail the monitor by well under a second.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How often the recorder deletes sessions past retention (wall time).
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// API commands queued for the recorder before the API answers 503. The recorder answers a
/// command in milliseconds; a queue this long means it is stuck.
pub const COMMAND_QUEUE: usize = 64;

/// The database file name inside the data directory.
pub const DB_FILE: &str = "vigil-edge.db";

/// Errors starting the appliance.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened or resumed.
    #[error("cannot open the appliance database {path}: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// Why.
        source: RecorderError,
    },
    /// Plain HTTP on an address other machines reach (the config was not validated).
    #[error("refusing to serve plain HTTP: http_bind {problem}")]
    PlainHttp {
        /// What is wrong and how to configure TLS.
        problem: String,
    },
    /// The room screen's certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] http_server::TlsError),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The sync client could not be set up (a certificate file, the socket).
    #[error(transparent)]
    Sync(#[from] crate::sync::SetupError),
    /// The recorder thread could not be started.
    #[error("cannot start the recorder thread: {0}")]
    Thread(std::io::Error),
    /// The local API token could not be read or made.
    #[error("cannot read or make the local API token in {path}: {source}")]
    Token {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The Bluetooth collector could not be started.
    #[error(transparent)]
    Ble(#[from] BleError),
}

/// The room's vitals source, as configured.
enum RoomSource {
    Simulator {
        sim: SimulatedSource,
        room_seed: u64,
        default_scenario: Scenario,
        ecg: vigil_hardware::sim::EcgRate,
    },
    /// The room's monitors over Bluetooth.
    Ble(BleCollector),
    None,
}

impl RoomSource {
    fn from_config(config: &SourceConfig, clock: ScaledClock) -> Result<RoomSource, StartError> {
        if let Some(settings) = config.collector_settings() {
            let clock: Clock = Arc::new(move || clock.now_us());
            return Ok(RoomSource::Ble(BleCollector::start(settings, clock)?));
        }
        Ok(match config {
            SourceConfig::Simulator { seed, scenario, .. } => RoomSource::Simulator {
                sim: SimulatedSource::new(),
                room_seed: *seed,
                default_scenario: *scenario,
                ecg: config.ecg_rate(),
            },
            SourceConfig::Ble { .. } | SourceConfig::None => RoomSource::None,
        })
    }

    fn describe(&self) -> String {
        match self {
            RoomSource::Simulator { sim, .. } => sim.describe(),
            RoomSource::Ble(ble) => ble.describe(),
            RoomSource::None => "none".into(),
        }
    }

    fn poll(&mut self, now_us: i64) -> Vec<vigil_hardware::source::SourceEvent> {
        match self {
            RoomSource::Simulator { sim, .. } => sim.poll(now_us),
            RoomSource::Ble(ble) => ble.poll(now_us),
            RoomSource::None => Vec::new(),
        }
    }

    /// A session started (or resumed at `from_us`): simulated monitors get a virtual patient.
    fn session_started(
        &mut self,
        session_id: &str,
        origin_us: i64,
        from_us: i64,
        scenario: Option<&str>,
    ) {
        if let RoomSource::Simulator {
            sim,
            room_seed,
            default_scenario,
            ecg,
        } = self
        {
            let scenario = scenario
                .and_then(|s| s.parse().ok())
                .unwrap_or(*default_scenario);
            let mut params =
                PatientParams::new(session_seed(*room_seed, session_id), scenario, origin_us);
            params.ecg_hz = *ecg;
            if let Err(e) = sim.attach(params, from_us) {
                tracing::error!(error = %e, "cannot attach the simulated patient");
            }
        }
    }

    fn session_stopped(&mut self) {
        if let RoomSource::Simulator { sim, .. } = self {
            sim.detach();
        }
    }
}

/// A running appliance.
#[derive(Debug)]
pub struct Appliance {
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// The local API token (also in the data directory's `api-token` file).
    pub api_token: String,
    /// Whether the API and the screen are served over TLS.
    pub transport: Transport,
    /// The database file.
    pub db_path: PathBuf,
    /// Where this appliance listens for its site's peers, when it does.
    pub peer_addr: Option<SocketAddr>,
    peers: Option<Arc<Peers>>,
    recorder: Handle,
    recorder_thread: Option<JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    status: Arc<Mutex<Status>>,
}

impl Appliance {
    /// Opens the database, resumes any session in progress, starts the recorder thread and the
    /// HTTP server. Must be called inside a tokio runtime.
    pub async fn start(config: EdgeConfig) -> Result<Appliance, StartError> {
        // The network side is checked before anything is opened: a refused start leaves no
        // trace. In-process callers may skip `EdgeConfig::validate`, so the rule is kept here too.
        let tls = match &config.http_tls {
            Some(files) => Some(http_server::server_config(files)?),
            None => {
                if let Some(problem) =
                    crate::config::plain_http_refusal(config.http_bind, &config.site, &config.room)
                {
                    return Err(StartError::PlainHttp { problem });
                }
                None
            }
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let db_path = config.data_dir.join(DB_FILE);
        let last_restart = restart_reason(&config.data_dir);
        let started = Instant::now();
        let db_err = |source| StartError::Database {
            path: db_path.clone(),
            source,
        };
        let rcfg = RecorderConfig {
            site: config.site.clone(),
            room: config.room.clone(),
            chunk_period_us: i64::try_from(config.chunk_period_s).unwrap_or(10) * 1_000_000,
            thresholds: Thresholds::default(),
            max_db_bytes: config.max_db_mb.map(|mb| mb.saturating_mul(1 << 20)),
            expected_channels: config.source.expected_channels(),
        };
        let (recorder, resumed) = Recorder::open(&db_path, rcfg).map_err(db_err)?;

        // The clock continues the timeline stored in the database. `wall` is this appliance's
        // system clock, shifted when a test asks for a wrong one.
        let offset_us = config.clock_offset_s.saturating_mul(1_000_000);
        let wall = wall_now_us().saturating_add(offset_us);
        let stored = store::meta_get(recorder.connection(), "clock")
            .map_err(|e| db_err(e.into()))?
            .and_then(|s| ScaledClock::decode(&s));
        let clock =
            ScaledClock::resume(stored, wall, config.source.time_factor()).with_offset(offset_us);
        store::meta_set(recorder.connection(), "clock", &clock.encode())
            .map_err(|e| db_err(e.into()))?;

        let mut source = RoomSource::from_config(&config.source, clock)?;
        if let Some(r) = &resumed {
            source.session_started(&r.id, r.started_us, clock.at(wall), r.scenario.as_deref());
        }

        let mut tasks = Vec::new();
        let status = Arc::new(Mutex::new(Status {
            site: config.site.clone(),
            room: config.room.clone(),
            now_us: clock.at(wall),
            time_factor: clock.factor,
            source: source.describe(),
            recorder: recorder.status(),
        }));
        let appliance_status = status.clone();
        let sync_status = match &config.cloud {
            Some(settings) => {
                let status = Arc::new(Mutex::new(SyncStatus::default()));
                let client = SyncClient::new(
                    settings.clone(),
                    db_path.clone(),
                    config.site.clone(),
                    config.room.clone(),
                    clock,
                    status.clone(),
                )?
                .with_reporter(reporter(
                    &db_path,
                    appliance_status,
                    started,
                    last_restart.clone(),
                    config.max_db_mb,
                ));
                tasks.push(tokio::spawn(Arc::new(client).run()));
                Some(status)
            }
            None => None,
        };
        let (commands, rx) = sync_channel(COMMAND_QUEUE);
        let group_commit = Duration::from_millis(config.group_commit_ms);
        let retention_us = i64::from(config.retention_days) * 86_400 * 1_000_000;
        let thread_status = status.clone();
        let station = Station::new(&config.site, &config.room, clock.now_us());
        let thread_station = station.clone();
        let recorder_thread = std::thread::Builder::new()
            .name(format!("recorder-{}-{}", config.site, config.room))
            .spawn(move || {
                run_recorder(
                    recorder,
                    source,
                    clock,
                    rx,
                    group_commit,
                    retention_us,
                    (thread_status, thread_station),
                )
            })
            .map_err(StartError::Thread)?;

        let listener = tokio::net::TcpListener::bind(config.http_bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.http_bind,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.http_bind,
            source,
        })?;
        let api_token =
            access::local_token(&config.data_dir).map_err(|source| StartError::Token {
                path: config.data_dir.clone(),
                source,
            })?;
        let audit = AuditLog::open(&db_path, clock).map_err(|e| db_err(e.into()))?;
        let pins = {
            let conn = audit.connection();
            crate::throttle::PinThrottle::load(&conn, Instant::now(), clock.now_us())
                .map_err(|e| db_err(store::StoreError::from_sqlite(e).into()))?
        };
        let security = Arc::new(Security {
            local_sha256: access::token_sha256(&api_token),
            sessions: access::ScreenSessions::default(),
            audit: Arc::new(audit),
            hosts: AllowedHosts::new(api_addr, &config.http_hosts),
            pins,
        });
        let recorder = Handle::new(commands);
        let room_status = status.clone();
        tasks.push(tokio::spawn(station::publish_loop(
            station.clone(),
            db_path.clone(),
            move || {
                let s = room_status.lock().ok()?;
                Some(station::Snapshot {
                    room: s.room.clone(),
                    now_us: s.now_us,
                    recorder: s.recorder.clone(),
                })
            },
        )));
        let peers = match (&config.cloud, config.peer_settings()) {
            (Some(files), settings) if settings.enabled() => {
                let cx = PeerContext {
                    db: DbAccess::new(db_path.clone()),
                    clock,
                    station: station.clone(),
                    recorder: recorder.clone(),
                    audit: security.audit.clone(),
                };
                let me = peer::Appliance {
                    site: config.site.clone(),
                    room: config.room.clone(),
                };
                let (peers, peer_tasks) = Peers::start(&settings, files, me, cx).await?;
                tasks.extend(peer_tasks);
                Some(peers)
            }
            _ => None,
        };
        let state = ApiState {
            recorder: recorder.clone(),
            db_path: db_path.clone(),
            status: status.clone(),
            sync: sync_status,
            security: security.clone(),
            station,
            peers: peers.clone(),
        };
        let app = web::router(state);
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let settings = ServerSettings::new(tls);
        let transport = settings.transport();
        let server = tokio::spawn(http_server::serve(listener, app, settings, async move {
            let _ = shutdown_rx.await;
        }));
        tracing::info!(site = %config.site, room = %config.room, api = %api_addr, tls = transport.is_tls(), db = %db_path.display(), "appliance started");
        Ok(Appliance {
            api_addr,
            api_token,
            transport,
            db_path,
            peer_addr: peers.as_ref().and_then(|p| p.listen_addr()),
            peers,
            recorder,
            recorder_thread: Some(recorder_thread),
            server,
            tasks,
            shutdown: Some(shutdown_tx),
            status,
        })
    }

    /// The room's latest reading of `channel` (live values, whether or not a session records).
    pub fn latest(
        &self,
        channel: vigil_shared::vitals::Channel,
    ) -> Option<vigil_shared::vitals::Sample> {
        self.status
            .lock()
            .ok()?
            .recorder
            .last
            .get(&channel)
            .cloned()
    }

    /// The recorder thread's handle, for in-process callers such as the demo: the same
    /// commands the HTTP API sends.
    pub fn recorder(&self) -> &Handle {
        &self.recorder
    }

    /// Reads the appliance clock as the recorder loop last set it, µs: it advances on every
    /// poll while the loop runs, so a value that stops moving means a wedged recorder (what
    /// the systemd watchdog is fed from).
    pub fn recorder_clock(&self) -> impl Fn() -> i64 + Send + 'static {
        let status = self.status.clone();
        move || status.lock().map_or(0, |s| s.now_us)
    }

    /// The base URL of the local API and the screen: `https://…` under TLS. An appliance
    /// listening on every address is named by its loopback address, which its certificate
    /// always carries.
    pub fn api_url(&self) -> String {
        let scheme = if self.transport.is_tls() {
            "https"
        } else {
            "http"
        };
        let mut addr = self.api_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("{scheme}://{addr}")
    }

    /// Stops the HTTP server, commits what the recorder holds and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(peers) = self.peers.take() {
            peers.stop();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.server).await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.recorder.shutdown();
        if let Some(handle) = self.recorder_thread.take() {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        if let Some(dir) = self.db_path.parent() {
            let _ = std::fs::remove_file(dir.join(RUNNING_MARKER));
        }
    }
}

/// A file in the data directory while the appliance runs; found at start, it means the last
/// run did not shut down cleanly.
const RUNNING_MARKER: &str = "running";

/// Why this run started, for the fleet page; leaves the marker for the next start.
fn restart_reason(data_dir: &std::path::Path) -> String {
    let marker = data_dir.join(RUNNING_MARKER);
    let reason = if marker.exists() {
        "the previous run ended without shutting down (a crash, a kill, the watchdog or a power cut)"
    } else if data_dir.join(DB_FILE).exists() {
        "started after a clean shutdown"
    } else {
        "first start"
    };
    let _ = std::fs::write(&marker, b"");
    reason.to_owned()
}

/// The health report the sync client sends a protocol-2 cloud: disk and database sizes, the
/// retention state, the monitors, uptime and why this run started.
fn reporter(
    db_path: &std::path::Path,
    status: Arc<Mutex<Status>>,
    started: Instant,
    last_restart: String,
    max_db_mb: Option<u64>,
) -> crate::sync::Reporter {
    let db_path = db_path.to_owned();
    Arc::new(move |now_us| {
        let dir = db_path.parent().unwrap_or(std::path::Path::new("."));
        let (used, total) = rustix::fs::statvfs(dir).map_or((0, 0), |v| {
            let total = v.f_blocks.saturating_mul(v.f_frsize);
            let free = v.f_bavail.saturating_mul(v.f_frsize);
            (total.saturating_sub(free), total)
        });
        let db_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut p = db_path.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum::<u64>();
        let (monitors, disk_full, last_error) = status
            .lock()
            .map(|s| {
                let monitors = s
                    .recorder
                    .devices
                    .iter()
                    .map(|(name, state)| vigil_shared::fleet::MonitorReport {
                        name: name.clone(),
                        state: state.clone(),
                    })
                    .collect();
                (
                    monitors,
                    s.recorder.disk_full,
                    s.recorder.last_error.clone(),
                )
            })
            .unwrap_or_default();
        let cap = max_db_mb.map(|mb| mb.saturating_mul(1 << 20));
        let retention = if disk_full {
            format!(
                "disk full: {}",
                last_error.unwrap_or_else(|| "commits are failing".into())
            )
        } else if cap.is_some_and(|cap| db_bytes >= cap.saturating_mul(9) / 10) {
            "the database is at 90 % of its cap (max_db_mb)".to_owned()
        } else {
            "ok".to_owned()
        };
        vigil_shared::fleet::ApplianceReport {
            time_us: now_us,
            uptime_s: started.elapsed().as_secs(),
            last_restart: last_restart.clone(),
            disk_used_bytes: used,
            disk_total_bytes: total,
            db_bytes,
            retention,
            monitors,
            cert_not_after_us: None,
        }
    })
}

fn run_recorder(
    mut recorder: Recorder,
    mut source: RoomSource,
    clock: ScaledClock,
    commands: Receiver<Command>,
    group_commit: Duration,
    retention_us: i64,
    (status, station): (Arc<Mutex<Status>>, Arc<Station>),
) {
    let mut next_poll = Instant::now();
    let mut next_commit = Instant::now() + group_commit;
    let mut next_purge = Instant::now();
    loop {
        let wake = next_poll.min(next_commit);
        let timeout = wake.saturating_duration_since(Instant::now());
        match commands.recv_timeout(timeout) {
            Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(cmd) => handle_command(&mut recorder, &mut source, &clock, cmd),
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if now >= next_poll {
            let events = source.poll(clock.now_us());
            station.publish_own_ecg(ecg_of(&events), clock.now_us());
            recorder.ingest(events);
            next_poll = now + POLL_INTERVAL;
            // Live values for the room screen, fresher than the full snapshot below.
            if let Ok(mut s) = status.lock() {
                s.now_us = clock.now_us();
                s.recorder.last.clone_from(recorder.last_values());
            }
        }
        if now >= next_commit {
            // Errors are logged and shown on the status API by the recorder; it retries.
            let _ = recorder.commit(clock.now_us());
            // The audit entries the HTTP server wrote since, into the synced audit document.
            if let Err(e) = recorder.fold_audit(clock.now_us()) {
                tracing::warn!(error = %e, "folding audit entries failed; they stay pending and are retried");
            }
            next_commit = now + group_commit;
            if let Ok(mut s) = status.lock() {
                s.now_us = clock.now_us();
                s.source = source.describe();
                s.recorder = recorder.status();
            }
        }
        if now >= next_purge {
            if let Err(e) = recorder.purge(clock.now_us(), retention_us) {
                tracing::warn!(error = %e, "retention pass failed; retrying later");
            }
            next_purge = now + PURGE_INTERVAL;
        }
    }
    let events = source.poll(clock.now_us());
    recorder.ingest(events);
    if let Err(e) = recorder.commit(clock.now_us()) {
        tracing::error!(error = %e, "final commit at shutdown failed");
    }
    tracing::info!("recorder stopped");
}

/// The ECG samples of a poll, for the live stream: (time µs, value µV).
fn ecg_of(events: &[vigil_hardware::source::SourceEvent]) -> Vec<(i64, i32)> {
    events
        .iter()
        .filter_map(|e| match e {
            vigil_hardware::source::SourceEvent::Samples(b)
                if b.channel == vigil_shared::vitals::Channel::Ecg =>
            {
                Some(b.samples.iter().map(|s| (s.t_us, s.v[0])))
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn start_session(
    recorder: &mut Recorder,
    source: &mut RoomSource,
    now: i64,
    input: crate::recorder::NewSession,
    checkin: Option<vigil_shared::doc::CheckIn>,
) -> Result<vigil_shared::doc::SessionMeta, RecorderError> {
    // Samples up to now belong to no session; hand them out before the start.
    recorder.ingest(source.poll(now));
    let scenario = input.scenario.map(|s| s.to_string());
    let result = recorder.start_session_checked(input, checkin, now);
    if let Ok(meta) = &result {
        source.session_started(&meta.id, now, now, scenario.as_deref());
    }
    result
}

fn handle_command(
    recorder: &mut Recorder,
    source: &mut RoomSource,
    clock: &ScaledClock,
    cmd: Command,
) {
    let now = clock.now_us();
    match cmd {
        Command::CreatePatient(input, reply) => {
            let _ = reply.send(recorder.create_patient(input, now));
        }
        Command::UpdatePatient(id, update, reply) => {
            let _ = reply.send(recorder.update_patient(&id, update, now));
        }
        Command::RecordRiskScreen(id, input, by, reply) => {
            let _ = reply.send(recorder.record_risk_screen(&id, input, &by, now));
        }
        Command::RecordScreening(id, answers, by, reply) => {
            let _ = reply.send(recorder.record_screening(&id, &answers, &by, now));
        }
        Command::AssessRisk(id, input, reply) => {
            let _ = reply.send(recorder.assess_risk(&id, input, now));
        }
        Command::StartSession(input, checkin, reply) => {
            let _ = reply.send(start_session(recorder, source, now, input, checkin));
        }
        Command::AddEvent(id, event, reply) => {
            let _ = reply.send(recorder.add_event(&id, event, now));
        }
        Command::StopSession(id, input, reply) => {
            // Everything measured up to the stop belongs to the session.
            recorder.ingest(source.poll(now));
            let result = recorder.stop_session(&id, input, now);
            if result.is_ok() {
                source.session_stopped();
            }
            let _ = reply.send(result);
        }
        Command::LedgerAppend(input, by, witness, reply) => {
            let _ = reply.send(recorder.ledger_append(input, &by, witness, now));
        }
        Command::Shutdown => {}
    }
}
