//! The BLE collector: the room's monitors, read through BlueZ with btleplug, as a
//! [`VitalsSource`].
//!
//! One thread runs a small tokio runtime with one task per assigned monitor and one for the
//! adapter's events. Each monitor task finds its monitor among the scan results (by address or
//! advertised name), connects, discovers services, subscribes to every characteristic its
//! [`Measures`] need (notifications and indications alike), starts Polar's ECG stream when
//! asked for ECG, and decodes each value as it arrives, stamped with the appliance's clock.
//! The recorder thread drains what they gathered with [`VitalsSource::poll`].
//!
//! What goes wrong, and what happens then:
//! - The link drops (BlueZ reports the device disconnected, or the device stops answering):
//!   the task reports [`DeviceStatus::Disconnected`] with the time, which the advisory engine
//!   turns into a technical advisory that clears, with its end time, when the monitor is back.
//!   It then reconnects with exponential backoff ([`BACKOFF_MIN`] to [`BACKOFF_MAX`]),
//!   rediscovers and resubscribes.
//! - A monitor connects but lacks a characteristic its kind needs (a half-started device, or
//!   the wrong device at that address): the connection counts as failed, and is retried.
//! - A monitor goes silent while connected for longer than its `silence` allowance: the
//!   watchdog drops the link and restarts the adapter's scan (BlueZ's event stream has been
//!   seen to stall after hours).
//! - A value does not decode: it is counted and logged, never recorded, never a panic.
//! - The strap reports lost skin contact, or the oximeter reports its sensor off the patient
//!   or displaced: [`DeviceStatus::SensorContact`], a technical advisory.
//! - No adapter, or no D-Bus: logged and retried every [`ADAPTER_RETRY`]; the appliance keeps
//!   running (and its status says why there are no vitals).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use btleplug::api::{
    Central, CentralEvent, CharPropFlags, Manager as _, Peripheral as _, ScanFilter, WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, sleep, timeout};
use uuid::Uuid;
use vigil_shared::vitals::{Channel, Sample, SampleBatch};

use super::{Measures, PMD_START_ECG, POLAR_PMD_CONTROL, characteristic_for};
use crate::gatt::{
    Characteristic, Measurement, PlxContinuous, PlxSpotCheck, SensorContact, decode, to_samples,
};
use crate::source::{DeviceStatus, SourceEvent, VitalsSource};

/// The appliance's clock, microseconds since the Unix epoch: every value is stamped with it on
/// arrival (monitor clocks are not trusted; see [`crate::gatt::samples`]).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// First wait before reconnecting to a monitor.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between reconnection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long service discovery, a subscription or a write may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait between attempts to open the adapter.
pub const ADAPTER_RETRY: Duration = Duration::from_secs(5);
/// How often a connected monitor's link is checked besides BlueZ's own events.
pub const LINK_CHECK: Duration = Duration::from_secs(5);
/// Most events held for the recorder between polls (it polls several times a second; this is
/// minutes of every channel). Beyond it the oldest are dropped and counted.
pub const MAX_QUEUED_EVENTS: usize = 50_000;

/// One monitor assigned to the room.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    /// The name advisories and the status API use (`hr-strap`, `oximeter`, …).
    pub device: String,
    /// The monitor's Bluetooth address (any case), if assigned by address.
    pub address: Option<String>,
    /// The name it advertises, if assigned by name.
    pub name: Option<String>,
    /// What it measures.
    pub measures: Vec<Measures>,
    /// Longest silence while connected before the watchdog steps in.
    pub silence: Duration,
}

impl MonitorSpec {
    fn matches(&self, address: &str, local_name: Option<&str>) -> bool {
        if let Some(want) = &self.address {
            return want.eq_ignore_ascii_case(address);
        }
        match (&self.name, local_name) {
            (Some(want), Some(name)) => want == name,
            _ => false,
        }
    }
}

/// What the collector needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorSettings {
    /// The adapter to use (`hci0`); the first one BlueZ lists when absent.
    pub adapter: Option<String>,
    /// The room's monitors.
    pub monitors: Vec<MonitorSpec>,
}

/// Why Bluetooth could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BleError {
    /// BlueZ (or D-Bus) said no.
    #[error("bluetooth: {0}")]
    Bluetooth(#[from] btleplug::Error),
    /// The adapter asked for does not exist.
    #[error("no bluetooth adapter {wanted}; BlueZ has: {}", if found.is_empty() { "none".to_owned() } else { found.join(", ") })]
    NoAdapter {
        /// The name asked for (or "any").
        wanted: String,
        /// The adapters there are.
        found: Vec<String>,
    },
    /// The collector's thread could not start.
    #[error("cannot start the bluetooth thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A monitor's state as the status API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Searching,
    Connecting,
    Connected,
    Disconnected,
}

impl LinkState {
    fn name(self) -> &'static str {
        match self {
            LinkState::Searching => "searching",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Disconnected => "disconnected",
        }
    }
}

/// What happened to one monitor's link since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkCounters {
    /// Connections that reached streaming.
    pub connections: u64,
    /// Attempts that failed after the monitor was found (refused, timed out, or missing a
    /// characteristic).
    pub failed: u64,
    /// Times the watchdog dropped a silent link.
    pub watchdog: u64,
}

/// What the tasks share with the recorder thread.
#[derive(Debug)]
struct Shared {
    events: VecDeque<SourceEvent>,
    adapter: String,
    links: BTreeMap<String, LinkState>,
    counters: BTreeMap<String, LinkCounters>,
    /// Events dropped because the recorder did not poll.
    dropped: u64,
    /// Values that did not decode.
    malformed: u64,
}

impl Shared {
    fn push(&mut self, event: SourceEvent) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(shared: &SharedRef) -> MutexGuard<'_, Shared> {
    // A panic elsewhere must not stop recording; the queue is consistent after every push.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counters for the status API and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CollectorStats {
    /// Values that did not decode.
    pub malformed: u64,
    /// Events dropped because the recorder fell behind.
    pub dropped: u64,
}

/// The running collector. Dropping it stops its thread and disconnects the monitors.
pub struct BleCollector {
    shared: SharedRef,
    channels: Vec<Channel>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BleCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleCollector")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl BleCollector {
    /// Starts the collector's thread. Bluetooth problems do not fail this: they are logged and
    /// retried, and the status shows them.
    pub fn start(settings: CollectorSettings, clock: Clock) -> Result<BleCollector, BleError> {
        let mut channels: Vec<Channel> = settings
            .monitors
            .iter()
            .flat_map(|m| m.measures.iter().flat_map(|k| k.channels().iter().copied()))
            .collect();
        channels.sort_by_key(|c| Channel::ALL.iter().position(|a| a == c));
        channels.dedup();
        let shared = Arc::new(Mutex::new(Shared {
            events: VecDeque::new(),
            adapter: "starting".into(),
            links: settings
                .monitors
                .iter()
                .map(|m| (m.device.clone(), LinkState::Searching))
                .collect(),
            counters: BTreeMap::new(),
            dropped: 0,
            malformed: 0,
        }));
        // Until a monitor connects it is not delivering: say so from the start.
        let now = clock();
        for m in &settings.monitors {
            lock(&shared).push(SourceEvent::Device {
                device: m.device.clone(),
                status: DeviceStatus::Disconnected,
                at_us: now,
            });
        }
        let (stop, stop_rx) = watch::channel(false);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ble-collector".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the bluetooth runtime");
                        lock(&thread_shared).adapter = format!("error: {e}");
                        return;
                    }
                };
                rt.block_on(run(settings, thread_shared, clock, stop_rx));
            })?;
        Ok(BleCollector {
            shared,
            channels,
            stop,
            thread: Some(thread),
        })
    }

    /// One monitor's link counters since start.
    pub fn link_counters(&self, device: &str) -> LinkCounters {
        lock(&self.shared)
            .counters
            .get(device)
            .copied()
            .unwrap_or_default()
    }

    /// Counters since start.
    pub fn stats(&self) -> CollectorStats {
        let s = lock(&self.shared);
        CollectorStats {
            malformed: s.malformed,
            dropped: s.dropped,
        }
    }
}

impl Drop for BleCollector {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl VitalsSource for BleCollector {
    fn describe(&self) -> String {
        let s = lock(&self.shared);
        let links: Vec<String> = s
            .links
            .iter()
            .map(|(device, state)| {
                let c = s.counters.get(device).copied().unwrap_or_default();
                let mut text = format!("{device} {}", state.name());
                if c != LinkCounters::default() {
                    text.push_str(&format!(
                        " (connections {}, failed {}, watchdog {})",
                        c.connections, c.failed, c.watchdog
                    ));
                }
                text
            })
            .collect();
        format!("ble {}: {}", s.adapter, links.join("; "))
    }

    fn poll(&mut self, _now_us: i64) -> Vec<SourceEvent> {
        lock(&self.shared).events.drain(..).collect()
    }

    fn channels(&self) -> Vec<Channel> {
        self.channels.clone()
    }
}

/// Opens the adapter named `wanted` (`hci0`), or the first one.
pub async fn open_adapter(wanted: Option<&str>) -> Result<Adapter, BleError> {
    let manager = Manager::new().await?;
    let mut found = Vec::new();
    for adapter in manager.adapters().await? {
        let info = adapter.adapter_info().await?;
        let name = info
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        if wanted.is_none_or(|w| w == name) {
            return Ok(adapter);
        }
        found.push(name);
    }
    Err(BleError::NoAdapter {
        wanted: wanted.unwrap_or("(any)").to_owned(),
        found,
    })
}

/// A monitor seen by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its address.
    pub address: String,
    /// The name it advertises.
    pub name: Option<String>,
    /// The health services it advertises (or, once connected, offers).
    pub measures: Vec<Measures>,
    /// Every service UUID it advertises.
    pub services: Vec<Uuid>,
}

/// Scans for `duration` and lists what was seen, health monitors first.
pub async fn scan(adapter: Option<&str>, duration: Duration) -> Result<Vec<Seen>, BleError> {
    let adapter = open_adapter(adapter).await?;
    adapter.start_scan(ScanFilter::default()).await?;
    sleep(duration).await;
    let mut seen = Vec::new();
    for p in adapter.peripherals().await? {
        let Some(props) = p.properties().await? else {
            continue;
        };
        let measures = props
            .services
            .iter()
            .filter_map(Measures::from_service)
            .collect();
        seen.push(Seen {
            address: props.address.to_string(),
            name: props.local_name,
            measures,
            services: props.services,
        });
    }
    let _ = adapter.stop_scan().await;
    seen.sort_by(|a, b| {
        (a.measures.is_empty(), &a.address).cmp(&(b.measures.is_empty(), &b.address))
    });
    Ok(seen)
}

async fn run(
    settings: CollectorSettings,
    shared: SharedRef,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match open_adapter(settings.adapter.as_deref()).await {
            Ok(adapter) => {
                let name = adapter
                    .adapter_info()
                    .await
                    .ok()
                    .and_then(|i| i.split_whitespace().next().map(str::to_owned))
                    .unwrap_or_else(|| "adapter".into());
                lock(&shared).adapter = name.clone();
                tracing::info!(adapter = %name, monitors = settings.monitors.len(), "bluetooth collector started");
                match with_adapter(&adapter, &settings, &shared, &clock, &mut stop).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "bluetooth adapter failed; reopening");
                        lock(&shared).adapter = format!("error: {e}");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "bluetooth unavailable; retrying");
                lock(&shared).adapter = format!("error: {e}");
            }
        }
        tokio::select! {
            _ = sleep(ADAPTER_RETRY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs the monitors on one adapter until told to stop (`Ok`) or the adapter fails.
async fn with_adapter(
    adapter: &Adapter,
    settings: &CollectorSettings,
    shared: &SharedRef,
    clock: &Clock,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BleError> {
    adapter.start_scan(ScanFilter::default()).await?;
    let mut events = adapter.events().await?;
    let (disconnected_tx, _) = broadcast::channel::<PeripheralId>(64);
    let (rescan_tx, mut rescan_rx) = mpsc::channel::<String>(8);
    let mut tasks = tokio::task::JoinSet::new();
    for spec in &settings.monitors {
        tasks.spawn(monitor_task(MonitorTask {
            adapter: adapter.clone(),
            spec: spec.clone(),
            disconnected: disconnected_tx.subscribe(),
            rescan: rescan_tx.clone(),
            shared: shared.clone(),
            clock: clock.clone(),
            stop: stop.clone(),
        }));
    }
    let result = loop {
        tokio::select! {
            event = events.next() => match event {
                Some(CentralEvent::DeviceDisconnected(id)) => {
                    let _ = disconnected_tx.send(id);
                }
                Some(_) => {}
                None => {
                    tracing::warn!("bluetooth event stream ended; restarting it");
                    match adapter.events().await {
                        Ok(e) => events = e,
                        Err(e) => break Err(e.into()),
                    }
                }
            },
            Some(device) = rescan_rx.recv() => {
                tracing::warn!(%device, "monitor silent; restarting the scan");
                let _ = adapter.stop_scan().await;
                if let Err(e) = adapter.start_scan(ScanFilter::default()).await {
                    break Err(e.into());
                }
                // A fresh event stream too: the old one may be what stalled.
                drop(events);
                events = match adapter.events().await {
                    Ok(e) => e,
                    Err(e) => break Err(e.into()),
                };
            }
            _ = stop.changed() => break Ok(()),
        }
    };
    if result.is_err() {
        tasks.abort_all();
    }
    // The tasks see the stop signal too and disconnect their monitors.
    let _ = timeout(OP_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let _ = adapter.stop_scan().await;
    result
}

struct MonitorTask {
    adapter: Adapter,
    spec: MonitorSpec,
    disconnected: broadcast::Receiver<PeripheralId>,
    rescan: mpsc::Sender<String>,
    shared: SharedRef,
    clock: Clock,
    stop: watch::Receiver<bool>,
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("not seen yet")]
    NotFound,
    #[error("{0}")]
    Bluetooth(#[from] btleplug::Error),
    #[error("{what} timed out")]
    Timeout { what: &'static str },
    #[error("it offers no {} characteristic (needs {})", .measures.label(), .needs)]
    Missing { measures: Measures, needs: String },
}

/// How a connected stretch ended.
enum End {
    Disconnected,
    Silent,
    Stop,
}

/// Doubling waits between attempts, from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

async fn monitor_task(mut t: MonitorTask) {
    let mut backoff = Backoff::new();
    let mut link = Link {
        device: t.spec.device.clone(),
        shared: t.shared.clone(),
        clock: t.clock.clone(),
        contact: true,
        last_error: None,
        last_us: BTreeMap::new(),
    };
    loop {
        if *t.stop.borrow() {
            return;
        }
        link.set_state(LinkState::Searching);
        let (adapter, spec, link_ref) = (&t.adapter, &t.spec, &link);
        let attempt = async move {
            let p = find(adapter, spec).await?;
            link_ref.set_state(LinkState::Connecting);
            connect(&p, spec).await.map(|()| p)
        };
        let attempt = tokio::select! {
            r = attempt => r,
            _ = t.stop.changed() => return,
        };
        match attempt {
            Ok(p) => {
                backoff.reset();
                link.last_error = None;
                let end = stream(&p, &mut t, &mut link).await;
                link.disconnected();
                let _ = timeout(OP_TIMEOUT, p.disconnect()).await;
                match end {
                    End::Stop => return,
                    End::Silent => {
                        link.count(|c| c.watchdog += 1);
                        tracing::warn!(device = %t.spec.device, silence_s = t.spec.silence.as_secs(), "monitor went silent; reconnecting");
                        let _ = t.rescan.try_send(t.spec.device.clone());
                    }
                    End::Disconnected => {
                        tracing::warn!(device = %t.spec.device, "monitor disconnected; reconnecting");
                    }
                }
            }
            Err(e) => link.failed(&e),
        }
        tokio::select! {
            _ = sleep(backoff.next()) => {}
            _ = t.stop.changed() => return,
        }
    }
}

/// The assigned monitor among the adapter's known devices.
async fn find(adapter: &Adapter, spec: &MonitorSpec) -> Result<Peripheral, LinkError> {
    for p in adapter.peripherals().await? {
        let Ok(Some(props)) = p.properties().await else {
            continue;
        };
        if spec.matches(&props.address.to_string(), props.local_name.as_deref()) {
            return Ok(p);
        }
    }
    Err(LinkError::NotFound)
}

async fn with_timeout<T>(
    what: &'static str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, btleplug::Error>>,
) -> Result<T, LinkError> {
    match timeout(limit, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(LinkError::Timeout { what }),
    }
}

/// Connects, discovers, checks that every kind's data characteristic is there, subscribes,
/// and starts the ECG stream when asked for. On failure the link is dropped, so the next
/// attempt starts from a fresh connection and a fresh discovery.
async fn connect(p: &Peripheral, spec: &MonitorSpec) -> Result<(), LinkError> {
    let result = set_up(p, spec).await;
    if result.is_err() {
        let _ = timeout(OP_TIMEOUT, p.disconnect()).await;
    }
    result
}

async fn set_up(p: &Peripheral, spec: &MonitorSpec) -> Result<(), LinkError> {
    if !p.is_connected().await? {
        with_timeout("connecting", CONNECT_TIMEOUT, p.connect()).await?;
    }
    with_timeout("service discovery", OP_TIMEOUT, p.discover_services()).await?;
    let offered = p.characteristics();
    let subscribable = |c: &btleplug::api::Characteristic| {
        c.properties
            .intersects(CharPropFlags::NOTIFY | CharPropFlags::INDICATE)
    };
    for &measures in &spec.measures {
        let data: Vec<_> = offered
            .iter()
            .filter(|c| subscribable(c))
            .filter(|c| {
                characteristic_for(&c.uuid)
                    .is_some_and(|k| measures.data_characteristics().contains(&k))
            })
            .collect();
        if data.is_empty() {
            let needs = measures
                .data_characteristics()
                .iter()
                .map(Characteristic::to_string)
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(LinkError::Missing { measures, needs });
        }
        let optional = offered.iter().filter(|c| subscribable(c)).filter(|c| {
            characteristic_for(&c.uuid)
                .is_some_and(|k| measures.optional_characteristics().contains(&k))
        });
        for c in data.into_iter().chain(optional) {
            with_timeout("subscribing", OP_TIMEOUT, p.subscribe(c)).await?;
        }
        if measures == Measures::Ecg
            && let Some(control) = offered.iter().find(|c| c.uuid == POLAR_PMD_CONTROL)
        {
            if subscribable(control) {
                with_timeout("subscribing", OP_TIMEOUT, p.subscribe(control)).await?;
            }
            with_timeout(
                "starting ECG",
                OP_TIMEOUT,
                p.write(control, &PMD_START_ECG, WriteType::WithResponse),
            )
            .await?;
        }
    }
    Ok(())
}

/// Delivers values until the link ends.
async fn stream(p: &Peripheral, t: &mut MonitorTask, link: &mut Link) -> End {
    let mut values = match p.notifications().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(device = %t.spec.device, error = %e, "cannot read notifications");
            return End::Disconnected;
        }
    };
    // Disconnect events queued before this connection (our own, after failed attempts) are
    // about earlier links; a drop from here on is caught by the events or the link check.
    t.disconnected = t.disconnected.resubscribe();
    link.count(|c| c.connections += 1);
    link.set_state(LinkState::Connected);
    link.emit(DeviceStatus::Connected);
    tracing::info!(device = %t.spec.device, address = %p.address(), "monitor connected");
    let id = p.id();
    let mut deadline = Instant::now() + t.spec.silence;
    let mut check = tokio::time::interval(LINK_CHECK);
    loop {
        tokio::select! {
            value = values.next() => match value {
                Some(v) => {
                    deadline = Instant::now() + t.spec.silence;
                    link.value(v.uuid, &v.value);
                }
                None => return End::Disconnected,
            },
            gone = t.disconnected.recv() => match gone {
                Ok(gone) if gone == id => return End::Disconnected,
                Ok(_) => {}
                // Missed some events: ask BlueZ directly.
                Err(_) => if !p.is_connected().await.unwrap_or(false) { return End::Disconnected },
            },
            _ = check.tick() => {
                if !p.is_connected().await.unwrap_or(false) {
                    return End::Disconnected;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return End::Silent,
            _ = t.stop.changed() => return End::Stop,
        }
    }
}

/// One monitor's link as the recorder sees it: status changes and decoded samples.
struct Link {
    device: String,
    shared: SharedRef,
    clock: Clock,
    /// The sensor contact last reported (true until the device says otherwise).
    contact: bool,
    /// The last connection error logged, so a monitor that stays away doesn't flood the log.
    last_error: Option<String>,
    /// The time of the last sample handed out, per channel.
    last_us: BTreeMap<Channel, i64>,
}

impl Link {
    fn set_state(&self, state: LinkState) {
        let mut s = lock(&self.shared);
        let entry = s.links.entry(self.device.clone()).or_insert(state);
        // Searching/connecting again after a drop still reads "disconnected" to people.
        if !(*entry == LinkState::Disconnected && state != LinkState::Connected) {
            *entry = state;
        }
    }

    fn count(&self, f: impl FnOnce(&mut LinkCounters)) {
        f(lock(&self.shared)
            .counters
            .entry(self.device.clone())
            .or_default());
    }

    fn emit(&self, status: DeviceStatus) {
        let at_us = (self.clock)();
        lock(&self.shared).push(SourceEvent::Device {
            device: self.device.clone(),
            status,
            at_us,
        });
    }

    fn disconnected(&self) {
        lock(&self.shared)
            .links
            .insert(self.device.clone(), LinkState::Disconnected);
        self.emit(DeviceStatus::Disconnected);
    }

    fn failed(&mut self, e: &LinkError) {
        let text = e.to_string();
        if !matches!(e, LinkError::NotFound) {
            self.count(|c| c.failed += 1);
        }
        if matches!(e, LinkError::NotFound) {
            tracing::debug!(device = %self.device, "monitor not seen yet");
        } else if self.last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(device = %self.device, error = %text, "cannot connect to monitor; retrying");
        } else {
            tracing::debug!(device = %self.device, error = %text, "cannot connect to monitor; retrying");
        }
        self.last_error = Some(text);
    }

    fn contact(&mut self, contact: bool) {
        if contact != self.contact {
            self.contact = contact;
            self.emit(DeviceStatus::SensorContact(contact));
        }
    }

    /// One notification or indication.
    fn value(&mut self, uuid: Uuid, bytes: &[u8]) {
        if uuid == POLAR_PMD_CONTROL {
            tracing::debug!(device = %self.device, response = ?bytes, "PMD control point response");
            return;
        }
        let Some(characteristic) = characteristic_for(&uuid) else {
            return;
        };
        let at_us = (self.clock)();
        let m = match decode(characteristic, bytes) {
            Ok(m) => m,
            Err(e) => {
                let mut s = lock(&self.shared);
                s.malformed += 1;
                // The first and then every hundredth: enough to notice, not a flood.
                if s.malformed % 100 == 1 {
                    tracing::warn!(device = %self.device, %characteristic, error = %e, malformed = s.malformed, "monitor sent a value that does not decode; not recorded");
                }
                return;
            }
        };
        match &m {
            Measurement::HeartRate(hr) => match hr.sensor_contact {
                SensorContact::Detected => self.contact(true),
                SensorContact::NotDetected => self.contact(false),
                SensorContact::NotSupported => {}
            },
            Measurement::PlxContinuous(PlxContinuous {
                device_sensor_status: Some(status),
                ..
            })
            | Measurement::PlxSpotCheck(PlxSpotCheck {
                device_sensor_status: Some(status),
                ..
            }) => self.contact(!status.sensor_off_patient()),
            _ => {}
        }
        let mut samples = to_samples(&m, at_us);
        self.keep_in_order(&mut samples);
        let batches = batches(samples);
        if !batches.is_empty() {
            let mut s = lock(&self.shared);
            for b in batches {
                s.push(SourceEvent::Samples(b));
            }
        }
    }
}

impl Link {
    /// Values back-dated from their arrival (RR intervals, ECG frames) overlap when
    /// notifications arrive in a burst: the second frame's first sample, counted back from
    /// its arrival, lands before the first frame's last. A channel's samples must go forward
    /// in time, so each is moved to just after the one before it when needed: ECG keeps its
    /// sample spacing, other channels may tie (two beats in one instant are still two beats).
    fn keep_in_order(&mut self, samples: &mut [(Channel, Sample)]) {
        for (channel, sample) in samples {
            let spacing = match channel {
                Channel::Ecg => ECG_PERIOD_US,
                _ => 0,
            };
            if let Some(&prev) = self.last_us.get(channel) {
                sample.t_us = sample.t_us.max(prev + spacing);
            }
            self.last_us.insert(*channel, sample.t_us);
        }
    }
}

/// The spacing of Polar ECG samples, µs.
const ECG_PERIOD_US: i64 = 1_000_000 / crate::gatt::samples::POLAR_ECG_SAMPLE_RATE_HZ;

/// Samples grouped per channel, in arrival order.
fn batches(samples: Vec<(Channel, Sample)>) -> Vec<SampleBatch> {
    let mut out: Vec<SampleBatch> = Vec::new();
    for (channel, sample) in samples {
        match out.iter_mut().find(|b| b.channel == channel) {
            Some(b) => b.samples.push(sample),
            None => out.push(SampleBatch {
                channel,
                samples: vec![sample],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::encode;

    fn link() -> (Link, SharedRef) {
        let shared = Arc::new(Mutex::new(Shared {
            events: VecDeque::new(),
            adapter: "test".into(),
            links: BTreeMap::new(),
            counters: BTreeMap::new(),
            dropped: 0,
            malformed: 0,
        }));
        let link = Link {
            device: "strap".into(),
            shared: shared.clone(),
            clock: Arc::new(|| 1_000),
            contact: true,
            last_error: None,
            last_us: BTreeMap::new(),
        };
        (link, shared)
    }

    fn uuid(c: Characteristic) -> Uuid {
        Uuid::parse_str(c.uuid()).unwrap()
    }

    #[test]
    fn values_become_samples_and_contact_changes_become_status() {
        let (mut link, shared) = link();
        link.value(
            uuid(Characteristic::HeartRate),
            &encode::heart_rate(70, encode::Contact::Detected, &[1024]),
        );
        link.value(
            uuid(Characteristic::HeartRate),
            &encode::heart_rate(70, encode::Contact::Lost, &[]),
        );
        link.value(
            uuid(Characteristic::HeartRate),
            &encode::heart_rate(71, encode::Contact::Lost, &[]),
        );
        link.value(
            uuid(Characteristic::PlxContinuous),
            &encode::plx_continuous(None, None, 1 << 11),
        );
        link.value(
            uuid(Characteristic::PlxContinuous),
            &encode::plx_continuous(Some(98), Some(70), 0),
        );
        let events: Vec<SourceEvent> = lock(&shared).events.drain(..).collect();
        let summary: Vec<String> = events
            .iter()
            .map(|e| match e {
                SourceEvent::Samples(b) => format!("{}x{}", b.channel.name(), b.samples.len()),
                SourceEvent::Device { status, .. } => format!("{status:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "hrx1",
                "rrx1",
                "SensorContact(false)",
                "SensorContact(true)",
                "spo2x1",
                "pulsex1"
            ]
        );
    }

    #[test]
    fn burst_ecg_frames_are_kept_in_time_order() {
        let (mut link, shared) = link();
        // Two 40-sample frames arriving in the same instant: counted back from the same
        // arrival time they would overlap completely.
        let uv: Vec<i32> = (0..80).collect();
        for frame in encode::polar_ecg_frames(&uv, 1_000_000_000, 7_692_308) {
            link.value(uuid(Characteristic::PolarPmdData), &frame);
        }
        let times: Vec<i64> = lock(&shared)
            .events
            .drain(..)
            .flat_map(|e| match e {
                SourceEvent::Samples(b) => b.samples.into_iter().map(|s| s.t_us).collect(),
                SourceEvent::Device { .. } => Vec::new(),
            })
            .collect();
        assert_eq!(times.len(), 80);
        assert!(
            times.windows(2).all(|w| w[1] - w[0] >= ECG_PERIOD_US),
            "{times:?}"
        );
        // The second frame follows the first at the sample rate, not 40 samples later.
        let span = times[79] - times[0];
        assert!((span - 79 * ECG_PERIOD_US).abs() <= 79, "{span}");
    }

    #[test]
    fn malformed_values_are_counted_not_recorded() {
        let (mut link, shared) = link();
        link.value(uuid(Characteristic::BloodPressure), &[0x00, 0x01]);
        link.value(uuid(Characteristic::PolarPmdData), &[0xFF; 600]);
        // Characteristics Vigil doesn't read are ignored.
        link.value(super::super::sig_uuid(0x2A19), &[50]);
        let s = lock(&shared);
        assert_eq!(s.malformed, 2);
        assert!(s.events.is_empty());
    }

    #[test]
    fn the_queue_is_bounded() {
        let (link, shared) = link();
        for _ in 0..MAX_QUEUED_EVENTS + 10 {
            link.emit(DeviceStatus::Connected);
        }
        let s = lock(&shared);
        assert_eq!(s.events.len(), MAX_QUEUED_EVENTS);
        assert_eq!(s.dropped, 10);
    }

    #[test]
    fn monitors_match_by_address_or_name() {
        let spec = |address: Option<&str>, name: Option<&str>| MonitorSpec {
            device: "d".into(),
            address: address.map(str::to_owned),
            name: name.map(str::to_owned),
            measures: vec![Measures::HeartRate],
            silence: Duration::from_secs(1),
        };
        assert!(spec(Some("aa:bb:cc:dd:ee:ff"), None).matches("AA:BB:CC:DD:EE:FF", None));
        assert!(!spec(Some("aa:bb:cc:dd:ee:ff"), None).matches("AA:BB:CC:DD:EE:00", Some("x")));
        assert!(spec(None, Some("Polar H10")).matches("AA:BB:CC:DD:EE:FF", Some("Polar H10")));
        assert!(!spec(None, Some("Polar H10")).matches("AA:BB:CC:DD:EE:FF", None));
        assert!(!spec(None, None).matches("AA:BB:CC:DD:EE:FF", Some("Polar H10")));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert_eq!(waits[0], BACKOFF_MIN);
        assert_eq!(waits[1], BACKOFF_MIN * 2);
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }
}
