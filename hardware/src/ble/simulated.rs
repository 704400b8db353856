//! Simulated monitors as real BLE peripherals: a GATT application and an LE advertisement
//! registered with BlueZ (through bluer), fed by the physiology simulator.
//!
//! Each process is one monitor on one adapter, as in a room: a chest strap (Heart Rate service
//! 0x180D and Polar's PMD ECG stream), a pulse oximeter (0x1822, PLX Continuous), a
//! blood-pressure cuff (0x1810: Intermediate Cuff Pressure notifications while it inflates, then
//! the reading as a Blood Pressure Measurement indication), and a thermometer (0x1809,
//! Temperature Measurement indications). The values on the air are what a conforming device
//! sends ([`crate::gatt::encode`]), so the collector's path is the real one. The same program
//! runs against a real BlueZ with a radio (a Raspberry Pi makes a bench monitor).
//!
//! Scenario events reach the air too: a strap's sensor coming off clears its contact bit, an
//! oximeter's sets "sensor unconnected to user" and sends no numbers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bluer::adv::{Advertisement, Type};
use bluer::gatt::local::{
    Application, Characteristic, CharacteristicNotifier, CharacteristicNotify,
    CharacteristicNotifyMethod, CharacteristicWrite, CharacteristicWriteMethod, ReqError, Service,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::Mutex;
use uuid::Uuid;
use vigil_shared::vitals::Channel;

use super::{
    BLOOD_PRESSURE_SERVICE, HEALTH_THERMOMETER_SERVICE, HEART_RATE_SERVICE, Measures,
    PMD_START_ECG, PMD_START_OK, PMD_STOP_ECG, POLAR_PMD_CONTROL, POLAR_PMD_DATA,
    POLAR_PMD_SERVICE, PULSE_OXIMETER_SERVICE, sig_uuid,
};
use crate::gatt::encode;
use crate::sim::{self, EcgRate, PatientParams, Scenario, VirtualPatient};
use crate::source::{DeviceStatus, SourceEvent};

/// How often the strap and the oximeter send a value, as real ones do.
pub const VALUE_PERIOD: Duration = Duration::from_secs(1);
/// How often the strap sends an ECG frame batch (about 33 samples at 130 Hz).
pub const ECG_PERIOD: Duration = Duration::from_millis(250);
/// Spacing of the cuff-pressure values sent while a cuff inflates and deflates.
pub const CUFF_STEP: Duration = Duration::from_millis(100);
/// Microseconds from the Unix epoch to 2000-01-01, the PMD time base.
const EPOCH_2000_US: i64 = 946_684_800_000_000;
/// PLX device-and-sensor status bit 11: sensor unconnected to user.
const PLX_SENSOR_UNCONNECTED: u32 = 1 << 11;

/// Which monitor to simulate. Names match the simulator's devices (`hr-strap`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimMonitor {
    /// Chest strap: heart rate, RR intervals, ECG.
    HrStrap,
    /// Pulse oximeter: SpO2 and pulse.
    Oximeter,
    /// Blood-pressure cuff.
    BpCuff,
    /// Thermometer.
    Thermometer,
}

impl SimMonitor {
    /// Every monitor.
    pub const ALL: [SimMonitor; 4] = [
        SimMonitor::HrStrap,
        SimMonitor::Oximeter,
        SimMonitor::BpCuff,
        SimMonitor::Thermometer,
    ];

    /// The device name, as the simulator and advisories use it.
    pub fn device(self) -> &'static str {
        match self {
            SimMonitor::HrStrap => sim::HR_STRAP,
            SimMonitor::Oximeter => sim::OXIMETER,
            SimMonitor::BpCuff => sim::BP_CUFF,
            SimMonitor::Thermometer => sim::THERMOMETER,
        }
    }

    /// What it measures.
    pub fn measures(self) -> &'static [Measures] {
        match self {
            SimMonitor::HrStrap => &[Measures::HeartRate, Measures::Ecg],
            SimMonitor::Oximeter => &[Measures::PulseOximetry],
            SimMonitor::BpCuff => &[Measures::BloodPressure],
            SimMonitor::Thermometer => &[Measures::Temperature],
        }
    }

    /// Parses a device name.
    pub fn parse(s: &str) -> Option<SimMonitor> {
        SimMonitor::ALL.into_iter().find(|m| m.device() == s)
    }
}

/// How to run one simulated monitor.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Which monitor.
    pub monitor: SimMonitor,
    /// The adapter to register on (`hci1`); BlueZ's default when absent.
    pub adapter: Option<String>,
    /// The name it advertises.
    pub name: String,
    /// The virtual patient (its origin is the monitor's start).
    pub seed: u64,
    /// The scenario the patient follows.
    pub scenario: Scenario,
    /// Seconds between cuff readings.
    pub nibp_interval_s: u32,
}

/// What [`start`] registered; dropping it unregisters the monitor.
pub struct Running {
    /// The adapter's name (`hci1`).
    pub adapter: String,
    /// The adapter's address, which is the monitor's.
    pub address: String,
    _app: bluer::gatt::local::ApplicationHandle,
    _adv: bluer::adv::AdvertisementHandle,
    _session: bluer::Session,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("adapter", &self.adapter)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Registers the monitor's GATT application and advertisement; it serves until the returned
/// handle is dropped (or the process ends, which BlueZ notices).
pub async fn start(opts: &SimulateOptions) -> bluer::Result<Running> {
    let session = bluer::Session::new().await?;
    let adapter = match &opts.adapter {
        Some(name) => session.adapter(name)?,
        None => session.default_adapter().await?,
    };
    adapter.set_powered(true).await?;
    let mut params = PatientParams::new(opts.seed, opts.scenario, super::wall_now_us());
    params.ecg_hz = EcgRate::Hz130;
    params.nibp_interval_s = opts.nibp_interval_s;
    let patient = VirtualPatient::new(params).map_err(|e| bluer::Error {
        kind: bluer::ErrorKind::InvalidArguments,
        message: e.to_string(),
    })?;
    let services = services(opts.monitor, &patient);
    let uuids = services.iter().map(|s| s.uuid).collect();
    let app = adapter
        .serve_gatt_application(Application {
            services,
            ..Default::default()
        })
        .await?;
    let adv = adapter
        .advertise(Advertisement {
            advertisement_type: Type::Peripheral,
            service_uuids: uuids,
            local_name: Some(opts.name.clone()),
            discoverable: Some(true),
            ..Default::default()
        })
        .await?;
    Ok(Running {
        adapter: adapter.name().to_owned(),
        address: adapter.address().await?.to_string(),
        _app: app,
        _adv: adv,
        _session: session,
    })
}

/// A feed: the loop that sends one characteristic's values to one subscriber.
type Feed = Arc<dyn Fn(CharacteristicNotifier) -> BoxFuture<'static, ()> + Send + Sync>;

fn feed<F, Fut>(f: F) -> Feed
where
    F: Fn(CharacteristicNotifier) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Arc::new(move |n| f(n).boxed())
}

/// A feed that only keeps the subscriber's notifier in `slot`, for another feed to send
/// through (the PMD control point's responses, the cuff's pressure while it inflates).
fn keep_in(slot: Arc<Mutex<Option<CharacteristicNotifier>>>) -> Feed {
    feed(move |n| {
        let slot = slot.clone();
        async move {
            *slot.lock().await = Some(n);
        }
    })
}

/// A characteristic that notifies (or indicates) with `feed`. The callback must return at
/// once (BlueZ waits for it to answer StartNotify), so the feed runs in its own task.
fn streaming(uuid: Uuid, indicate: bool, feed: Feed) -> Characteristic {
    Characteristic {
        uuid,
        notify: Some(CharacteristicNotify {
            notify: !indicate,
            indicate,
            method: CharacteristicNotifyMethod::Fun(Box::new(move |notifier| {
                let feed = feed.clone();
                async move {
                    tokio::spawn(feed(notifier));
                }
                .boxed()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(uuid: Uuid, characteristics: Vec<Characteristic>) -> Service {
    Service {
        uuid,
        primary: true,
        characteristics,
        ..Default::default()
    }
}

fn services(monitor: SimMonitor, patient: &VirtualPatient) -> Vec<Service> {
    let p = patient.clone();
    match monitor {
        SimMonitor::HrStrap => {
            let streaming_ecg = Arc::new(AtomicBool::new(false));
            let control_notifier: Arc<Mutex<Option<CharacteristicNotifier>>> = Arc::default();
            let hr = {
                let p = p.clone();
                feed(move |n| heart_rate_feed(n, p.clone()))
            };
            let ecg = {
                let (p, on) = (p.clone(), streaming_ecg.clone());
                feed(move |n| ecg_feed(n, p.clone(), on.clone()))
            };
            let mut control = streaming(POLAR_PMD_CONTROL, true, keep_in(control_notifier.clone()));
            control.write = Some(CharacteristicWrite {
                write: true,
                method: CharacteristicWriteMethod::Fun(Box::new(move |value, _req| {
                    let (on, slot) = (streaming_ecg.clone(), control_notifier.clone());
                    async move {
                        if value == PMD_START_ECG {
                            on.store(true, Ordering::SeqCst);
                            // The response goes out by indication, after the write returns.
                            tokio::spawn(async move {
                                if let Some(n) = slot.lock().await.as_mut() {
                                    let _ = n.notify(PMD_START_OK.to_vec()).await;
                                }
                            });
                            Ok(())
                        } else if value == PMD_STOP_ECG {
                            on.store(false, Ordering::SeqCst);
                            Ok(())
                        } else {
                            Err(ReqError::NotSupported)
                        }
                    }
                    .boxed()
                })),
                ..Default::default()
            });
            vec![
                service(
                    HEART_RATE_SERVICE,
                    vec![streaming(sig_uuid(0x2A37), false, hr)],
                ),
                service(
                    POLAR_PMD_SERVICE,
                    vec![control, streaming(POLAR_PMD_DATA, false, ecg)],
                ),
            ]
        }
        SimMonitor::Oximeter => vec![service(
            PULSE_OXIMETER_SERVICE,
            vec![streaming(
                sig_uuid(0x2A5F),
                false,
                feed(move |n| oximeter_feed(n, p.clone())),
            )],
        )],
        SimMonitor::BpCuff => {
            let cuff: Arc<Mutex<Option<CharacteristicNotifier>>> = Arc::default();
            let icp = keep_in(cuff.clone());
            let bp = feed(move |n| blood_pressure_feed(n, p.clone(), cuff.clone()));
            vec![service(
                BLOOD_PRESSURE_SERVICE,
                vec![
                    streaming(sig_uuid(0x2A35), true, bp),
                    streaming(sig_uuid(0x2A36), false, icp),
                ],
            )]
        }
        SimMonitor::Thermometer => vec![service(
            HEALTH_THERMOMETER_SERVICE,
            vec![streaming(
                sig_uuid(0x2A1C),
                true,
                feed(move |n| temperature_feed(n, p.clone())),
            )],
        )],
    }
}

/// The patient's samples and contact state since the last step, one step a `period`.
struct Ticker {
    patient: VirtualPatient,
    device: &'static str,
    from_us: i64,
    contact: bool,
    interval: tokio::time::Interval,
}

impl Ticker {
    fn new(patient: VirtualPatient, device: &'static str, period: Duration) -> Ticker {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker {
            patient,
            device,
            from_us: super::wall_now_us(),
            contact: true,
            interval,
        }
    }

    /// Waits for the next step and returns the window `[from, to)` it covers.
    async fn next(&mut self) -> (i64, i64) {
        self.interval.tick().await;
        let to = super::wall_now_us();
        let from = std::mem::replace(&mut self.from_us, to);
        for e in self.patient.device_events_between(from, to) {
            if let SourceEvent::Device {
                device,
                status: DeviceStatus::SensorContact(c),
                ..
            } = e
                && device == self.device
            {
                self.contact = c;
            }
        }
        (from, to)
    }

    fn samples(
        &mut self,
        channel: Channel,
        (from, to): (i64, i64),
    ) -> Vec<vigil_shared::vitals::Sample> {
        self.patient.channel_between(channel, from, to)
    }
}

async fn heart_rate_feed(mut n: CharacteristicNotifier, patient: VirtualPatient) {
    let mut t = Ticker::new(patient, sim::HR_STRAP, VALUE_PERIOD);
    loop {
        let w = t.next().await;
        let hr = t.samples(Channel::Hr, w);
        let rr: Vec<u16> = t
            .samples(Channel::Rr, w)
            .iter()
            .filter_map(|s| u16::try_from((i64::from(s.v[0]) * 1024 + 500) / 1000).ok())
            .collect();
        let value = match (hr.last(), t.contact) {
            (Some(last), true) => encode::heart_rate(
                u16::try_from(last.v[0]).unwrap_or(0),
                encode::Contact::Detected,
                &rr,
            ),
            (_, false) => encode::heart_rate(0, encode::Contact::Lost, &[]),
            (None, true) => continue,
        };
        if n.notify(value).await.is_err() {
            return;
        }
    }
}

async fn ecg_feed(mut n: CharacteristicNotifier, patient: VirtualPatient, on: Arc<AtomicBool>) {
    let mut t = Ticker::new(patient, sim::HR_STRAP, ECG_PERIOD);
    let period_ns = 1_000_000_000 / u64::from(EcgRate::Hz130.hz());
    loop {
        let w = t.next().await;
        let samples = t.samples(Channel::Ecg, w);
        if !on.load(Ordering::SeqCst) || !t.contact {
            continue;
        }
        let Some(last) = samples.last() else { continue };
        let uv: Vec<i32> = samples.iter().map(|s| s.v[0]).collect();
        let last_ns = u64::try_from(last.t_us - EPOCH_2000_US).unwrap_or(0) * 1_000;
        for frame in encode::polar_ecg_frames(&uv, last_ns, period_ns) {
            if n.notify(frame).await.is_err() {
                return;
            }
        }
    }
}

async fn oximeter_feed(mut n: CharacteristicNotifier, patient: VirtualPatient) {
    let mut t = Ticker::new(patient, sim::OXIMETER, VALUE_PERIOD);
    loop {
        let w = t.next().await;
        let spo2 = t.samples(Channel::Spo2, w).last().map(|s| s.v[0]);
        let pulse = t.samples(Channel::Pulse, w).last().map(|s| s.v[0]);
        let value = if t.contact {
            if spo2.is_none() && pulse.is_none() {
                continue;
            }
            encode::plx_continuous(spo2, pulse, 0)
        } else {
            encode::plx_continuous(None, None, PLX_SENSOR_UNCONNECTED)
        };
        if n.notify(value).await.is_err() {
            return;
        }
    }
}

async fn blood_pressure_feed(
    mut n: CharacteristicNotifier,
    patient: VirtualPatient,
    cuff: Arc<Mutex<Option<CharacteristicNotifier>>>,
) {
    let mut t = Ticker::new(patient, sim::BP_CUFF, VALUE_PERIOD);
    loop {
        let w = t.next().await;
        for reading in t.samples(Channel::Nibp, w) {
            let [sys, dia, mean] = reading.v;
            // The cuff inflates past systolic, then deflates through diastolic.
            if let Some(icp) = cuff.lock().await.as_mut() {
                for p in [sys + 30, sys + 10, sys - 10, (sys + dia) / 2, dia, dia - 20] {
                    if icp
                        .notify(encode::intermediate_cuff_pressure(p))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(CUFF_STEP).await;
                }
            }
            if n.notify(encode::blood_pressure(sys, dia, mean))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

async fn temperature_feed(mut n: CharacteristicNotifier, patient: VirtualPatient) {
    let mut t = Ticker::new(patient, sim::THERMOMETER, VALUE_PERIOD);
    loop {
        let w = t.next().await;
        for s in t.samples(Channel::Temp, w) {
            if n.notify(encode::temperature(s.v[0])).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_parse_by_device_name_and_cover_every_kind() {
        for m in SimMonitor::ALL {
            assert_eq!(SimMonitor::parse(m.device()), Some(m));
        }
        assert_eq!(SimMonitor::parse("toaster"), None);
        let mut kinds: Vec<Measures> = SimMonitor::ALL
            .iter()
            .flat_map(|m| m.measures().iter().copied())
            .collect();
        kinds.sort_by_key(|k| Measures::ALL.iter().position(|a| a == k));
        assert_eq!(kinds, Measures::ALL);
    }
}
