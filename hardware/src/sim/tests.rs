//! The simulator's contract, tested from outside its internals: determinism, split-invariance
//! (the property a verifier relies on to recompute a session after a restart), sample rates,
//! plausible physiology and each scenario's events.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use vigil_shared::vitals::{Channel, Sample, SampleBatch};

use super::*;
use crate::source::{DeviceStatus, SourceEvent, VitalsSource};

/// An arbitrary origin, far from zero like real timestamps (2025-01-01T08:00:00Z).
const ORIGIN_US: i64 = 1_735_718_400 * US_PER_S;
const MIN_US: i64 = 60 * US_PER_S;

fn params(seed: u64, scenario: Scenario) -> PatientParams {
    PatientParams::new(seed, scenario, ORIGIN_US)
}

fn patient(p: PatientParams) -> VirtualPatient {
    VirtualPatient::new(p).expect("test parameters are valid")
}

/// Minutes after the origin, as an absolute time.
fn at_min(minutes: f64) -> i64 {
    ORIGIN_US + (minutes * 60.0 * US_PER_S as f64) as i64
}

/// All samples per channel, concatenating batches in order.
fn by_channel(batches: impl IntoIterator<Item = SampleBatch>) -> BTreeMap<Channel, Vec<Sample>> {
    let mut out: BTreeMap<Channel, Vec<Sample>> = BTreeMap::new();
    for batch in batches {
        out.entry(batch.channel).or_default().extend(batch.samples);
    }
    out
}

/// The samples of `[from, to)` obtained by calls over the given cut points, per channel.
fn by_parts(
    p: PatientParams,
    from_us: i64,
    to_us: i64,
    cuts: &[i64],
) -> BTreeMap<Channel, Vec<Sample>> {
    let mut bounds: Vec<i64> = cuts
        .iter()
        .copied()
        .filter(|c| (from_us..to_us).contains(c))
        .collect();
    bounds.push(from_us);
    bounds.push(to_us);
    bounds.sort_unstable();
    let mut sim = patient(p);
    by_channel(
        bounds
            .windows(2)
            .flat_map(|w| sim.samples_between(w[0], w[1])),
    )
}

fn assert_time_ordered(samples: &BTreeMap<Channel, Vec<Sample>>) {
    for (channel, s) in samples {
        assert!(
            s.windows(2).all(|w| w[0].t_us < w[1].t_us),
            "{channel} out of order"
        );
    }
}

#[test]
fn same_params_same_samples_different_seeds_differ() {
    let range = (ORIGIN_US, at_min(5.0));
    let a = patient(params(7, Scenario::Baseline)).samples_between(range.0, range.1);
    let b = patient(params(7, Scenario::Baseline)).samples_between(range.0, range.1);
    let c = patient(params(8, Scenario::Baseline)).samples_between(range.0, range.1);
    assert_eq!(a, b);
    assert_eq!(a.len(), Channel::ALL.len());
    for (x, y) in a.iter().zip(&c) {
        assert_ne!(
            x.samples, y.samples,
            "{} is the same for seeds 7 and 8",
            x.channel
        );
    }
}

/// Whole-range runs of the first ten minutes, per scenario, computed once for all proptest cases.
fn first_ten_minutes(scenario: Scenario) -> &'static BTreeMap<Channel, Vec<Sample>> {
    static RUNS: OnceLock<Vec<BTreeMap<Channel, Vec<Sample>>>> = OnceLock::new();
    let runs = RUNS.get_or_init(|| {
        Scenario::ALL
            .iter()
            .map(|&s| by_channel(patient(params(11, s)).samples_between(ORIGIN_US, at_min(10.0))))
            .collect()
    });
    let index = Scenario::ALL
        .iter()
        .position(|&s| s == scenario)
        .unwrap_or(0);
    &runs[index]
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    prop::sample::select(Scenario::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any partition of the first ten minutes gives exactly the samples of one call.
    #[test]
    fn partitions_of_the_first_ten_minutes_match_one_call(
        scenario in scenario_strategy(),
        cuts in prop::collection::vec(0..10 * MIN_US, 0..12),
    ) {
        let cuts: Vec<i64> = cuts.into_iter().map(|c| ORIGIN_US + c).collect();
        let parts = by_parts(params(11, scenario), ORIGIN_US, at_min(10.0), &cuts);
        prop_assert_eq!(&parts, first_ten_minutes(scenario));
    }

    /// A range anywhere in the session, split anyhow, matches one call on a fresh patient,
    /// whatever the seed, scenario and rates.
    #[test]
    fn partitions_of_any_range_match_one_call(
        seed in any::<u64>(),
        scenario in scenario_strategy(),
        ecg_130 in any::<bool>(),
        nibp_interval_s in MIN_NIBP_INTERVAL_S..600,
        start in 0..60 * MIN_US,
        len in 1..3 * MIN_US,
        cuts in prop::collection::vec(0..3 * MIN_US, 0..8),
    ) {
        let p = PatientParams {
            ecg_hz: if ecg_130 { EcgRate::Hz130 } else { EcgRate::Hz250 },
            nibp_interval_s,
            ..params(seed, scenario)
        };
        let (from_us, to_us) = (ORIGIN_US + start, ORIGIN_US + start + len);
        let cuts: Vec<i64> = cuts.into_iter().map(|c| from_us + c).collect();
        let whole = by_channel(patient(p).samples_between(from_us, to_us));
        prop_assert_eq!(by_parts(p, from_us, to_us, &cuts), whole.clone());
        assert_time_ordered(&whole);
        for s in whole.values().flatten() {
            prop_assert!((from_us..to_us).contains(&s.t_us));
        }
    }
}

#[test]
fn a_restart_mid_session_recomputes_the_tail_of_a_full_run() {
    for scenario in Scenario::ALL {
        let p = params(5, scenario);
        let full = by_channel(patient(p).samples_between(ORIGIN_US, at_min(30.0)));
        let (from_us, to_us) = (at_min(20.0), at_min(21.0));
        let resumed = by_channel(patient(p).samples_between(from_us, to_us));
        let tail: BTreeMap<Channel, Vec<Sample>> = full
            .into_iter()
            .map(|(c, s)| {
                (
                    c,
                    s.into_iter()
                        .filter(|s| (from_us..to_us).contains(&s.t_us))
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        assert_eq!(resumed, tail, "{scenario}");
    }
}

#[test]
fn shifting_the_origin_shifts_the_samples() {
    let shift_us = 123_456_789;
    let a = patient(params(9, Scenario::Hypertension)).samples_between(ORIGIN_US, at_min(2.0));
    let moved = PatientParams {
        origin_us: ORIGIN_US + shift_us,
        ..params(9, Scenario::Hypertension)
    };
    let b = patient(moved).samples_between(ORIGIN_US + shift_us, at_min(2.0) + shift_us);
    let unshifted: Vec<SampleBatch> = b
        .into_iter()
        .map(|mut batch| {
            batch.samples.iter_mut().for_each(|s| s.t_us -= shift_us);
            batch
        })
        .collect();
    assert_eq!(a, unshifted);
}

#[test]
fn a_seed_is_the_same_patient_in_every_scenario_until_its_event() {
    let base = by_channel(
        patient(params(21, Scenario::Baseline)).samples_between(ORIGIN_US, at_min(14.0)),
    );
    for scenario in Scenario::ALL {
        let other =
            by_channel(patient(params(21, scenario)).samples_between(ORIGIN_US, at_min(14.0)));
        assert_eq!(
            other, base,
            "{scenario} differs from baseline before 14 min"
        );
    }
}

#[test]
fn sample_counts_over_ten_minutes() {
    // (ecg rate, channel, expected count over [origin, origin + 10 min)); RR is per beat.
    let table: &[(EcgRate, Channel, std::ops::RangeInclusive<usize>)] = &[
        (EcgRate::Hz250, Channel::Hr, 600..=600),
        (EcgRate::Hz250, Channel::Spo2, 600..=600),
        (EcgRate::Hz250, Channel::Pulse, 600..=600),
        (EcgRate::Hz250, Channel::Temp, 60..=60),
        // Readings at 0:30, 3:30, 6:30 and 9:30.
        (EcgRate::Hz250, Channel::Nibp, 4..=4),
        (EcgRate::Hz250, Channel::Ecg, 150_000..=150_000),
        (EcgRate::Hz130, Channel::Ecg, 78_000..=78_000),
        (EcgRate::Hz250, Channel::Rr, 550..=950),
    ];
    for seed in [1, 2, 3] {
        for (rate, channel, want) in table {
            let p = PatientParams {
                ecg_hz: *rate,
                ..params(seed, Scenario::Baseline)
            };
            let n = patient(p)
                .channel_between(*channel, ORIGIN_US, at_min(10.0))
                .len();
            assert!(
                want.contains(&n),
                "seed {seed} {rate} {channel}: {n} samples, want {want:?}"
            );
        }
    }
}

#[test]
fn sample_times_follow_the_documented_grids() {
    let mut sim = patient(PatientParams {
        ecg_hz: EcgRate::Hz130,
        ..params(4, Scenario::Baseline)
    });
    let ecg = sim.channel_between(Channel::Ecg, ORIGIN_US, at_min(1.0));
    for (k, s) in ecg.iter().enumerate() {
        assert_eq!(s.t_us, ORIGIN_US + (k as i64 * US_PER_S) / 130);
    }
    let nibp = sim.channel_between(Channel::Nibp, ORIGIN_US, at_min(10.0));
    let times: Vec<i64> = nibp
        .iter()
        .map(|s| (s.t_us - ORIGIN_US) / US_PER_S)
        .collect();
    assert_eq!(times, [30, 210, 390, 570]);
    let p = PatientParams {
        nibp_interval_s: 300,
        ..params(4, Scenario::Baseline)
    };
    let nibp = patient(p).channel_between(Channel::Nibp, ORIGIN_US, at_min(10.0));
    let times: Vec<i64> = nibp
        .iter()
        .map(|s| (s.t_us - ORIGIN_US) / US_PER_S)
        .collect();
    assert_eq!(times, [30, 330]);
}

#[test]
fn rr_intervals_are_the_gaps_between_beats_and_agree_with_hr() {
    let mut sim = patient(params(6, Scenario::Baseline));
    let rr = sim.channel_between(Channel::Rr, ORIGIN_US, at_min(10.0));
    for pair in rr.windows(2) {
        let gap_ms = (pair[1].t_us - pair[0].t_us) as f64 / 1_000.0;
        assert!(
            (gap_ms - f64::from(pair[1].v[0])).abs() <= 0.5,
            "rr {} vs gap {gap_ms}",
            pair[1].v[0]
        );
    }
    let hr = sim.channel_between(Channel::Hr, ORIGIN_US, at_min(10.0));
    let mean_hr = hr.iter().map(|s| f64::from(s.v[0])).sum::<f64>() / hr.len() as f64;
    let mean_rr_ms = rr.iter().map(|s| f64::from(s.v[0])).sum::<f64>() / rr.len() as f64;
    assert!(
        (mean_hr - 60_000.0 / mean_rr_ms).abs() < 2.0,
        "hr {mean_hr} vs rr {mean_rr_ms} ms"
    );
    // Beat-to-beat variability: RMSSD of a resting adult, roughly 10–80 ms.
    let rmssd = (rr
        .windows(2)
        .map(|w| f64::from(w[1].v[0] - w[0].v[0]).powi(2))
        .sum::<f64>()
        / (rr.len() - 1) as f64)
        .sqrt();
    assert!((10.0..80.0).contains(&rmssd), "rmssd {rmssd} ms");
}

#[test]
fn baseline_stays_plausible_for_many_patients() {
    // (channel, dimension, plausible range) over a whole 56-minute baseline session.
    let table: &[(Channel, usize, std::ops::RangeInclusive<i32>)] = &[
        (Channel::Hr, 0, 50..=110),
        (Channel::Pulse, 0, 50..=110),
        (Channel::Rr, 0, 500..=1_250),
        (Channel::Spo2, 0, 94..=100),
        (Channel::Nibp, 0, 100..=150),
        (Channel::Nibp, 1, 60..=95),
        (Channel::Nibp, 2, 75..=115),
        (Channel::Temp, 0, 3_650..=3_720),
    ];
    for seed in 0..24 {
        let mut sim = patient(params(seed, Scenario::Baseline));
        for (channel, dim, range) in table {
            for s in sim.channel_between(*channel, ORIGIN_US, at_min(56.0)) {
                assert!(
                    range.contains(&s.v[*dim]),
                    "seed {seed} {channel}[{dim}] = {} at {}",
                    s.v[*dim],
                    s.t_us
                );
            }
        }
    }
}

#[test]
fn pulse_rate_follows_heart_rate() {
    let mut sim = patient(params(12, Scenario::Baseline));
    let hr = sim.channel_between(Channel::Hr, ORIGIN_US, at_min(20.0));
    let pulse = sim.channel_between(Channel::Pulse, ORIGIN_US, at_min(20.0));
    assert_eq!(hr.len(), pulse.len());
    for (h, p) in hr.iter().zip(&pulse) {
        assert!(
            (h.v[0] - p.v[0]).abs() <= 8,
            "hr {} vs pulse {} at {}",
            h.v[0],
            p.v[0],
            h.t_us
        );
    }
}

#[test]
fn ketamine_raises_heart_rate_and_pressure_modestly() {
    for seed in 0..12 {
        let mut sim = patient(params(seed, Scenario::Baseline));
        let mean = |s: &[Sample], dim: usize| {
            s.iter().map(|x| f64::from(x.v[dim])).sum::<f64>() / s.len() as f64
        };
        let hr_before = mean(&sim.channel_between(Channel::Hr, ORIGIN_US, at_min(5.0)), 0);
        let hr_during = mean(
            &sim.channel_between(Channel::Hr, at_min(25.0), at_min(45.0)),
            0,
        );
        let bp_before = mean(
            &sim.channel_between(Channel::Nibp, ORIGIN_US, at_min(5.0)),
            0,
        );
        let bp_during = mean(
            &sim.channel_between(Channel::Nibp, at_min(25.0), at_min(45.0)),
            0,
        );
        assert!(
            (0.0..15.0).contains(&(hr_during - hr_before)),
            "seed {seed}: hr {hr_before} -> {hr_during}"
        );
        assert!(
            (0.0..25.0).contains(&(bp_during - bp_before)),
            "seed {seed}: sys {bp_before} -> {bp_during}"
        );
    }
}

#[test]
fn ecg_has_a_plausible_pqrst() {
    let mut sim = patient(params(13, Scenario::Baseline));
    let ecg = sim.channel_between(Channel::Ecg, ORIGIN_US, at_min(2.0));
    let rr = sim.channel_between(Channel::Rr, ORIGIN_US + US_PER_S, at_min(2.0) - US_PER_S);
    for beat in &rr {
        // The R peak: the largest sample within 8 ms of the beat.
        let near = |lo_ms: i64, hi_ms: i64| {
            ecg.iter().filter(move |s| {
                (beat.t_us + lo_ms * 1_000..beat.t_us + hi_ms * 1_000).contains(&s.t_us)
            })
        };
        let r = near(-8, 8).map(|s| s.v[0]).max().unwrap_or(0);
        assert!((900..=1_650).contains(&r), "R peak {r} µV at {}", beat.t_us);
        let s_wave = near(15, 45).map(|s| s.v[0]).min().unwrap_or(0);
        assert!(s_wave < r / 4, "S wave {s_wave} after R {r}");
        let t_wave = near(180, 380).map(|s| s.v[0]).max().unwrap_or(0);
        assert!(
            (100..=r / 2).contains(&t_wave),
            "T wave {t_wave} after R {r}"
        );
        let p_wave = near(-200, -120).map(|s| s.v[0]).max().unwrap_or(0);
        assert!(
            (40..=r / 4).contains(&p_wave),
            "P wave {p_wave} before R {r}"
        );
    }
    let min = ecg.iter().map(|s| s.v[0]).min().unwrap_or(0);
    assert!(min > -600, "ECG minimum {min} µV");
}

/// Systolic readings as (minutes after origin, systolic).
fn systolic(sim: &mut VirtualPatient, to_min: f64) -> Vec<(f64, i32)> {
    sim.channel_between(Channel::Nibp, ORIGIN_US, at_min(to_min))
        .iter()
        .map(|s| ((s.t_us - ORIGIN_US) as f64 / MIN_US as f64, s.v[0]))
        .collect()
}

#[test]
fn hypertension_peaks_between_28_and_42_minutes_and_resolves() {
    for seed in 0..24 {
        let mut sim = patient(params(seed, Scenario::Hypertension));
        let readings = systolic(&mut sim, 56.0);
        let consecutive_high = readings
            .windows(2)
            .filter(|w| {
                w.iter()
                    .all(|&(m, sys)| (28.0..=42.0).contains(&m) && sys >= 180)
            })
            .count();
        assert!(consecutive_high >= 1, "seed {seed}: {readings:?}");
        for &(m, sys) in &readings {
            if !(20.0..=50.0).contains(&m) {
                assert!(sys < 160, "seed {seed}: systolic {sys} at {m:.1} min");
            }
            assert!(
                sys < 200,
                "seed {seed}: systolic {sys} at {m:.1} min reaches the single-reading limit"
            );
        }
        let peak_dia = sim
            .channel_between(Channel::Nibp, at_min(31.0), at_min(39.0))
            .iter()
            .map(|s| s.v[1])
            .max()
            .unwrap_or(0);
        assert!(
            (103..=114).contains(&peak_dia),
            "seed {seed}: diastolic peak {peak_dia}"
        );
    }
}

#[test]
fn desaturation_falls_below_92_for_30_s_around_20_minutes() {
    for seed in 0..24 {
        let mut sim = patient(params(seed, Scenario::Desaturation));
        let spo2 = sim.channel_between(Channel::Spo2, at_min(17.0), at_min(24.0));
        let mut longest_s = 0;
        let mut run_s = 0;
        for s in &spo2 {
            run_s = if s.v[0] < 92 { run_s + 1 } else { 0 };
            longest_s = longest_s.max(run_s);
        }
        let below_90_s = spo2.iter().filter(|s| s.v[0] < 90).count();
        assert!(
            longest_s >= 30,
            "seed {seed}: only {longest_s} s below 92 %"
        );
        assert!(
            (45..=105).contains(&below_90_s),
            "seed {seed}: {below_90_s} s below 90 %"
        );
        let nadir = spo2.iter().map(|s| s.v[0]).min().unwrap_or(0);
        assert!((83..=89).contains(&nadir), "seed {seed}: nadir {nadir}");
        let elsewhere = sim
            .channel_between(Channel::Spo2, ORIGIN_US, at_min(18.5))
            .into_iter()
            .chain(sim.channel_between(Channel::Spo2, at_min(23.0), at_min(56.0)));
        for s in elsewhere {
            assert!(s.v[0] >= 94, "seed {seed}: {} % at {}", s.v[0], s.t_us);
        }
    }
}

/// Polls a fresh source through `[origin, to)` in steps and returns everything it handed out.
fn poll_through(p: PatientParams, from_us: i64, to_us: i64, step_us: i64) -> Vec<SourceEvent> {
    let mut source = SimulatedSource::new();
    source.attach(p, from_us).expect("valid params");
    let mut out = Vec::new();
    let mut now = from_us;
    while now < to_us {
        now = (now + step_us).min(to_us);
        out.extend(source.poll(now));
    }
    out
}

/// The device events among `events`, as (device, status, minutes after origin).
fn device_events(events: &[SourceEvent]) -> Vec<(String, DeviceStatus, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Device {
                device,
                status,
                at_us,
            } => Some((
                device.clone(),
                *status,
                (*at_us - ORIGIN_US) as f64 / MIN_US as f64,
            )),
            SourceEvent::Samples(_) => None,
        })
        .collect()
}

fn samples_of(events: &[SourceEvent]) -> BTreeMap<Channel, Vec<Sample>> {
    by_channel(events.iter().filter_map(|e| match e {
        SourceEvent::Samples(batch) => Some(batch.clone()),
        SourceEvent::Device { .. } => None,
    }))
}

fn connected_all_at(minutes: f64) -> Vec<(String, DeviceStatus, f64)> {
    DEVICES
        .iter()
        .map(|d| (d.to_string(), DeviceStatus::Connected, minutes))
        .collect()
}

/// A device and its status, in test tables.
type DeviceAndStatus = (&'static str, DeviceStatus);

/// A device, its status and when (minutes after the origin), in test tables.
type TimedStatus = (&'static str, DeviceStatus, f64);

#[test]
fn scripted_device_events_and_silences() {
    // (scenario, silent channels, expected device events after the first-poll announcements:
    // the first starts the silent window, the second ends it).
    let table: &[(Scenario, &[Channel], [TimedStatus; 2])] = &[
        (
            Scenario::SensorOff,
            &[Channel::Spo2, Channel::Pulse],
            [
                (OXIMETER, DeviceStatus::SensorContact(false), 15.0),
                (OXIMETER, DeviceStatus::SensorContact(true), 16.5),
            ],
        ),
        (
            Scenario::Disconnect,
            &[Channel::Hr, Channel::Rr, Channel::Ecg],
            [
                (HR_STRAP, DeviceStatus::Disconnected, 25.0),
                (HR_STRAP, DeviceStatus::Connected, 26.0),
            ],
        ),
    ];
    for (scenario, silent, want_events) in table {
        let (start_min, end_min) = (&want_events[0].2, &want_events[1].2);
        let events = poll_through(params(3, *scenario), ORIGIN_US, at_min(30.0), 1_700_000);
        let mut want = connected_all_at(0.0);
        want.extend(want_events.iter().map(|(d, s, m)| (d.to_string(), *s, *m)));
        assert_eq!(device_events(&events), want, "{scenario}");

        let samples = samples_of(&events);
        for (channel, s) in &samples {
            let in_window = s
                .iter()
                .filter(|s| (at_min(*start_min)..at_min(*end_min)).contains(&s.t_us))
                .count();
            if silent.contains(channel) {
                assert_eq!(
                    in_window, 0,
                    "{scenario}: {channel} delivered in its silent window"
                );
                let resumed = s
                    .iter()
                    .any(|s| (at_min(*end_min)..at_min(*end_min) + 2 * US_PER_S).contains(&s.t_us));
                assert!(resumed, "{scenario}: {channel} did not resume");
            } else if *channel != Channel::Nibp {
                // (The cuff's three-minute cycle may have no reading in a short window.)
                assert!(in_window > 0, "{scenario}: {channel} fell silent too");
            }
        }
        // The source handed out exactly what the patient computes for the whole range.
        let direct =
            by_channel(patient(params(3, *scenario)).samples_between(ORIGIN_US, at_min(30.0)));
        assert_eq!(samples, direct, "{scenario}");
    }
}

#[test]
fn samples_before_an_event_come_before_it() {
    let events = poll_through(
        params(3, Scenario::SensorOff),
        ORIGIN_US,
        at_min(20.0),
        7 * MIN_US,
    );
    let mut last_event_us = i64::MIN;
    for e in &events {
        match e {
            SourceEvent::Device { at_us, .. } => last_event_us = *at_us,
            SourceEvent::Samples(batch) => {
                assert!(
                    batch.samples.iter().all(|s| s.t_us >= last_event_us),
                    "sample before an earlier event"
                );
            }
        }
    }
}

#[test]
fn attaching_mid_window_announces_the_current_status() {
    // (scenario, attach at minute, expected announcements beyond `Connected`).
    let table: &[(Scenario, f64, &[DeviceAndStatus])] = &[
        (
            Scenario::SensorOff,
            15.5,
            &[(OXIMETER, DeviceStatus::SensorContact(false))],
        ),
        (Scenario::SensorOff, 16.5, &[]),
        (
            Scenario::SensorOff,
            15.0,
            &[(OXIMETER, DeviceStatus::SensorContact(false))],
        ),
        (Scenario::Disconnect, 26.0, &[]),
        (
            Scenario::Disconnect,
            25.5,
            &[(HR_STRAP, DeviceStatus::Disconnected)],
        ),
        (Scenario::Baseline, 25.5, &[]),
    ];
    for (scenario, minute, extra) in table {
        let mut source = SimulatedSource::new();
        source
            .attach(params(1, *scenario), at_min(*minute))
            .expect("valid");
        let first = device_events(&source.poll(at_min(*minute)));
        let mut want: Vec<(String, DeviceStatus, f64)> = Vec::new();
        for d in DEVICES {
            let disconnected = extra
                .iter()
                .any(|(x, s)| *x == d && *s == DeviceStatus::Disconnected);
            let status = if disconnected {
                DeviceStatus::Disconnected
            } else {
                DeviceStatus::Connected
            };
            want.push((d.to_string(), status, *minute));
            want.extend(
                extra
                    .iter()
                    .filter(|(x, s)| *x == d && matches!(s, DeviceStatus::SensorContact(_)))
                    .map(|(x, s)| (x.to_string(), *s, *minute)),
            );
        }
        assert_eq!(first, want, "{scenario} at {minute} min");
        // A change exactly at the attach time is in the announcements, not repeated after.
        let next = device_events(&source.poll(at_min(*minute) + US_PER_S));
        assert_eq!(next, [], "{scenario} at {minute} min");
    }
}

#[test]
fn a_resumed_source_continues_exactly_where_the_first_one_stopped() {
    let p = params(17, Scenario::Hypertension);
    let before = poll_through(p, ORIGIN_US, at_min(12.0), 999_999);
    let after = poll_through(p, at_min(12.0), at_min(20.0), 2_345_678);
    let mut joined = samples_of(&before);
    for (channel, s) in samples_of(&after) {
        joined.entry(channel).or_default().extend(s);
    }
    let direct = by_channel(patient(p).samples_between(ORIGIN_US, at_min(20.0)));
    assert_eq!(joined, direct);
}

#[test]
fn idle_and_detached_sources_deliver_nothing() {
    let mut source = SimulatedSource::new();
    assert!(source.poll(at_min(1.0)).is_empty());
    assert!(source.channels().is_empty());
    assert_eq!(source.describe(), "simulator idle (no patient attached)");
    assert_eq!(source.handed_out_until_us(), None);

    source
        .attach(params(7, Scenario::Hypertension), ORIGIN_US - MIN_US)
        .expect("valid");
    assert_eq!(
        source.describe(),
        "simulator seed=7 scenario=hypertension ecg=250Hz nibp=180s"
    );
    assert_eq!(source.channels(), Channel::ALL.to_vec());
    assert!(
        source.poll(ORIGIN_US - 1).is_empty(),
        "nothing before the origin"
    );
    assert!(!source.poll(ORIGIN_US + US_PER_S).is_empty());
    assert!(
        source.poll(ORIGIN_US).is_empty(),
        "time going backwards hands out nothing"
    );
    assert_eq!(source.detach(), Some(params(7, Scenario::Hypertension)));
    assert!(source.poll(at_min(2.0)).is_empty());
}

#[test]
fn a_clock_jump_is_handed_out_in_bounded_polls() {
    let mut source = SimulatedSource::new();
    source
        .attach(params(2, Scenario::Baseline), ORIGIN_US)
        .expect("valid");
    let end = at_min(25.0);
    let mut polls = 0;
    let mut samples = BTreeMap::new();
    while source.handed_out_until_us() < Some(end) {
        let events = source.poll(end);
        polls += 1;
        for (c, s) in samples_of(&events) {
            assert!(
                s.iter()
                    .all(|s| s.t_us < ORIGIN_US + polls * MAX_POLL_SPAN_US)
            );
            samples.entry(c).or_insert_with(Vec::new).extend(s);
        }
    }
    assert_eq!(polls, 3);
    assert_eq!(
        samples,
        by_channel(patient(params(2, Scenario::Baseline)).samples_between(ORIGIN_US, end))
    );
}

#[test]
fn a_full_session_generates_every_sample() {
    // Prints the generation time for the record (run with --release --nocapture); asserts counts
    // only, never wall-clock time.
    let started = std::time::Instant::now();
    let batches =
        patient(params(7, Scenario::Hypertension)).samples_between(ORIGIN_US, at_min(56.0));
    let elapsed = started.elapsed();
    let samples = by_channel(batches);
    let total: usize = samples.values().map(Vec::len).sum();
    eprintln!("56 min with 250 Hz ECG: {total} samples in {elapsed:?}");
    assert_eq!(samples[&Channel::Ecg].len(), 56 * 60 * 250);
    assert_eq!(samples[&Channel::Hr].len(), 56 * 60);
    assert_eq!(samples[&Channel::Nibp].len(), 19);
}

#[test]
fn output_is_pinned() {
    // A fingerprint of one patient's first two minutes: it changes only when the simulator's
    // output changes, which changes what every verifier recomputes. Update it deliberately.
    let batches = patient(params(7, Scenario::Baseline)).samples_between(ORIGIN_US, at_min(2.0));
    let mut h: u64 = 0;
    for batch in &batches {
        for s in &batch.samples {
            for word in [
                batch.channel.code() as u64,
                s.t_us as u64,
                s.v[0] as u64,
                s.v[1] as u64,
                s.v[2] as u64,
            ] {
                h = detmath::mix64(h ^ word);
            }
        }
    }
    assert_eq!(h, PINNED_FINGERPRINT, "simulator output changed: {h:#018x}");
}

/// See [`output_is_pinned`].
const PINNED_FINGERPRINT: u64 = 0x58a1_e224_c509_cc9e;

#[test]
fn session_seeds_are_stable_and_distinct() {
    // Expected values computed independently (a few lines of Python: FNV-1a, then splitmix64's
    // finaliser as documented on `session_seed`).
    let table: &[(u64, &str, u64)] = &[
        (0, "", 0x8932_c885_a3fe_960e),
        (7, "s-1", 0x9f51_2388_85a1_d36f),
        (7, "s-2", 0xe768_62cc_1933_0872),
        (8, "s-1", 0x95db_e01e_c686_be69),
        (
            42,
            "0f8e6f9e-6c1b-4d55-9a51-2f3d0c8b7a10",
            0xdaaa_21eb_c3e0_7c51,
        ),
    ];
    for (room, session, want) in table {
        assert_eq!(
            session_seed(*room, session),
            *want,
            "session_seed({room}, {session:?}) = {:#018x}",
            session_seed(*room, session)
        );
    }
}

#[test]
fn names_round_trip() {
    for (scenario, name) in Scenario::ALL.iter().zip([
        "baseline",
        "hypertension",
        "desaturation",
        "sensor_off",
        "disconnect",
    ]) {
        assert_eq!(scenario.to_string(), name);
        assert_eq!(name.parse::<Scenario>(), Ok(*scenario));
        assert_eq!(
            serde_json::to_string(scenario).ok(),
            Some(format!("\"{name}\""))
        );
    }
    assert_eq!(
        "hypotension".parse::<Scenario>(),
        Err(SimError::UnknownScenario("hypotension".into()))
    );
    for (text, want) in [
        ("130", Some(EcgRate::Hz130)),
        ("250Hz", Some(EcgRate::Hz250)),
        ("250 hz", Some(EcgRate::Hz250)),
        ("128", None),
        ("", None),
    ] {
        assert_eq!(text.parse::<EcgRate>().ok(), want, "{text:?}");
    }
    let p = params(1, Scenario::SensorOff);
    let json = serde_json::to_string(&p).unwrap_or_default();
    assert!(
        json.contains("\"ecg_hz\":250") && json.contains("\"scenario\":\"sensor_off\""),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<PatientParams>(&json).ok(), Some(p));
    assert!(serde_json::from_str::<EcgRate>("200").is_err());
    let short = r#"{"seed":1,"scenario":"sensor_off","origin_us":1735718400000000}"#;
    assert_eq!(serde_json::from_str::<PatientParams>(short).ok(), Some(p));
}
