//! A fault-injecting UDP relay for tests and demos: appliances are configured with the relay's
//! address as their cloud address, and the relay forwards datagrams to the real cloud and
//! back, dropping, delaying, duplicating and reordering them as told — at runtime through
//! [`RelayHandle::set`], or on a schedule through a [`Timeline`].
//!
//! Each client address gets its own upstream socket (a *flow*), so the cloud sees one 5-tuple
//! per appliance as QUIC needs; idle flows expire. Everything is bounded: flows
//! ([`MAX_FLOWS`]), datagrams held for a delay ([`MAX_IN_FLIGHT_DATAGRAMS`],
//! [`MAX_IN_FLIGHT_BYTES`]), the delay itself ([`MAX_DELAY`]). Randomness comes from a seeded
//! generator, one stream per direction, so a run is reproducible from its seed given the same
//! order of datagrams.
//!
//! This is test-support code, not a production proxy: it sends to nothing but the configured
//! upstream and the clients that wrote to it, keeps no state beyond its counters, and does not
//! look inside datagrams. The decision of what happens to a datagram is pure (`faults.rs`);
//! this module is the shell of sockets and timers around it.

mod faults;
mod timeline;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use faults::{Faults, FaultsError, MAX_DELAY, REORDER_HOLD};
pub use timeline::{MAX_STEP_TIME, MAX_TIMELINE_STEPS, MIN_REPEAT_PERIOD, Timeline, TimelineError};

use faults::{DropReason, Fate, SplitMix64, decide};

/// The most clients the relay serves at once. A test or demo clinic has a handful of
/// appliances; 256 leaves room for load tests of the cloud while keeping one socket and one
/// task per flow cheap.
pub const MAX_FLOWS: usize = 256;

/// The most datagrams held for a delay at once; more are dropped and counted. At QUIC's usual
/// 1,200–1,500 byte packets this is a few megabytes, enough for several appliances' worth of
/// 200 ms delay at full speed on loopback.
pub const MAX_IN_FLIGHT_DATAGRAMS: usize = 4_096;

/// The most bytes held for a delay at once, so large datagrams cannot make the count bound
/// above a memory problem.
pub const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// The largest datagram the relay receives whole: the largest UDP payload there is. QUIC
/// sends far smaller ones; a smaller buffer would silently truncate a larger one.
pub const MAX_DATAGRAM_BYTES: usize = 65_535;

/// How long a flow may see no datagram in either direction before its upstream socket is
/// closed: twice QUIC's 30 s idle timeout, so a connection that QUIC still considers alive
/// (across a cut shorter than that) keeps its upstream port.
pub const FLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The shortest flow idle timeout [`RelayOptions`] accept; shorter would make flow expiry
/// checks a busy loop.
pub const MIN_FLOW_IDLE_TIMEOUT: Duration = Duration::from_millis(20);

/// The longest interval between checks for idle flows; with a short idle timeout the check
/// runs at a quarter of it.
const MAX_FLOW_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The pause after an unexpected socket error before receiving again, so a socket in a
/// persistent error state cannot spin a core.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// The seed of [`Relay::start`].
pub const DEFAULT_SEED: u64 = 0x5EED;

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client (an appliance) to the upstream (the cloud).
    ToUpstream,
    /// From the upstream back to a client.
    ToClient,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::ToUpstream, Direction::ToClient];

    fn index(self) -> usize {
        match self {
            Direction::ToUpstream => 0,
            Direction::ToClient => 1,
        }
    }
}

/// How a relay runs; [`RelayOptions::default`] is what [`Relay::start`] uses.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Seed of the generator behind loss, jitter, duplication and reordering.
    pub seed: u64,
    /// How long a flow may be idle before it expires, at least [`MIN_FLOW_IDLE_TIMEOUT`].
    pub flow_idle_timeout: Duration,
    /// How many clients at once, 1 to [`MAX_FLOWS`].
    pub max_flows: usize,
    /// How many datagrams may be held for a delay at once, 1 to [`MAX_IN_FLIGHT_DATAGRAMS`].
    pub max_in_flight: usize,
}

impl Default for RelayOptions {
    fn default() -> RelayOptions {
        RelayOptions {
            seed: DEFAULT_SEED,
            flow_idle_timeout: FLOW_IDLE_TIMEOUT,
            max_flows: MAX_FLOWS,
            max_in_flight: MAX_IN_FLIGHT_DATAGRAMS,
        }
    }
}

impl RelayOptions {
    fn validate(&self) -> io::Result<()> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !(1..=MAX_FLOWS).contains(&self.max_flows) {
            return invalid(format!(
                "relay max_flows {} is outside 1 to {MAX_FLOWS}",
                self.max_flows
            ));
        }
        if !(1..=MAX_IN_FLIGHT_DATAGRAMS).contains(&self.max_in_flight) {
            return invalid(format!(
                "relay max_in_flight {} is outside 1 to {MAX_IN_FLIGHT_DATAGRAMS}",
                self.max_in_flight
            ));
        }
        if self.flow_idle_timeout < MIN_FLOW_IDLE_TIMEOUT {
            return invalid(format!(
                "relay flow idle timeout {:?} is under the minimum of {MIN_FLOW_IDLE_TIMEOUT:?}",
                self.flow_idle_timeout
            ));
        }
        Ok(())
    }
}

/// Counters of one direction. They count events, so one datagram may appear in several:
/// a delayed datagram that meets a cut on its way out counts in `delayed` and `dropped_cut`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams received from this direction's sender.
    pub received: u64,
    /// Datagrams sent on (a duplicate counts twice).
    pub forwarded: u64,
    /// Dropped because the direction was cut, on arrival or when a delay ended.
    pub dropped_cut: u64,
    /// Dropped by random loss.
    pub dropped_loss: u64,
    /// Given a second copy.
    pub duplicated: u64,
    /// Held back so that later datagrams overtake them.
    pub reordered: u64,
    /// Copies held for a delay (rather than sent at once).
    pub delayed: u64,
    /// Dropped because the in-flight queue was full.
    pub dropped_queue_full: u64,
    /// Failed to send (the kernel refused; e.g. nobody listening upstream).
    pub send_errors: u64,
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {}, forwarded {}, dropped {} by cut, {} by loss, {} queue full, \
             duplicated {}, reordered {}, delayed {}, send errors {}",
            self.received,
            self.forwarded,
            self.dropped_cut,
            self.dropped_loss,
            self.dropped_queue_full,
            self.duplicated,
            self.reordered,
            self.delayed,
            self.send_errors
        )
    }
}

/// A snapshot of the relay's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to upstream.
    pub to_upstream: DirectionStats,
    /// Upstream to client.
    pub to_client: DirectionStats,
    /// Flows opened since start.
    pub flows_opened: u64,
    /// Flows closed for idleness.
    pub flows_expired: u64,
    /// Flows open now.
    pub flows_active: u64,
    /// Datagrams from a new client dropped because all flows were taken.
    pub dropped_flow_limit: u64,
    /// Datagrams held for a delay now.
    pub in_flight: u64,
    /// Timeline steps applied since start, over all timelines run.
    pub timeline_steps: u64,
}

impl RelayStats {
    /// The counters of one direction.
    pub fn direction(&self, direction: Direction) -> DirectionStats {
        match direction {
            Direction::ToUpstream => self.to_upstream,
            Direction::ToClient => self.to_client,
        }
    }
}

impl fmt::Display for RelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "to upstream: {}; to client: {}; flows {} opened, {} expired, {} active, \
             {} datagrams refused at the flow limit",
            self.to_upstream,
            self.to_client,
            self.flows_opened,
            self.flows_expired,
            self.flows_active,
            self.dropped_flow_limit
        )
    }
}

#[derive(Debug, Default)]
struct DirectionCounters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped_cut: AtomicU64,
    dropped_loss: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    delayed: AtomicU64,
    dropped_queue_full: AtomicU64,
    send_errors: AtomicU64,
}

impl DirectionCounters {
    fn snapshot(&self) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            received: get(&self.received),
            forwarded: get(&self.forwarded),
            dropped_cut: get(&self.dropped_cut),
            dropped_loss: get(&self.dropped_loss),
            duplicated: get(&self.duplicated),
            reordered: get(&self.reordered),
            delayed: get(&self.delayed),
            dropped_queue_full: get(&self.dropped_queue_full),
            send_errors: get(&self.send_errors),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Locks a mutex whose data stays consistent even if a holder panicked: the relay's mutexes
/// guard plain values replaced whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a datagram goes.
#[derive(Debug, Clone)]
enum Route {
    /// Through a flow's connected upstream socket.
    Upstream(Arc<UdpSocket>),
    /// Out of the listening socket to this client.
    Client(SocketAddr),
}

/// A datagram held for a delay.
#[derive(Debug)]
struct Delayed {
    due: Instant,
    /// Arrival order, so datagrams due at the same instant leave in the order they came.
    seq: u64,
    direction: Direction,
    route: Route,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Delayed) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Delayed) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Delayed) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// State shared by the relay's tasks and its handle.
struct Shared {
    listener: UdpSocket,
    faults: Mutex<[Faults; 2]>,
    rngs: [Mutex<SplitMix64>; 2],
    counters: [DirectionCounters; 2],
    flows_opened: AtomicU64,
    flows_expired: AtomicU64,
    flows_active: AtomicU64,
    dropped_flow_limit: AtomicU64,
    timeline_steps: AtomicU64,
    in_flight: AtomicUsize,
    in_flight_bytes: AtomicUsize,
    max_in_flight: usize,
    delayed_seq: AtomicU64,
    delayed_tx: mpsc::Sender<Delayed>,
    /// When the relay started: flow activity is kept as milliseconds since then.
    started: Instant,
}

impl Shared {
    fn faults(&self, direction: Direction) -> Faults {
        lock(&self.faults)[direction.index()]
    }

    fn counters(&self, direction: Direction) -> &DirectionCounters {
        &self.counters[direction.index()]
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Applies the faults of `direction` to one received datagram.
    async fn relay(&self, direction: Direction, route: &Route, bytes: &[u8]) {
        let faults = self.faults(direction);
        let fate = decide(&faults, &mut lock(&self.rngs[direction.index()]));
        let counters = self.counters(direction);
        let (after, duplicate_after) = match fate {
            Fate::Drop(DropReason::Cut) => return bump(&counters.dropped_cut),
            Fate::Drop(DropReason::Loss) => return bump(&counters.dropped_loss),
            Fate::Deliver {
                after,
                duplicate_after,
                reordered,
            } => {
                if reordered {
                    bump(&counters.reordered);
                }
                if duplicate_after.is_some() {
                    bump(&counters.duplicated);
                }
                (after, duplicate_after)
            }
        };
        for delay in std::iter::once(after).chain(duplicate_after) {
            if delay.is_zero() {
                self.send(direction, route, bytes).await;
            } else {
                self.hold(direction, route, bytes, delay);
            }
        }
    }

    /// Sends one datagram now and counts it.
    async fn send(&self, direction: Direction, route: &Route, bytes: &[u8]) {
        let result = match route {
            Route::Upstream(socket) => socket.send(bytes).await,
            Route::Client(addr) => self.listener.send_to(bytes, *addr).await,
        };
        let counters = self.counters(direction);
        match result {
            Ok(_) => bump(&counters.forwarded),
            Err(e) => {
                tracing::debug!(?direction, error = %e, "relay could not send a datagram");
                bump(&counters.send_errors);
            }
        }
    }

    /// Hands a datagram to the delay queue, or drops it if the queue is full.
    fn hold(&self, direction: Direction, route: &Route, bytes: &[u8], delay: Duration) {
        let counters = self.counters(direction);
        let count = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let held_bytes = self
            .in_flight_bytes
            .fetch_add(bytes.len(), Ordering::AcqRel);
        if count >= self.max_in_flight || held_bytes + bytes.len() > MAX_IN_FLIGHT_BYTES {
            self.release(bytes.len());
            return bump(&counters.dropped_queue_full);
        }
        let delayed = Delayed {
            due: Instant::now() + delay,
            seq: self.delayed_seq.fetch_add(1, Ordering::Relaxed),
            direction,
            route: route.clone(),
            bytes: bytes.to_vec(),
        };
        match self.delayed_tx.try_send(delayed) {
            Ok(()) => bump(&counters.delayed),
            // The channel's capacity equals max_in_flight, which the counter above enforces,
            // so it is only full or closed while the relay shuts down.
            Err(_) => {
                self.release(bytes.len());
                bump(&counters.dropped_queue_full);
            }
        }
    }

    /// Gives back the place of one held datagram of `n_bytes`, taken by [`Shared::hold`].
    fn release(&self, n_bytes: usize) {
        let count = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let held_bytes = self.in_flight_bytes.fetch_sub(n_bytes, Ordering::AcqRel);
        debug_assert!(
            count > 0 && held_bytes >= n_bytes,
            "released more than was held"
        );
    }

    fn stats(&self) -> RelayStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RelayStats {
            to_upstream: self.counters(Direction::ToUpstream).snapshot(),
            to_client: self.counters(Direction::ToClient).snapshot(),
            flows_opened: get(&self.flows_opened),
            flows_expired: get(&self.flows_expired),
            flows_active: get(&self.flows_active),
            dropped_flow_limit: get(&self.dropped_flow_limit),
            timeline_steps: get(&self.timeline_steps),
            in_flight: u64::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(u64::MAX),
        }
    }
}

/// One client's path to the upstream.
struct Flow {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the relay started at the last datagram either way.
    last_active_ms: Arc<AtomicU64>,
    /// Reads the upstream socket and relays to the client.
    reader: JoinHandle<()>,
}

/// The entry point: [`Relay::start`] binds the listening socket and returns a
/// [`RelayHandle`] that controls the running relay.
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// Starts a relay listening on `listen` that forwards to `upstream`, with
    /// [`DEFAULT_SEED`].
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<RelayHandle> {
        Relay::start_with(listen, upstream, RelayOptions::default()).await
    }

    /// Starts a relay whose random faults follow `seed`.
    pub async fn start_with_seed(
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
    ) -> io::Result<RelayHandle> {
        let options = RelayOptions {
            seed,
            ..RelayOptions::default()
        };
        Relay::start_with(listen, upstream, options).await
    }

    /// Starts a relay with explicit options.
    pub async fn start_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        options: RelayOptions,
    ) -> io::Result<RelayHandle> {
        options.validate()?;
        let listener = UdpSocket::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (delayed_tx, delayed_rx) = mpsc::channel(options.max_in_flight);
        // Two independent streams, so the fate of client datagrams does not depend on how
        // replies interleave with them.
        let rng = |direction: u64| {
            Mutex::new(SplitMix64::new(
                options.seed ^ direction.wrapping_mul(0xD1B5_4A32_D192_ED03),
            ))
        };
        let shared = Arc::new(Shared {
            listener,
            faults: Mutex::new([Faults::OK; 2]),
            rngs: [rng(0), rng(1)],
            counters: Default::default(),
            flows_opened: AtomicU64::new(0),
            flows_expired: AtomicU64::new(0),
            flows_active: AtomicU64::new(0),
            dropped_flow_limit: AtomicU64::new(0),
            timeline_steps: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            in_flight_bytes: AtomicUsize::new(0),
            max_in_flight: options.max_in_flight,
            delayed_seq: AtomicU64::new(0),
            delayed_tx,
            started: Instant::now(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let listen_task = tokio::spawn(listen_loop(
            shared.clone(),
            upstream,
            options.clone(),
            shutdown_rx.clone(),
        ));
        let delay_task = tokio::spawn(delay_loop(shared.clone(), delayed_rx, shutdown_rx.clone()));
        tracing::info!(%local_addr, %upstream, seed = options.seed, "relay listening");
        Ok(RelayHandle {
            local_addr,
            upstream,
            shared,
            shutdown,
            shutdown_rx,
            tasks: vec![listen_task, delay_task],
            timeline: Mutex::new(None),
        })
    }
}

/// Controls a running relay. Dropping it stops the relay too, without waiting;
/// [`RelayHandle::shutdown`] waits until the sockets are closed.
pub struct RelayHandle {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    timeline: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayHandle")
            .field("local_addr", &self.local_addr)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl RelayHandle {
    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the relay forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Applies `faults` to both directions from now on.
    pub fn set(&self, faults: Faults) -> Result<(), FaultsError> {
        faults.validate()?;
        *lock(&self.shared.faults) = [faults; 2];
        Ok(())
    }

    /// Applies `faults` to one direction from now on.
    pub fn set_direction(&self, direction: Direction, faults: Faults) -> Result<(), FaultsError> {
        faults.validate()?;
        lock(&self.shared.faults)[direction.index()] = faults;
        Ok(())
    }

    /// The faults in force for a direction.
    pub fn faults(&self, direction: Direction) -> Faults {
        self.shared.faults(direction)
    }

    /// Applies `timeline` to both directions, its times counted from now, on a task; replaces
    /// any timeline already running. [`RelayHandle::set`] still works meanwhile, until the
    /// timeline's next step.
    pub fn run_timeline(&self, timeline: Timeline) {
        let task = tokio::spawn(timeline_loop(
            self.shared.clone(),
            timeline,
            Instant::now(),
            self.shutdown_rx.clone(),
        ));
        if let Some(old) = lock(&self.timeline).replace(task) {
            old.abort();
        }
    }

    /// Runs [`Timeline::flap`]: clean for `up`, cut for `down`, over and over.
    pub fn flap(&self, up: Duration, down: Duration) -> Result<(), TimelineError> {
        self.run_timeline(Timeline::flap(up, down)?);
        Ok(())
    }

    /// Stops a running timeline, leaving its last faults in force.
    pub fn stop_timeline(&self) {
        if let Some(task) = lock(&self.timeline).take() {
            task.abort();
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RelayStats {
        self.shared.stats()
    }

    /// Stops the relay: drops datagrams still held for a delay, closes every socket, and
    /// returns once they are closed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let timeline = lock(&self.timeline).take();
        for task in self.tasks.drain(..).chain(timeline) {
            // A task that panicked has nothing left to close; the panic is already logged.
            let _ = task.await;
        }
        tracing::info!(local_addr = %self.local_addr, stats = %self.shared.stats(), "relay stopped");
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Resolves once shutdown is asked for (or the handle is gone).
async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Receives from clients, opens and expires flows, and relays towards the upstream.
async fn listen_loop(
    shared: Arc<Shared>,
    upstream: SocketAddr,
    options: RelayOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let sweep_every = (options.flow_idle_timeout / 4).min(MAX_FLOW_SWEEP_INTERVAL);
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle_ms = u64::try_from(options.flow_idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut buf = vec![0_u8; MAX_DATAGRAM_BYTES];
    loop {
        tokio::select! {
            () = shutdown_requested(&mut shutdown) => break,
            _ = sweep.tick() => {
                let now_ms = shared.now_ms();
                flows.retain(|client, flow| {
                    let idle = now_ms.saturating_sub(flow.last_active_ms.load(Ordering::Relaxed));
                    if idle < idle_ms {
                        return true;
                    }
                    tracing::debug!(%client, "relay flow expired");
                    flow.reader.abort();
                    bump(&shared.flows_expired);
                    shared.flows_active.fetch_sub(1, Ordering::Relaxed);
                    false
                });
            }
            received = shared.listener.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "relay listener receive failed");
                        tokio::time::sleep(RECV_ERROR_BACKOFF).await;
                        continue;
                    }
                };
                bump(&shared.counters(Direction::ToUpstream).received);
                let route = match flows.get(&client) {
                    Some(flow) => {
                        flow.last_active_ms.store(shared.now_ms(), Ordering::Relaxed);
                        Route::Upstream(flow.upstream.clone())
                    }
                    None if flows.len() >= options.max_flows => {
                        tracing::debug!(%client, "relay flow limit reached");
                        bump(&shared.dropped_flow_limit);
                        continue;
                    }
                    None => match open_flow(&shared, client, upstream).await {
                        Ok(flow) => {
                            let route = Route::Upstream(flow.upstream.clone());
                            flows.insert(client, flow);
                            route
                        }
                        Err(e) => {
                            tracing::warn!(%client, %upstream, error = %e, "relay cannot open an upstream socket");
                            bump(&shared.counters(Direction::ToUpstream).send_errors);
                            continue;
                        }
                    },
                };
                shared.relay(Direction::ToUpstream, &route, &buf[..n]).await;
            }
        }
    }
    for (_, flow) in flows.drain() {
        flow.reader.abort();
        // Aborted tasks finish at once; waiting makes sure their sockets are closed.
        let _ = flow.reader.await;
    }
}

/// Opens a flow for `client`: an upstream socket of its own and a task reading it.
async fn open_flow(
    shared: &Arc<Shared>,
    client: SocketAddr,
    upstream: SocketAddr,
) -> io::Result<Flow> {
    // Bind on loopback when the upstream is on loopback, so the relay opens nothing on other
    // interfaces in tests.
    let local_ip = match upstream.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    socket.connect(upstream).await?;
    let socket = Arc::new(socket);
    let last_active_ms = Arc::new(AtomicU64::new(shared.now_ms()));
    let reader = tokio::spawn(flow_loop(
        shared.clone(),
        socket.clone(),
        client,
        last_active_ms.clone(),
    ));
    bump(&shared.flows_opened);
    shared.flows_active.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%client, upstream_port = ?socket.local_addr().map(|a| a.port()), "relay flow opened");
    Ok(Flow {
        upstream: socket,
        last_active_ms,
        reader,
    })
}

/// Relays what the upstream sends on one flow back to its client, until aborted.
async fn flow_loop(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    last_active_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0_u8; MAX_DATAGRAM_BYTES];
    let route = Route::Client(client);
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                last_active_ms.store(shared.now_ms(), Ordering::Relaxed);
                bump(&shared.counters(Direction::ToClient).received);
                shared.relay(Direction::ToClient, &route, &buf[..n]).await;
            }
            Err(e) => {
                // A connected UDP socket reports an ICMP error (nobody listening upstream, e.g.
                // while the cloud restarts) on the next receive; that is not fatal.
                tracing::debug!(%client, error = %e, "relay upstream receive failed");
                tokio::time::sleep(RECV_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Holds delayed datagrams in a heap ordered by due time and sends each when it is due —
/// unless its direction is cut by then, as a partition also loses what was on the wire.
async fn delay_loop(
    shared: Arc<Shared>,
    mut incoming: mpsc::Receiver<Delayed>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut heap: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    loop {
        let next_due = heap.peek().map(|Reverse(d)| d.due);
        tokio::select! {
            () = shutdown_requested(&mut shutdown) => break,
            delayed = incoming.recv() => match delayed {
                Some(d) => heap.push(Reverse(d)),
                None => break,
            },
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse(d)| d.due <= now) {
                    let Some(Reverse(d)) = heap.pop() else { break };
                    if shared.faults(d.direction).cut {
                        bump(&shared.counters(d.direction).dropped_cut);
                    } else {
                        shared.send(d.direction, &d.route, &d.bytes).await;
                    }
                    shared.release(d.bytes.len());
                }
            }
        }
    }
    for Reverse(d) in heap.drain() {
        shared.release(d.bytes.len());
    }
}

/// Applies a timeline's steps at their times, round after round if it repeats.
async fn timeline_loop(
    shared: Arc<Shared>,
    timeline: Timeline,
    start: Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut round_start = Duration::ZERO;
    loop {
        for (at, faults) in timeline.steps() {
            let Some(due) = round_start
                .checked_add(*at)
                .and_then(|offset| start.checked_add(offset))
            else {
                return;
            };
            tokio::select! {
                () = shutdown_requested(&mut shutdown) => return,
                () = tokio::time::sleep_until(due) => {}
            }
            tracing::info!(at = ?(round_start + *at), %faults, "relay faults changed");
            *lock(&shared.faults) = [*faults; 2];
            bump(&shared.timeline_steps);
        }
        match timeline
            .repeat_after()
            .and_then(|period| round_start.checked_add(period))
        {
            Some(next) => round_start = next,
            None => return,
        }
    }
}
