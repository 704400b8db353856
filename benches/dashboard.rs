//! The dashboard's server time, against the floor of loading the document, in one run
//! (DESIGN.md: "dashboard session page (56 min, ECG) ≤ 100 ms server time p95"):
//!
//! - the session page of a 56-minute session with 250 Hz ECG (the benches' shared session,
//!   with a dose timeline and advisories): the store read and the HTML, then the whole request
//!   over loopback HTTP to the real server (cookie check, audit entry committed with fsync,
//!   read, render);
//! - the overview of 50 sites × 6 rooms (every appliance registered, sessions today in every
//!   room), likewise;
//! - the floor: loading the session's document alone.
//!
//! A summary table is printed first (p50 and p95 of several runs each, measured here, in this
//! process), then criterion measures the same operations.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{CHUNK_US, ORIGIN_US, SESSION_S, meta, samples};
use criterion::Criterion;
use vigil_cloud::auth::{Auth, Login, NewUser, Role, add_user};
use vigil_cloud::config::SiteInfo;
use vigil_cloud::config::{CloudConfig, PkiFiles};
use vigil_cloud::store::{CloudStore, Connected};
use vigil_cloud::web::dashboard::{ECG_DEFAULT_SPAN_S, overview_html, session_html};
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::{AdvisoryRecord, DoseAction, DoseEvent, SessionDoc, SessionMeta};
use vigil_shared::wire::DocKind;

const SITES: usize = 50;
const ROOMS: usize = 6;
/// Sessions started today in every room of the overview.
const SESSIONS_PER_ROOM: usize = 2;
const SESSION_ID: &str = "bench-ecg-session";
const PASSWORD: &str = "bench password, not secret";
const RUNS: usize = 30;

fn sites() -> Vec<SiteInfo> {
    (0..SITES)
        .map(|s| SiteInfo {
            id: format!("site-{s:02}"),
            name: format!("Site {s}"),
            region: format!("region-{}", s % 5),
            rooms: (1..=ROOMS).map(|r| r.to_string()).collect(),
            tz: None,
        })
        .collect()
}

/// The benches' 56-minute session with ECG, at the first site, with a dose timeline and the
/// hypertension scenario's advisories.
fn ecg_session() -> SessionDoc {
    let mut m: SessionMeta = meta(SESSION_ID);
    m.site = "site-00".into();
    let minute = 60_000_000;
    m.dose_events = [
        (1, DoseAction::Start),
        (20, DoseAction::RateChange),
        (41, DoseAction::Stop),
    ]
    .iter()
    .map(|(at, action)| DoseEvent {
        id: format!("d{at}"),
        at_us: ORIGIN_US + at * minute,
        action: *action,
        rate_mg_per_h: Some(52.5),
        by: "nurse".into(),
    })
    .collect();
    m.advisories = [
        (27, "bp_high", "high"),
        (33, "hr_high", "medium"),
        (45, "no_data", "low"),
    ]
    .iter()
    .map(|(at, kind, priority)| AdvisoryRecord {
        id: format!("a{at}"),
        kind: (*kind).into(),
        subject: "nibp".into(),
        priority: (*priority).into(),
        detail: "bench".into(),
        raised_us: ORIGIN_US + at * minute,
        acknowledged_us: Some(ORIGIN_US + (at + 1) * minute),
        acknowledged_by: Some("nurse".into()),
        cleared_us: Some(ORIGIN_US + (at + 4) * minute),
    })
    .collect();
    let mut doc = SessionDoc::create(&m).expect("create");
    let data = samples(true);
    let mut t = ORIGIN_US;
    while t < ORIGIN_US + SESSION_S * 1_000_000 {
        for (channel, all) in &data {
            let part: Vec<_> = all
                .iter()
                .filter(|s| s.t_us >= t && s.t_us < t + CHUNK_US)
                .copied()
                .collect();
            if !part.is_empty() {
                let bytes = Chunk {
                    channel: *channel,
                    samples: part,
                }
                .encode()
                .expect("encode");
                doc.append_chunk(*channel, bytes).expect("append");
            }
        }
        doc.automerge().commit();
        t += CHUNK_US;
    }
    doc
}

/// Fills the store: the ECG session, every room's appliance and today's sessions.
fn fill(store: &CloudStore, sites: &[SiteInfo], now: i64) {
    let mut doc = ecg_session();
    store
        .commit_document(
            SESSION_ID,
            DocKind::Session,
            "site-00",
            doc.automerge(),
            now,
        )
        .expect("commit the ECG session");
    for site in sites {
        for room in &site.rooms {
            store
                .appliance_connected(
                    &Connected::new(&site.id, room, "vigil-edge bench", "bench"),
                    now,
                )
                .expect("appliance");
            store
                .appliance_synced(&site.id, room, now, 0, 0)
                .expect("synced");
            for k in 0..SESSIONS_PER_ROOM {
                let id = format!("{}-{room}-{k}", site.id);
                let mut m = meta(&id);
                m.site = site.id.clone();
                m.room = room.clone();
                m.started_us = Some(now - (k as i64 + 1) * 3_600_000_000);
                m.ended_us = None;
                m.state = vigil_shared::doc::SessionState::InProgress;
                let mut d = SessionDoc::create(&m).expect("create");
                store
                    .commit_document(&id, DocKind::Session, &site.id, d.automerge(), now)
                    .expect("commit");
            }
        }
    }
}

/// p50 and p95 of `RUNS` runs of `f`.
fn percentiles(mut f: impl FnMut()) -> (Duration, Duration) {
    f();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[RUNS / 2], times[RUNS * 95 / 100])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let ca = vigil_cloud::pki::Ca::init(&pki, "Bench Clinic CA").expect("init CA");
    ca.issue_server(
        &["localhost".to_owned()],
        &["127.0.0.1".parse().expect("ip")],
        "server",
    )
    .expect("server cert");
    let sites = sites();
    let config = CloudConfig {
        data_dir: dir.path().join("cloud"),
        quic_bind: "127.0.0.1:0".parse().expect("addr"),
        http_bind: "127.0.0.1:0".parse().expect("addr"),
        api_token: "bench-service-token-0123456789".into(),
        pki: PkiFiles::in_dir(&pki),
        sites: sites.clone(),
        http: vigil_cloud::config::HttpConfig::default(),
        store: Default::default(),
        sync: Default::default(),
        instance: None,
    };
    config
        .validate(std::path::Path::new("(bench)"))
        .expect("config");
    std::fs::create_dir_all(&config.data_dir).expect("data dir");
    let now = vigil_cloud::clock::now_us();
    {
        let store =
            CloudStore::open(&config.data_dir.join(vigil_cloud::app::DB_FILE)).expect("store");
        fill(&store, &sites, now);
        let admin = NewUser {
            username: "admin",
            role: Role::Admin,
            region: None,
            site: None,
            password: PASSWORD,
        };
        add_user(&store, &sites, &admin, now).expect("user");
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cloud = rt
        .block_on(vigil_cloud::app::Cloud::start(config))
        .expect("start the cloud");
    let store: Arc<CloudStore> = cloud.store.clone();
    let auth = Auth::new(store.clone(), sites.clone(), "");
    let Login::Ok { cookie, .. } = auth
        .login("admin", PASSWORD, "127.0.0.1", now)
        .expect("login")
    else {
        panic!("the bench user cannot sign in");
    };
    // The page functions are timed with the signed-in admin's own principal and scope.
    let (admin, _) = auth
        .session(&cookie, now)
        .expect("session")
        .expect("a live session");
    let cookie = format!("vigil_session={cookie}");
    let http = reqwest::Client::new();
    let base = cloud.api_url();
    let get = |path: &str| {
        let req = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie.as_str());
        rt.block_on(async {
            let res = req.send().await.expect("GET");
            assert!(res.status().is_success(), "{path}: {}", res.status());
            res.text().await.expect("body").len()
        })
    };
    let session_page = || {
        let chart = store
            .session_chart(
                admin.scope(),
                SESSION_ID,
                None,
                Some(ORIGIN_US + i64::from(ECG_DEFAULT_SPAN_S) * 1_000_000),
            )
            .expect("read")
            .expect("the session");
        session_html(
            &chart,
            &vigil_shared::zone::SiteZone::utc(),
            0,
            ECG_DEFAULT_SPAN_S,
        )
        .len()
    };
    let overview = || {
        let appliances = store.appliances().expect("appliances");
        let activity = store
            .room_activity(admin.scope(), now - 86_400_000_000)
            .expect("activity");
        overview_html(&sites, &appliances, &activity, &admin, now).len()
    };
    let load = || store.load_document(SESSION_ID).expect("load").expect("doc");

    let session_bytes = get(&format!("/sessions/{SESSION_ID}"));
    let overview_bytes = get("/");
    let floor = percentiles(|| {
        black_box(load());
    });
    let page = percentiles(|| {
        black_box(session_page());
    });
    let page_http = percentiles(|| {
        black_box(get(&format!("/sessions/{SESSION_ID}")));
    });
    let over = percentiles(|| {
        black_box(overview());
    });
    let over_http = percentiles(|| {
        black_box(get("/"));
    });
    println!(
        "dashboard: 56-minute session with 250 Hz ECG ({session_bytes} bytes of HTML); overview of {SITES} sites x {ROOMS} rooms ({overview_bytes} bytes); p50 / p95 of {RUNS} runs"
    );
    println!("| measure | p50 | p95 | target |");
    println!("|---|---|---|---|");
    println!(
        "| floor: load the session document | {} | {} | - |",
        ms(floor.0),
        ms(floor.1)
    );
    println!(
        "| session page: read + HTML | {} | {} | - |",
        ms(page.0),
        ms(page.1)
    );
    println!(
        "| session page over HTTP (cookie, audit fsync, read, HTML) | {} | {} | <= 100 ms p95 |",
        ms(page_http.0),
        ms(page_http.1)
    );
    println!(
        "| overview: read + HTML | {} | {} | - |",
        ms(over.0),
        ms(over.1)
    );
    println!(
        "| overview over HTTP | {} | {} | - |",
        ms(over_http.0),
        ms(over_http.1)
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut g = c.benchmark_group("dashboard");
    g.bench_function("load_session_document", |b| b.iter(|| black_box(load())));
    g.bench_function("session_page", |b| b.iter(|| black_box(session_page())));
    g.bench_function("session_page_http", |b| {
        b.iter(|| black_box(get(&format!("/sessions/{SESSION_ID}"))))
    });
    g.bench_function("overview_50x6", |b| b.iter(|| black_box(overview())));
    g.bench_function("overview_50x6_http", |b| b.iter(|| black_box(get("/"))));
    g.finish();
    c.final_summary();
    rt.block_on(cloud.shutdown());
}
