//! Sync against its baselines, in one run (DESIGN.md's performance targets, "Sync"):
//!
//! - whole session: the frames Vigil sends to bring an empty cloud copy up to a 56-minute
//!   session with 250 Hz ECG (a full [`DocSync`] exchange, both directions, through
//!   [`encode_message`] and [`FrameDecoder`]) ÷ the messages of a plain Automerge
//!   generate/receive loop between the same two documents; bytes and time;
//! - one more minute: both sides synced up to minute 55, one more minute of chunks committed as
//!   the recorder does (one commit per 10 s period), then sync again: bytes on the wire
//!   (target ≤ 12 KB, about 0.4× plain), after a reconnect (sync states persisted with
//!   `State::encode`/`decode`) and within one connection (live states);
//! - cloud ingest: 100 ECG sessions uploaded by 4 real appliances ([`Appliance`] with their
//!   SQLite files pre-populated) over real QUIC with mutual TLS to a real [`Cloud`], until the
//!   cloud's store holds every document with the appliance's heads ÷ a plain single-thread
//!   Automerge sync loop over the same 100 documents in memory (target ≥ 2×).
//!
//! The first two parts run the protocol in memory (no validation, no storage, no sockets):
//! they measure what goes on the wire. The third runs everything users run, timed from starting
//! the appliances (QUIC handshakes included) until the last document is durable in the cloud.
//!
//! A summary table is printed first (measured here, in this process), then criterion measures
//! the first two parts. Ingest stays summary-only: one run takes seconds and builds a CA, five
//! databases and a QUIC endpoint, which criterion's repeated sampling would turn into minutes.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, AutoCommit, ChangeHash};
use common::{CHUNK_US, ORIGIN_US, SESSION_S, meta, samples};
use criterion::{BatchSize, Criterion};
use vigil_cloud::app::Cloud;
use vigil_cloud::config::{CloudConfig, PkiFiles};
use vigil_edge::app::Appliance;
use vigil_edge::config::{EdgeConfig, SourceConfig};
use vigil_edge::store::{self as edge_store, SessionRow};
use vigil_edge::sync::CloudSettings;
use vigil_hardware::sim::Scenario;
use vigil_shared::chunk::{Chunk, encode_raw_delta_varint};
use vigil_shared::doc::{
    CoursePlan, DocKind, PatientDoc, PatientRecord, Screening, SessionDoc, header,
    validate_document,
};
use vigil_shared::sync::{DocSync, Role, durable};
use vigil_shared::vitals::{Channel, Sample};
use vigil_shared::wire::{
    FLAG_ZSTD, FRAME_HEADER_BYTES, FrameDecoder, Message, SeqCounter, encode_message,
};

/// Where the "one more minute" part starts: both sides hold the first 55 minutes.
const SYNCED_S: i64 = 55 * 60;
/// The id of the session in the first two parts; a UUID as the recorder makes, so that the
/// doc ids in frames are as long as real ones.
const SESSION_ID: &str = "5e551017-0000-4000-8000-000000000007";

/// Sessions ingested by the cloud in the third part, spread evenly over [`ROOMS`].
const INGEST_SESSIONS: usize = 100;
/// The four appliances of the ingest part: the cloud's configured sites and rooms.
const ROOMS: [(&str, &str); 4] = [
    ("austin", "1"),
    ("austin", "2"),
    ("florida", "1"),
    ("florida", "2"),
];
/// Runs of the ingest pipeline; the summary shows the median.
const INGEST_RUNS: usize = 3;
/// Longest wait for one ingest run; a run that takes this long is broken, not slow.
const INGEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the ingest part polls the cloud's store for completion.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

const API_TOKEN: &str = "bench-token-0123456789abcdef01234";

/// The encoded chunks of each 10 s period in `[from_us, to_us)`, per channel, in period order.
fn periods(
    data: &[(Channel, Vec<Sample>)],
    from_us: i64,
    to_us: i64,
) -> Vec<Vec<(Channel, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut t = from_us;
    while t < to_us {
        let mut period = Vec::new();
        for (channel, samples) in data {
            let part: Vec<Sample> = samples
                .iter()
                .filter(|s| s.t_us >= t && s.t_us < t + CHUNK_US)
                .copied()
                .collect();
            if part.is_empty() {
                continue;
            }
            let bytes = Chunk {
                channel: *channel,
                samples: part,
            }
            .encode()
            .expect("encode");
            period.push((*channel, bytes));
        }
        out.push(period);
        t += CHUNK_US;
    }
    out
}

/// Appends periods of chunks as the recorder does: one commit per chunk period.
fn append(doc: &mut SessionDoc, periods: &[Vec<(Channel, Vec<u8>)>]) {
    for period in periods {
        for (channel, bytes) in period {
            doc.append_chunk(*channel, bytes.clone()).expect("append");
        }
        doc.automerge().commit();
    }
}

/// The session built as in benches/session_doc.rs (10 s chunks, one commit per period).
struct Built {
    /// Saved after 55 minutes.
    at_55: Vec<u8>,
    /// Saved after 56 minutes: the whole session.
    whole: Vec<u8>,
    /// The recorder's actor, so that the extra minute continues its change sequence.
    actor: ActorId,
    /// The chunks of minute 55..56, per period.
    last_minute: Vec<Vec<(Channel, Vec<u8>)>>,
}

fn build(data: &[(Channel, Vec<Sample>)]) -> Built {
    let synced_us = ORIGIN_US + SYNCED_S * 1_000_000;
    let end_us = ORIGIN_US + SESSION_S * 1_000_000;
    let mut doc = SessionDoc::create(&meta(SESSION_ID)).expect("create");
    append(&mut doc, &periods(data, ORIGIN_US, synced_us));
    let at_55 = doc.automerge().save();
    let last_minute = periods(data, synced_us, end_us);
    assert_eq!(last_minute.len(), 6, "one minute is six 10 s periods");
    append(&mut doc, &last_minute);
    Built {
        at_55,
        whole: doc.automerge().save(),
        actor: doc.automerge().get_actor().clone(),
        last_minute,
    }
}

/// Bytes and messages that crossed the wire, both directions.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    bytes: usize,
    messages: usize,
    /// Vigil frames sent zstd-compressed (the encoder compresses only when that is smaller).
    zstd_frames: usize,
}

impl Traffic {
    fn add(&mut self, bytes: usize) {
        self.bytes += bytes;
        self.messages += 1;
    }

    fn add_frame(&mut self, frame: &[u8]) {
        self.add(frame.len());
        if frame
            .get(FRAME_HEADER_BYTES)
            .is_some_and(|f| f & FLAG_ZSTD != 0)
        {
            self.zstd_frames += 1;
        }
    }
}

/// Sends `frame` through a stream's decoder as the receiver does; the one whole message.
fn receive(decoder: &mut FrameDecoder, frame: &[u8]) -> Message {
    decoder.push(frame);
    decoder
        .next_message()
        .expect("valid frame")
        .expect("whole frame")
}

/// One document exchange as Vigil runs it, in memory: the appliance initiates, the cloud
/// answers each Sync with a Durable of its heads and its own Sync (as `cloud::sync::step`
/// does). Every frame is encoded (zstd over [`COMPRESS_MIN_BYTES`]) and decoded.
/// Returns the traffic and both sides' sync states afterwards.
///
/// [`COMPRESS_MIN_BYTES`]: vigil_shared::wire::COMPRESS_MIN_BYTES
fn vigil_exchange(
    app: &mut AutoCommit,
    app_state: sync::State,
    cloud: &mut AutoCommit,
    cloud_state: sync::State,
) -> (Traffic, sync::State, sync::State) {
    let mut traffic = Traffic::default();
    let mut init = DocSync::new(Role::Initiator, SESSION_ID, DocKind::Session, app_state);
    let mut resp = DocSync::new(Role::Responder, SESSION_ID, DocKind::Session, cloud_state);
    let (mut seq_app, mut seq_cloud) = (SeqCounter::new(), SeqCounter::new());
    let (mut to_cloud, mut to_app) = (FrameDecoder::new(), FrameDecoder::new());
    while let Some(m) = init.outgoing(app, &mut seq_app).expect("initiator") {
        let frame = encode_message(&m).expect("encode");
        traffic.add_frame(&frame);
        resp.incoming(cloud, receive(&mut to_cloud, &frame))
            .expect("cloud applies");
        let mut answer = vec![durable(SESSION_ID, &cloud.get_heads())];
        answer.extend(resp.outgoing(cloud, &mut seq_cloud).expect("responder"));
        for m in answer {
            let frame = encode_message(&m).expect("encode");
            traffic.add_frame(&frame);
            // A Durable or the cloud's Sync; the appliance's bookkeeping of confirmed heads
            // is not part of what goes on the wire.
            init.incoming(app, receive(&mut to_app, &frame))
                .expect("appliance applies");
        }
    }
    assert!(init.is_done());
    (traffic, init.state().clone(), resp.state().clone())
}

/// Plain Automerge: the appliance and the cloud take turns generating and receiving sync
/// messages (each encoded and decoded) until neither has anything to say.
fn plain_sync(
    app: &mut AutoCommit,
    mut app_state: sync::State,
    cloud: &mut AutoCommit,
    mut cloud_state: sync::State,
) -> (Traffic, sync::State, sync::State) {
    let mut traffic = Traffic::default();
    loop {
        let mut quiet = true;
        if let Some(m) = app.sync().generate_sync_message(&mut app_state) {
            let bytes = m.encode();
            traffic.add(bytes.len());
            let m = sync::Message::decode(&bytes).expect("decode");
            cloud
                .sync()
                .receive_sync_message(&mut cloud_state, m)
                .expect("cloud applies");
            quiet = false;
        }
        if let Some(m) = cloud.sync().generate_sync_message(&mut cloud_state) {
            let bytes = m.encode();
            traffic.add(bytes.len());
            let m = sync::Message::decode(&bytes).expect("decode");
            app.sync()
                .receive_sync_message(&mut app_state, m)
                .expect("appliance applies");
            quiet = false;
        }
        if quiet {
            return (traffic, app_state, cloud_state);
        }
    }
}

type SyncFn = fn(
    &mut AutoCommit,
    sync::State,
    &mut AutoCommit,
    sync::State,
) -> (Traffic, sync::State, sync::State);

fn load(bytes: &[u8]) -> AutoCommit {
    AutoCommit::load(bytes).expect("load")
}

/// Whole session into an empty cloud document; asserts both ends converged.
fn whole_session(f: SyncFn, app: &mut AutoCommit) -> Traffic {
    let mut cloud = AutoCommit::new();
    let (traffic, _, _) = f(app, sync::State::new(), &mut cloud, sync::State::new());
    assert_eq!(cloud.get_heads(), app.get_heads(), "converged");
    traffic
}

/// How a side's sync state gets from the end of the minute-55 exchange to the next exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carry {
    /// Through `State::encode`/`decode`, as across a reconnect (and as the appliance always
    /// does: it reloads the state from SQLite for every exchange).
    Persisted,
    /// The state object itself, within one connection.
    Live,
    /// Dropped: a fresh `State::new()`, as the cloud does for every stream it accepts.
    Fresh,
}

fn carry(state: &sync::State, how: Carry) -> sync::State {
    match how {
        Carry::Persisted => sync::State::decode(&state.encode()).expect("decode state"),
        Carry::Live => state.clone(),
        Carry::Fresh => sync::State::new(),
    }
}

/// Both sides after syncing the first 55 minutes with `f`.
struct Synced55 {
    app: AutoCommit,
    cloud: AutoCommit,
    app_state: sync::State,
    cloud_state: sync::State,
}

impl Synced55 {
    fn new(f: SyncFn, built: &Built) -> Synced55 {
        let mut app = load(&built.at_55);
        // The recorder's own actor: the extra minute continues its sequence of changes.
        app.set_actor(built.actor.clone());
        let mut cloud = AutoCommit::new();
        let (_, app_state, cloud_state) =
            f(&mut app, sync::State::new(), &mut cloud, sync::State::new());
        assert_eq!(cloud.get_heads(), app.get_heads(), "converged at 55 min");
        Synced55 {
            app,
            cloud,
            app_state,
            cloud_state,
        }
    }

    /// Copies of both sides with the extra minute appended on the appliance and the states
    /// carried as asked: the input of one "one more minute" exchange.
    fn next_minute(
        &self,
        built: &Built,
        app_carry: Carry,
        cloud_carry: Carry,
    ) -> (AutoCommit, sync::State, AutoCommit, sync::State) {
        let mut doc = SessionDoc::from_automerge(self.app.clone()).expect("session");
        append(&mut doc, &built.last_minute);
        (
            std::mem::take(doc.automerge()),
            carry(&self.app_state, app_carry),
            self.cloud.clone(),
            carry(&self.cloud_state, cloud_carry),
        )
    }
}

/// One "one more minute" exchange; asserts both ends converged.
fn one_more_minute(
    f: SyncFn,
    input: (AutoCommit, sync::State, AutoCommit, sync::State),
) -> Traffic {
    let (mut app, app_state, mut cloud, cloud_state) = input;
    let (traffic, _, _) = f(&mut app, app_state, &mut cloud, cloud_state);
    assert_eq!(cloud.get_heads(), app.get_heads(), "converged at 56 min");
    traffic
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median time and the last result of `runs` runs of `f` on inputs made (untimed) by `setup`.
fn time_runs<I, T>(
    runs: usize,
    mut setup: impl FnMut() -> I,
    mut f: impl FnMut(I) -> T,
) -> (Duration, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let input = setup();
        let t = Instant::now();
        let out = black_box(f(input));
        times.push(t.elapsed());
        last = Some(out);
    }
    (median(times), last.expect("at least one run"))
}

// ---------------------------------------------------------------------------------------------
// Ingest

/// One of the 100 sessions of the ingest part.
struct Derived {
    id: String,
    site: &'static str,
    room: &'static str,
    /// `save()` bytes.
    bytes: Vec<u8>,
    /// Its heads, sorted as the cloud stores them.
    heads: Vec<ChangeHash>,
}

/// Session `i` of the ingest part: the base session loaded, given a fresh actor, and re-labelled
/// with its own id, site and room (the cloud refuses a document whose header id differs from
/// the doc id or whose site is not the appliance's).
fn derive(base: &[u8], i: usize) -> Derived {
    let r = i * ROOMS.len() / INGEST_SESSIONS;
    let (site, room) = ROOMS[r];
    let id = format!("5e551017-0000-4000-8000-{i:012x}");
    let mut am = load(base);
    am.set_actor(ActorId::random());
    let mut doc = SessionDoc::from_automerge(am).expect("session");
    doc.update_meta(|m| {
        m.id = id.clone();
        m.site = site.into();
        m.room = room.into();
        m.patient_id = room_patient(r);
    })
    .expect("update meta");
    // The typed metadata's `id` and `site` are reconciled at the root, where the header keys
    // live too, so update_meta already rewrote the header; no second put of the root `id`.
    let h = header(doc.automerge_ref()).expect("header");
    assert_eq!((h.id.as_str(), h.site.as_str()), (id.as_str(), site));
    let am = doc.automerge();
    am.commit();
    let h = validate_document(am, DocKind::Session).expect("the cloud accepts it");
    assert_eq!(h.id, id);
    let mut heads = am.get_heads();
    heads.sort_unstable();
    Derived {
        id,
        site,
        room,
        bytes: am.save(),
        heads,
    }
}

/// The patient of every session of room `r` (an index into [`ROOMS`]): the cloud accepts a
/// session only once it holds the session's patient for the site, so each appliance holds one.
fn room_patient(r: usize) -> String {
    format!("9a71e470-0000-4000-8000-{r:012x}")
}

/// What the plain loop took: wall time, and the CPU time of its one thread (what the wall time
/// would be on a core of its own; the machine is shared).
#[derive(Debug, Clone, Copy)]
struct PlainIngest {
    wall: Duration,
    cpu: Duration,
}

/// CPU time of the calling thread so far, from /proc (Linux); zero where unreadable.
fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// The plain single-thread loop: each document synced into a fresh empty one, in memory.
/// Loading the appliance's copy is not timed (the reference loop starts from loaded documents).
fn plain_ingest(docs: &[Derived]) -> PlainIngest {
    let mut wall = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    for d in docs {
        let mut app = load(&d.bytes);
        let (t, c) = (Instant::now(), thread_cpu());
        let mut cloud = AutoCommit::new();
        plain_sync(&mut app, sync::State::new(), &mut cloud, sync::State::new());
        wall += t.elapsed();
        cpu += thread_cpu().saturating_sub(c);
        assert_eq!(cloud.get_heads(), app.get_heads(), "plain ingest converged");
    }
    PlainIngest { wall, cpu }
}

/// The cloud's CPU per session against the plain loop's, as throughput a cloud could reach with
/// the machine's cores to itself: `plain CPU per session × cores ÷ cloud CPU per session`
/// (the plain loop is one thread). The appliances and the database run elsewhere in production.
fn cpu_ratio(plain: PlainIngest, cloud_s: f64, cores: usize) -> f64 {
    let plain_s = plain.cpu.as_secs_f64() / INGEST_SESSIONS as f64;
    let cloud_s = cloud_s / INGEST_SESSIONS as f64;
    if cloud_s > 0.0 {
        plain_s * cores as f64 / cloud_s
    } else {
        f64::INFINITY
    }
}

/// The machine's cores (the bench's machines have 2).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU time of this process's threads by role, from /proc (Linux): the cloud's runtime
/// threads, the appliances' runtime and recorder threads, and the rest.
#[derive(Debug, Clone, Default)]
struct CpuByRole {
    /// (tid, role) → on-CPU nanoseconds.
    threads: BTreeMap<(u32, &'static str), u64>,
}

impl CpuByRole {
    fn now() -> CpuByRole {
        let mut threads = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return CpuByRole { threads };
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let role = if comm.starts_with("cloud") {
                "cloud"
            } else if comm.starts_with("edge") || comm.starts_with("recorder") {
                "appliances"
            } else {
                "other"
            };
            // The first field of schedstat is the time spent on the CPU, in nanoseconds.
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            threads.insert((tid, role), ns);
        }
        CpuByRole { threads }
    }

    /// CPU seconds per role spent between `before` and `self`.
    fn since(&self, before: &CpuByRole) -> BTreeMap<&'static str, f64> {
        let mut out = BTreeMap::new();
        for (key, ns) in &self.threads {
            let was = before.threads.get(key).copied().unwrap_or(0);
            *out.entry(key.1).or_insert(0.0) += ns.saturating_sub(was) as f64 / 1e9;
        }
        out
    }
}

/// Where the cloud keeps the ingested documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// One instance on its SQLite file.
    Sqlite,
    /// This many instances on one PostgreSQL database (the bench's private cluster), the
    /// appliances split between them.
    Postgres(usize),
}

impl Engine {
    fn describe(self) -> String {
        match self {
            Engine::Sqlite => "QUIC + mTLS + SQLite, 1 instance".into(),
            Engine::Postgres(1) => "QUIC + mTLS + PostgreSQL, 1 instance".into(),
            Engine::Postgres(n) => format!("QUIC + mTLS + PostgreSQL, {n} instances"),
        }
    }
}

/// CPU seconds of the PostgreSQL server's processes (every process named `postgres`: the
/// cluster's postmaster, its workers and one backend per connection), from /proc.
fn postgres_cpu_s() -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for p in procs.flatten() {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: utime and stime are fields 14 and 15.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += (ticks(11) + ticks(12)) / tick;
    }
    total
}

/// The stored heads of every session document, to tell when ingest is complete.
enum HeadsReader {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl HeadsReader {
    /// Session rows projected (cheap), and the heads once there are `want` of them.
    fn heads(&mut self, want: usize) -> Option<BTreeMap<String, Vec<u8>>> {
        const COUNT: &str = "SELECT count(*) FROM sessions";
        const HEADS: &str = "SELECT id, heads FROM documents WHERE kind = 'session'";
        match self {
            HeadsReader::Sqlite(c) => {
                let n: i64 = c.query_row(COUNT, [], |r| r.get(0)).expect("count");
                if usize::try_from(n).unwrap_or(0) < want {
                    return None;
                }
                let mut stmt = c.prepare_cached(HEADS).expect("prepare");
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("query");
                Some(rows.collect::<Result<_, _>>().expect("rows"))
            }
            HeadsReader::Postgres(c) => {
                let n: i64 = c.query_one(COUNT, &[]).expect("count").get(0);
                if usize::try_from(n).unwrap_or(0) < want {
                    return None;
                }
                let rows = c.query(HEADS, &[]).expect("query");
                Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            }
        }
    }
}

/// One run of the real pipeline. Returns the time from starting the appliances until the cloud
/// has every document durable with the appliance's heads, and the CPU seconds per role
/// (`postgres`: the database server's processes).
fn vigil_ingest(docs: &[Derived], engine: Engine) -> (Duration, BTreeMap<&'static str, f64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let ca = vigil_cloud::pki::Ca::init(&pki, "Bench Clinic CA").expect("init CA");
    ca.issue_server(
        &["localhost".to_owned()],
        &["127.0.0.1".parse().expect("ip")],
        "server",
    )
    .expect("server cert");
    let url = match engine {
        Engine::Sqlite => None,
        Engine::Postgres(_) => Some(vigil_cloud::pg_cluster::cluster().new_database()),
    };
    let config = CloudConfig {
        data_dir: dir.path().join("cloud"),
        quic_bind: "127.0.0.1:0".parse().expect("addr"),
        http_bind: "127.0.0.1:0".parse().expect("addr"),
        api_token: API_TOKEN.into(),
        pki: PkiFiles::in_dir(&pki),
        sites: ["austin", "florida"]
            .into_iter()
            .map(|id| vigil_cloud::config::SiteInfo {
                id: id.into(),
                name: id.into(),
                region: "bench".into(),
                rooms: vec!["1".into(), "2".into()],
                tz: None,
            })
            .collect(),
        http: vigil_cloud::config::HttpConfig::default(),
        sync: Default::default(),
        store: match &url {
            Some(url) => vigil_cloud::config::StoreConfig {
                kind: vigil_cloud::config::StoreKind::Postgres,
                url: Some(url.clone()),
                ..Default::default()
            },
            None => Default::default(),
        },
        instance: None,
    };
    config.validate(Path::new("(bench)")).expect("cloud config");

    // The cloud and the appliances on runtimes of their own, so that their threads can be told
    // apart (CPU per role); both runtimes share this machine's cores, as in the demo.
    let cloud_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cloud-rt")
        .enable_all()
        .build()
        .expect("cloud runtime");
    let edge_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("edge-rt")
        .enable_all()
        .build()
        .expect("appliance runtime");
    let instances = match engine {
        Engine::Sqlite => 1,
        Engine::Postgres(n) => n,
    };
    let clouds: Vec<Cloud> = (0..instances)
        .map(|k| {
            let mut config = config.clone();
            config.instance = Some(format!("bench-{k}"));
            config.data_dir = dir.path().join(format!("cloud-{k}"));
            cloud_rt
                .block_on(Cloud::start(config))
                .expect("cloud starts")
        })
        .collect();

    let mut configs = Vec::new();
    for (r, (site, room)) in ROOMS.into_iter().enumerate() {
        let cert = ca
            .issue_appliance(&site.into(), &room.into())
            .expect("appliance cert");
        let data_dir = dir.path().join(format!("{site}-{room}"));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let mut db = edge_store::open_writer(&data_dir.join(vigil_edge::app::DB_FILE))
            .expect("appliance db");
        let tx = edge_store::write_tx(&mut db).expect("tx");
        let mut patient = PatientDoc::create(&PatientRecord {
            id: room_patient(r),
            site: site.into(),
            given_name: "Bench".into(),
            family_name: format!("Room {room}"),
            birth_date: "1970-01-01".into(),
            sex: "female".into(),
            phone: None,
            screening: Screening::default(),
            medications: vec![],
            course: CoursePlan::default(),
            outcome_scores: vec![],
        })
        .expect("patient");
        edge_store::insert_document(
            &tx,
            &room_patient(r),
            DocKind::Patient.as_str(),
            site,
            &patient.automerge().save(),
            ORIGIN_US,
        )
        .expect("insert patient");
        for d in docs.iter().filter(|d| (d.site, d.room) == (site, room)) {
            edge_store::insert_document(
                &tx,
                &d.id,
                DocKind::Session.as_str(),
                site,
                &d.bytes,
                ORIGIN_US,
            )
            .expect("insert document");
            edge_store::upsert_session(
                &tx,
                &SessionRow {
                    id: d.id.clone(),
                    patient_id: room_patient(r),
                    state: "completed".into(),
                    started_us: Some(ORIGIN_US),
                    ended_us: Some(ORIGIN_US + SESSION_S * 1_000_000),
                    scenario: Some(Scenario::Hypertension.to_string()),
                },
            )
            .expect("session row");
        }
        tx.commit().expect("commit");
        let config = EdgeConfig {
            site: site.into(),
            room: room.into(),
            data_dir,
            http_bind: "127.0.0.1:0".parse().expect("addr"),
            http_hosts: Vec::new(),
            http_tls: None,
            chunk_period_s: 10,
            group_commit_ms: 1_000,
            // The bench's sessions ended months ago; keep them while the cloud ingests.
            retention_days: 3_650,
            max_db_mb: None,
            clock_offset_s: 0,
            peer_bind: None,
            peers: Vec::new(),
            mdns: false,
            mdns_interface: None,
            source: SourceConfig::None,
            // The rooms split between the instances, each knowing them all.
            cloud: Some(CloudSettings {
                addr: None,
                addrs: (0..clouds.len())
                    .map(|k| clouds[(r + k) % clouds.len()].sync_addr.into())
                    .collect(),
                server_name: "localhost".into(),
                ca_cert: pki.join("ca.pem"),
                cert: cert.cert_path.clone(),
                key: cert.key_path.clone(),
            }),
        };
        config.validate(Path::new("(bench)")).expect("edge config");
        configs.push(config);
    }
    let expected: BTreeMap<&str, Vec<u8>> = docs
        .iter()
        .map(|d| (d.id.as_str(), d.heads.iter().flat_map(|h| h.0).collect()))
        .collect();
    let mut reader = match &url {
        None => HeadsReader::Sqlite(
            rusqlite::Connection::open_with_flags(
                clouds[0].store.path().expect("on SQLite"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("cloud reader"),
        ),
        Some(url) => {
            HeadsReader::Postgres(postgres::Client::connect(url, postgres::NoTls).expect("reader"))
        }
    };

    let cpu_before = CpuByRole::now();
    let pg_before = postgres_cpu_s();
    let start = Instant::now();
    let appliances: Vec<Appliance> = edge_rt.block_on(async {
        let mut out = Vec::new();
        for config in configs {
            out.push(Appliance::start(config).await.expect("appliance starts"));
        }
        out
    });
    loop {
        assert!(
            start.elapsed() < INGEST_TIMEOUT,
            "ingest did not finish within {INGEST_TIMEOUT:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
        // The projection row is written in the same transaction as the document: count those
        // first (cheap), compare heads only once all are there.
        let Some(stored) = reader.heads(docs.len()) else {
            continue;
        };
        if expected
            .iter()
            .all(|(id, heads)| stored.get(*id) == Some(heads))
        {
            break;
        }
    }
    let elapsed = start.elapsed();
    let mut cpu = CpuByRole::now().since(&cpu_before);
    if url.is_some() {
        cpu.insert("postgres", postgres_cpu_s() - pg_before);
    }
    drop(reader);
    edge_rt.block_on(async {
        for a in appliances {
            a.shutdown().await;
        }
    });
    for cloud in clouds {
        cloud_rt.block_on(cloud.shutdown());
    }
    edge_rt.shutdown_timeout(Duration::from_secs(5));
    cloud_rt.shutdown_timeout(Duration::from_secs(5));
    (elapsed, cpu)
}

// ---------------------------------------------------------------------------------------------
// Summary and criterion

fn kb(bytes: usize) -> String {
    format!("{:.1} KB", bytes as f64 / 1e3)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// What the extra minute's samples weigh before any sync: the chunks as the recorder stores
/// them (chunk codec v2), and the raw samples delta-varint encoded, uncompressed and
/// compressed with zstd level 3 in one piece.
struct MinuteSizes {
    chunks: usize,
    n_chunks: usize,
    raw: usize,
    raw_zstd: usize,
}

fn minute_sizes(built: &Built, data: &[(Channel, Vec<Sample>)]) -> MinuteSizes {
    let from_us = ORIGIN_US + SYNCED_S * 1_000_000;
    let mut raw = Vec::new();
    for (channel, samples) in data {
        let minute: Vec<Sample> = samples
            .iter()
            .filter(|s| s.t_us >= from_us)
            .copied()
            .collect();
        raw.extend(encode_raw_delta_varint(&minute, channel.dims()));
    }
    MinuteSizes {
        chunks: built
            .last_minute
            .iter()
            .flatten()
            .map(|(_, bytes)| bytes.len())
            .sum(),
        n_chunks: built.last_minute.iter().map(Vec::len).sum(),
        raw: raw.len(),
        raw_zstd: zstd::bulk::compress(&raw, 3).expect("zstd").len(),
    }
}

fn traffic(t: &Traffic, unit: &str, d: Duration) -> String {
    let zstd = if unit == "frames" {
        format!(" ({} zstd)", t.zstd_frames)
    } else {
        String::new()
    };
    format!("{} in {} {unit}{zstd}, {}", kb(t.bytes), t.messages, ms(d))
}

fn summary(built: &Built, data: &[(Channel, Vec<Sample>)]) {
    // 1. The whole session into an empty cloud document.
    let app = load(&built.whole);
    let (vigil_whole_t, vigil_whole) = time_runs(
        5,
        || app.clone(),
        |mut a| whole_session(vigil_exchange, &mut a),
    );
    let (plain_whole_t, plain_whole) =
        time_runs(5, || app.clone(), |mut a| whole_session(plain_sync, &mut a));

    // 2. One more minute: the same exchange after 55 minutes were synced.
    let vigil55 = Synced55::new(vigil_exchange, built);
    let plain55 = Synced55::new(plain_sync, built);
    let minute = |f: SyncFn, s: &Synced55, a: Carry, c: Carry| {
        time_runs(
            5,
            || s.next_minute(built, a, c),
            |input| one_more_minute(f, input),
        )
    };
    use Carry::{Fresh, Live, Persisted};
    // Vigil as deployed: the appliance reloads its persisted state for every exchange and the
    // cloud starts every stream with a fresh state, so the first two rows run the same Vigil
    // exchange; the plain loop keeps its states as the row says.
    let deployed = minute(vigil_exchange, &vigil55, Persisted, Fresh);
    let cases = [
        (
            "one more minute after a reconnect (states persisted) [1]",
            deployed,
            minute(plain_sync, &plain55, Persisted, Persisted),
        ),
        (
            "one more minute, same connection (live states) [1]",
            deployed,
            minute(plain_sync, &plain55, Live, Live),
        ),
        (
            "one more minute, states persisted on both sides [2]",
            minute(vigil_exchange, &vigil55, Persisted, Persisted),
            minute(plain_sync, &plain55, Persisted, Persisted),
        ),
        (
            "one more minute, live states on both sides [2]",
            minute(vigil_exchange, &vigil55, Live, Live),
            minute(plain_sync, &plain55, Live, Live),
        ),
    ];
    let sizes = minute_sizes(built, data);

    // 3. Cloud ingest.
    let docs: Vec<Derived> = (0..INGEST_SESSIONS)
        .map(|i| derive(&built.whole, i))
        .collect();
    let doc_bytes: usize = docs.iter().map(|d| d.bytes.len()).sum();
    let plain = plain_ingest(&docs);
    let plain_t = plain.wall;
    // Each engine's median run (by wall time), in one process, one after the other.
    let ingests: Vec<(Engine, Duration, BTreeMap<&str, f64>)> =
        [Engine::Sqlite, Engine::Postgres(1), Engine::Postgres(2)]
            .into_iter()
            .map(|engine| {
                let mut runs: Vec<(Duration, BTreeMap<&str, f64>)> = (0..INGEST_RUNS)
                    .map(|_| vigil_ingest(&docs, engine))
                    .collect();
                runs.sort_by_key(|r| r.0);
                let (t, cpu) = runs.swap_remove(runs.len() / 2);
                (engine, t, cpu)
            })
            .collect();
    let rate = |d: Duration| {
        format!(
            "{:.1} sessions/s, {:.1} MB/s ({:.2} s)",
            INGEST_SESSIONS as f64 / d.as_secs_f64(),
            doc_bytes as f64 / 1e6 / d.as_secs_f64(),
            d.as_secs_f64()
        )
    };

    println!(
        "sync: 56-minute session with 250 Hz ECG, {} saved; bytes on the wire, both directions",
        kb(built.whole.len())
    );
    println!("| measure | vigil | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| whole session into an empty cloud copy (in memory) | {} | {} (plain automerge sync) | {:.2} bytes, {:.2} time | - |",
        traffic(&vigil_whole, "frames", vigil_whole_t),
        traffic(&plain_whole, "messages", plain_whole_t),
        vigil_whole.bytes as f64 / plain_whole.bytes as f64,
        vigil_whole_t.as_secs_f64() / plain_whole_t.as_secs_f64()
    );
    for (name, (vt, v), (pt, p)) in &cases {
        println!(
            "| {name} | {} | {} (plain automerge sync) | {:.2} bytes | <= 12 KB, ~0.4x (plain ~32 KB) |",
            traffic(v, "frames", *vt),
            traffic(p, "messages", *pt),
            v.bytes as f64 / p.bytes as f64
        );
    }
    for (engine, t, cpu) in &ingests {
        let cloud_s = cpu.get("cloud").copied().unwrap_or(0.0);
        let db_s = cpu.get("postgres").copied().unwrap_or(0.0);
        println!(
            "| cloud ingest of {INGEST_SESSIONS} sessions ({:.1} MB) from 4 appliances: {} [3] | {}, median of {INGEST_RUNS}; cloud CPU {:.1} ms/session{} | {} (plain single-thread sync loop, in memory; {:.1} ms/session wall, {:.1} ms/session CPU) | {:.2}x wall; {:.2}x by CPU on {} cores [4] | >= 2x |",
            doc_bytes as f64 / 1e6,
            engine.describe(),
            rate(*t),
            cloud_s * 1e3 / INGEST_SESSIONS as f64,
            if db_s > 0.0 {
                format!(
                    " + PostgreSQL {:.1} ms/session",
                    db_s * 1e3 / INGEST_SESSIONS as f64
                )
            } else {
                String::new()
            },
            rate(plain_t),
            plain_t.as_secs_f64() * 1e3 / INGEST_SESSIONS as f64,
            plain.cpu.as_secs_f64() * 1e3 / INGEST_SESSIONS as f64,
            plain_t.as_secs_f64() / t.as_secs_f64(),
            cpu_ratio(plain, cloud_s + db_s, cores()),
            cores()
        );
    }
    println!(
        "[1] vigil as deployed: the appliance reloads its persisted sync state for every exchange; \
         the cloud starts every stream with a fresh sync state (cloud/src/sync.rs)"
    );
    println!(
        "[2] vigil's framing alone: DocSync with the states handled like the plain loop's \
         (DESIGN.md: state persisted per peer and document on both sides)"
    );
    println!(
        "    the extra minute's samples: raw delta-varint {}, + zstd-3 {}; as stored, {} chunks \
         in the chunk codec (v2): {}",
        kb(sizes.raw),
        kb(sizes.raw_zstd),
        sizes.n_chunks,
        kb(sizes.chunks)
    );
    for (engine, t, cpu) in &ingests {
        println!(
            "[3] CPU during the {} run: cloud {:.2} s, PostgreSQL {:.2} s, appliances {:.2} s, \
             other {:.2} s, in {:.2} s on {} cores (the appliances and the database share this \
             machine)",
            engine.describe(),
            cpu.get("cloud").copied().unwrap_or(0.0),
            cpu.get("postgres").copied().unwrap_or(0.0),
            cpu.get("appliances").copied().unwrap_or(0.0),
            cpu.get("other").copied().unwrap_or(0.0),
            t.as_secs_f64(),
            cores()
        );
    }
    println!(
        "[4] the sessions per second a cloud with the cores to itself would take (cores ÷ its CPU \
         per session, the database's included) ÷ the plain loop's on one core (÷ its CPU per \
         session); the wall ratio is what this machine gave with the appliances on it too"
    );
}

/// `VIGIL_BENCH_INGEST=sqlite|postgres|postgres2` runs only the ingest part, once for that
/// engine, beside the plain loop: a run short enough to profile the cloud under `perf` or
/// callgrind without the in-memory parts and criterion.
const INGEST_ONLY_VAR: &str = "VIGIL_BENCH_INGEST";

fn ingest_only(built: &Built, which: &str) {
    let engine = match which {
        "sqlite" => Engine::Sqlite,
        "postgres" => Engine::Postgres(1),
        "postgres2" => Engine::Postgres(2),
        other => panic!("{INGEST_ONLY_VAR}={other}: expected sqlite, postgres or postgres2"),
    };
    let docs: Vec<Derived> = (0..INGEST_SESSIONS)
        .map(|i| derive(&built.whole, i))
        .collect();
    let plain = plain_ingest(&docs);
    let (t, cpu) = vigil_ingest(&docs, engine);
    let per = |s: f64| s * 1e3 / INGEST_SESSIONS as f64;
    let role = |r: &str| cpu.get(r).copied().unwrap_or(0.0);
    println!(
        "{}: {:.1} sessions/s vs plain {:.1} sessions/s ({:.2}x wall); CPU ms/session: cloud \
         {:.1}, PostgreSQL {:.1}, appliances {:.1}, other {:.1}; plain {:.1} wall, {:.1} CPU; \
         {:.2}x by CPU on {} cores",
        engine.describe(),
        INGEST_SESSIONS as f64 / t.as_secs_f64(),
        INGEST_SESSIONS as f64 / plain.wall.as_secs_f64(),
        plain.wall.as_secs_f64() / t.as_secs_f64(),
        per(role("cloud")),
        per(role("postgres")),
        per(role("appliances")),
        per(role("other")),
        per(plain.wall.as_secs_f64()),
        per(plain.cpu.as_secs_f64()),
        cpu_ratio(plain, role("cloud") + role("postgres"), cores()),
        cores()
    );
}

fn main() {
    let data = samples(true);
    let built = build(&data);
    if let Ok(which) = std::env::var(INGEST_ONLY_VAR) {
        ingest_only(&built, &which);
        return;
    }
    summary(&built, &data);

    let app = load(&built.whole);
    let vigil55 = Synced55::new(vigil_exchange, &built);
    let plain55 = Synced55::new(plain_sync, &built);
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut g = c.benchmark_group("sync");
    g.bench_function("whole_session/vigil", |b| {
        b.iter_batched(
            || app.clone(),
            |mut a| whole_session(vigil_exchange, &mut a),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("whole_session/plain", |b| {
        b.iter_batched(
            || app.clone(),
            |mut a| whole_session(plain_sync, &mut a),
            BatchSize::PerIteration,
        )
    });
    // As deployed: the appliance reloads its persisted state, the cloud starts fresh; plain
    // Automerge with both states persisted, as LIBRARY-FACTS.md recommends.
    g.bench_function("one_more_minute/vigil", |b| {
        b.iter_batched(
            || vigil55.next_minute(&built, Carry::Persisted, Carry::Fresh),
            |input| one_more_minute(vigil_exchange, input),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("one_more_minute/plain", |b| {
        b.iter_batched(
            || plain55.next_minute(&built, Carry::Persisted, Carry::Persisted),
            |input| one_more_minute(plain_sync, input),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    c.final_summary();
}
