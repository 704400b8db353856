//! Tests across all decoders: truncation at every byte, arbitrary bytes into every decoder,
//! characteristic UUID parsing, error texts and JSON shape; plus the test-only encoders and
//! proptest strategies the per-characteristic tests share.
//!
//! The encoders write the SIG layouts straight from the field lists, independently of the
//! decoders; each characteristic's flag-combination test also checks them against payloads
//! written out by hand, so a shared misreading of the layout would show.

use proptest::prelude::*;

use super::blood_pressure::{BP_FLAGS_RESERVED, BloodPressure, IntermediateCuffPressure};
use super::date_time::DateTime;
use super::heart_rate::{HR_FLAG_VALUE_U16, HR_FLAGS_RESERVED, HeartRate};
use super::medfloat::{Medfloat, SFLOAT_NAN};
use super::plx::{CONT_FLAGS_RESERVED, PlxContinuous, PlxSpotCheck, SPOT_FLAGS_RESERVED, Spo2Pr};
use super::polar_pmd::{PMD_HEADER_LEN, PolarEcgFrame};
use super::temperature::{TEMP_FLAGS_RESERVED, TemperatureMeasurement};
use super::*;

// ---- Test-only encoders --------------------------------------------------------------------

fn sfloat(m: &Medfloat) -> [u8; 2] {
    m.to_sfloat_bits()
        .expect("test values come from decoded SFLOATs")
        .to_le_bytes()
}

fn float(m: &Medfloat) -> [u8; 4] {
    m.to_float_bits()
        .expect("test values come from decoded FLOATs")
        .to_le_bytes()
}

pub(crate) fn encode_heart_rate(v: &HeartRate) -> Vec<u8> {
    let mut out = vec![v.flags];
    if v.flags & HR_FLAG_VALUE_U16 != 0 {
        out.extend(v.heart_rate_bpm.to_le_bytes());
    } else {
        out.push(u8::try_from(v.heart_rate_bpm).expect("u8 heart rate"));
    }
    if let Some(e) = v.energy_expended_kj {
        out.extend(e.to_le_bytes());
    }
    for rr in &v.rr_intervals_1024th_s {
        out.extend(rr.to_le_bytes());
    }
    out
}

fn encode_bp_tail(
    out: &mut Vec<u8>,
    timestamp: Option<DateTime>,
    pulse: Option<Medfloat>,
    user: Option<u8>,
    status: Option<BpMeasurementStatus>,
) {
    if let Some(t) = timestamp {
        out.extend(t.to_bytes());
    }
    if let Some(p) = pulse {
        out.extend(sfloat(&p));
    }
    if let Some(u) = user {
        out.push(u);
    }
    if let Some(s) = status {
        out.extend(s.raw.to_le_bytes());
    }
}

pub(crate) fn encode_blood_pressure(v: &BloodPressure) -> Vec<u8> {
    let mut out = vec![v.flags];
    out.extend(sfloat(&v.systolic));
    out.extend(sfloat(&v.diastolic));
    out.extend(sfloat(&v.mean_arterial));
    encode_bp_tail(&mut out, v.timestamp, v.pulse_rate_bpm, v.user_id, v.status);
    out
}

pub(crate) fn encode_intermediate_cuff_pressure(v: &IntermediateCuffPressure) -> Vec<u8> {
    let mut out = vec![v.flags];
    out.extend(sfloat(&v.cuff_pressure));
    out.extend(SFLOAT_NAN.to_le_bytes());
    out.extend(SFLOAT_NAN.to_le_bytes());
    encode_bp_tail(&mut out, v.timestamp, v.pulse_rate_bpm, v.user_id, v.status);
    out
}

fn encode_pair(out: &mut Vec<u8>, p: &Spo2Pr) {
    out.extend(sfloat(&p.spo2_percent));
    out.extend(sfloat(&p.pulse_rate_bpm));
}

fn u24(raw: u32) -> [u8; 3] {
    let [b0, b1, b2, _] = raw.to_le_bytes();
    [b0, b1, b2]
}

pub(crate) fn encode_plx_spot_check(v: &PlxSpotCheck) -> Vec<u8> {
    let mut out = vec![v.flags];
    encode_pair(&mut out, &v.reading);
    if let Some(t) = v.timestamp {
        out.extend(t.to_bytes());
    }
    if let Some(s) = v.measurement_status {
        out.extend(s.raw.to_le_bytes());
    }
    if let Some(s) = v.device_sensor_status {
        out.extend(u24(s.raw));
    }
    if let Some(p) = v.pulse_amplitude_index_percent {
        out.extend(sfloat(&p));
    }
    out
}

pub(crate) fn encode_plx_continuous(v: &PlxContinuous) -> Vec<u8> {
    let mut out = vec![v.flags];
    encode_pair(&mut out, &v.normal);
    for pair in [v.fast, v.slow].iter().flatten() {
        encode_pair(&mut out, pair);
    }
    if let Some(s) = v.measurement_status {
        out.extend(s.raw.to_le_bytes());
    }
    if let Some(s) = v.device_sensor_status {
        out.extend(u24(s.raw));
    }
    if let Some(p) = v.pulse_amplitude_index_percent {
        out.extend(sfloat(&p));
    }
    out
}

pub(crate) fn encode_temperature(v: &TemperatureMeasurement) -> Vec<u8> {
    let mut out = vec![v.flags];
    out.extend(float(&v.value));
    if let Some(t) = v.timestamp {
        out.extend(t.to_bytes());
    }
    if let Some(t) = v.temperature_type {
        out.push(t.code());
    }
    out
}

pub(crate) fn encode_polar_ecg(v: &PolarEcgFrame) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(v.sensor_timestamp_ns.to_le_bytes());
    out.push(0x00);
    for s in &v.samples_uv {
        out.extend(u24(*s as u32));
    }
    out
}

// ---- Shared strategies ---------------------------------------------------------------------

pub(crate) fn arb_sfloat() -> impl Strategy<Value = Medfloat> {
    any::<u16>().prop_map(Medfloat::from_sfloat_bits)
}

pub(crate) fn arb_float() -> impl Strategy<Value = Medfloat> {
    any::<u32>().prop_map(Medfloat::from_float_bits)
}

pub(crate) fn arb_date_time() -> impl Strategy<Value = DateTime> {
    any::<(u16, u8, u8, u8, u8, u8)>().prop_map(|(year, month, day, hours, minutes, seconds)| {
        DateTime {
            year,
            month,
            day,
            hours,
            minutes,
            seconds,
        }
    })
}

/// Parses test hex, ignoring spaces.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("test hex is valid")
        })
        .collect()
}

// ---- Truncation at every byte --------------------------------------------------------------

/// Decodes every proper prefix of a full, valid value (all optional fields present). Each must
/// be a truncation or inconsistency error pointing inside the prefix, except the lengths in
/// `valid_prefixes`, where a field that runs to the end (RR intervals, ECG samples) has fewer
/// whole items and the value is legitimately shorter.
fn check_prefixes(c: Characteristic, full: &str, valid_prefixes: &[usize]) {
    let full = hex(full);
    assert!(decode(c, &full).is_ok(), "{c}: the full value decodes");
    for len in 0..full.len() {
        let prefix = full.get(..len).expect("len < full.len()");
        match decode(c, prefix) {
            Ok(_) => assert!(
                valid_prefixes.contains(&len),
                "{c}: prefix of {len} bytes decoded"
            ),
            Err(GattError::Truncated {
                offset,
                needed,
                available,
                ..
            }) => {
                assert!(!valid_prefixes.contains(&len), "{c}: prefix {len} refused");
                assert!(offset <= len && available < needed, "{c}: prefix {len}");
                assert_eq!(offset + available, len, "{c}: prefix {len}");
            }
            Err(GattError::Inconsistent { offset, .. }) => {
                assert!(!valid_prefixes.contains(&len), "{c}: prefix {len} refused");
                assert!(offset <= len, "{c}: prefix {len}");
            }
            Err(other) => panic!("{c}: prefix of {len} bytes: unexpected {other:?}"),
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    check_prefixes(
        Characteristic::HeartRate,
        "1F 5000 3412 0003 2003 0004",
        &[7, 9],
    );
    check_prefixes(
        Characteristic::BloodPressure,
        "1F A0F0 6BF0 7CF0 E907030E091A35 4000 01 0C00",
        &[],
    );
    check_prefixes(
        Characteristic::IntermediateCuffPressure,
        "1F 8C00 FF07 FF07 E907030E091A35 4000 01 0C00",
        &[],
    );
    check_prefixes(
        Characteristic::PlxSpotCheck,
        "1F CFF3 4000 E8070C1F173B3A 0001 200001 19F0",
        &[],
    );
    check_prefixes(
        Characteristic::PlxContinuous,
        "1F 6200 4800 6100 4B00 6200 4600 8000 008000 0CF0",
        &[],
    );
    check_prefixes(
        Characteristic::Temperature,
        "07 DA0300FF E90701020304 05 06",
        &[],
    );
    check_prefixes(
        Characteristic::PolarPmdData,
        "00 0807060504030201 00 640000 9CFFFF 010000",
        &[PMD_HEADER_LEN + 3, PMD_HEADER_LEN + 6],
    );
}

#[test]
fn over_long_values_are_refused_before_reading() {
    let long = vec![0_u8; MAX_PAYLOAD_LEN + 1];
    for c in Characteristic::ALL {
        assert_eq!(
            decode(c, &long),
            Err(GattError::TooLong {
                len: MAX_PAYLOAD_LEN + 1,
                max: MAX_PAYLOAD_LEN
            }),
            "{c}"
        );
    }
    // The longest heart rate value that fits: 255 RR intervals.
    let mut max_hr = vec![0x10, 0x48];
    max_hr.extend(std::iter::repeat_n([0x00, 0x04], 255).flatten());
    assert_eq!(max_hr.len(), MAX_PAYLOAD_LEN);
    let decoded = decode_heart_rate(&max_hr).map(|h| h.rr_intervals_1024th_s.len());
    assert_eq!(decoded, Ok(255));
}

// ---- Arbitrary bytes -----------------------------------------------------------------------

/// Whether a decoded value's flags carry reserved bits (which excuse trailing bytes).
fn has_reserved_flags(m: &Measurement) -> bool {
    match m {
        Measurement::HeartRate(v) => v.flags & HR_FLAGS_RESERVED != 0,
        Measurement::BloodPressure(v) => v.flags & BP_FLAGS_RESERVED != 0,
        Measurement::IntermediateCuffPressure(v) => v.flags & BP_FLAGS_RESERVED != 0,
        Measurement::PlxSpotCheck(v) => v.flags & SPOT_FLAGS_RESERVED != 0,
        Measurement::PlxContinuous(v) => v.flags & CONT_FLAGS_RESERVED != 0,
        Measurement::Temperature(v) => v.flags & TEMP_FLAGS_RESERVED != 0,
        Measurement::PolarEcg(_) => false,
    }
}

/// Re-encodes a decoded value with the test encoders.
fn encode(m: &Measurement) -> Option<Vec<u8>> {
    Some(match m {
        Measurement::HeartRate(v) => encode_heart_rate(v),
        Measurement::BloodPressure(v) => encode_blood_pressure(v),
        // The unused fields are not kept, so the bytes cannot be rebuilt.
        Measurement::IntermediateCuffPressure(_) => return None,
        Measurement::PlxSpotCheck(v) => encode_plx_spot_check(v),
        Measurement::PlxContinuous(v) => encode_plx_continuous(v),
        Measurement::Temperature(v) => encode_temperature(v),
        // The measurement type byte's upper bits are not kept.
        Measurement::PolarEcg(_) => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Arbitrary bytes into every decoder: a value or an error, never a panic; and the
    /// samples of whatever decodes can be computed at any time without panicking.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        received_at_us in any::<i64>(),
    ) {
        for c in Characteristic::ALL {
            if let Ok(m) = decode(c, &bytes) {
                prop_assert_eq!(m.characteristic(), c);
                let _ = to_samples(&m, received_at_us);
            }
        }
    }

    /// Whatever decodes without reserved flag bits used every byte exactly as the SIG layout
    /// says: re-encoding gives the same bytes back.
    #[test]
    fn decoding_accounts_for_every_byte(
        flags in 0_u8..32,
        rest in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut bytes = vec![flags];
        bytes.extend(rest);
        for c in Characteristic::ALL {
            if let Ok(m) = decode(c, &bytes)
                && !has_reserved_flags(&m)
                    && let Some(again) = encode(&m) {
                        prop_assert_eq!(&again, &bytes, "{}", c);
                    }
        }
    }

    /// Long values (past the size limit too) into the decoders whose fields run to the end.
    #[test]
    fn long_values_never_panic(
        flags in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![flags];
        bytes.extend(body);
        let _ = decode_heart_rate(&bytes);
        let _ = decode_polar_pmd(&bytes);
    }
}

// ---- Characteristic identification ---------------------------------------------------------

fn check_uuid(input: &str, expected: Option<Characteristic>) {
    assert_eq!(Characteristic::from_uuid_str(input), expected, "{input:?}");
}

#[test]
fn characteristic_uuids() {
    use Characteristic::*;
    check_uuid("2a37", Some(HeartRate));
    check_uuid("2A37", Some(HeartRate));
    check_uuid("0x2A37", Some(HeartRate));
    check_uuid("0X2a37", Some(HeartRate));
    check_uuid(" 2a37\n", Some(HeartRate));
    check_uuid("00002a37-0000-1000-8000-00805f9b34fb", Some(HeartRate));
    check_uuid("00002A37-0000-1000-8000-00805F9B34FB", Some(HeartRate));
    check_uuid("2a35", Some(BloodPressure));
    check_uuid("2a36", Some(IntermediateCuffPressure));
    check_uuid("2a5e", Some(PlxSpotCheck));
    check_uuid("2a5f", Some(PlxContinuous));
    check_uuid("2a1c", Some(Temperature));
    check_uuid("FB005C82-02E7-F387-1CAD-8ACD2D8DF0C8", Some(PolarPmdData));
    check_uuid("fb005c82-02e7-f387-1cad-8acd2d8df0c8", Some(PolarPmdData));
    // Polar's control point and service are not data characteristics.
    check_uuid("FB005C81-02E7-F387-1CAD-8ACD2D8DF0C8", None);
    check_uuid("FB005C80-02E7-F387-1CAD-8ACD2D8DF0C8", None);
    check_uuid("180d", None);
    check_uuid("2a3", None);
    check_uuid("02a37", None);
    check_uuid("+a37", None);
    check_uuid("2a37-0000", None);
    check_uuid("00002a37-0000-1000-8000-00805f9b34fc", None);
    check_uuid("", None);
    check_uuid("0x", None);
    check_uuid("héllo", None);
    for c in Characteristic::ALL {
        // The 128-bit form is the 16-bit one in the Bluetooth Base UUID.
        if let Some(short) = c.uuid16() {
            let base = format!("0000{short:04x}-0000-1000-8000-00805f9b34fb");
            assert_eq!(c.uuid(), base);
        }
        assert_eq!(Characteristic::from_uuid_str(c.uuid()), Some(c));
        assert_eq!(Characteristic::from_name(c.name()), Some(c));
        assert_eq!(Characteristic::parse(c.name()), Some(c));
    }
    assert_eq!(Characteristic::parse("plx_continuous"), Some(PlxContinuous));
    assert_eq!(Characteristic::parse("0x2a5f"), Some(PlxContinuous));
    assert_eq!(Characteristic::parse("pulse"), None);
}

// ---- What people and machines see ----------------------------------------------------------

#[test]
fn error_messages_say_what_and_where() {
    for (bytes, c, expected) in [
        (
            "16 48 00 10 04",
            Characteristic::HeartRate,
            "rr intervals at byte 2: an odd number of bytes is left for 16-bit intervals",
        ),
        (
            "02 7800 5000 5D00 E907",
            Characteristic::BloodPressure,
            "time stamp at byte 7 needs 7 bytes but only 2 are left",
        ),
        (
            "00 6200 4800 00",
            Characteristic::PlxContinuous,
            "1 byte(s) left over at byte 5, after the last field the flags declare",
        ),
        (
            "00 0000000000000000 80 000000",
            Characteristic::PolarPmdData,
            "unsupported polar pmd delta-compressed ecg frame type: 0x80",
        ),
    ] {
        let got = decode(c, &hex(bytes)).map_err(|e| e.to_string());
        assert_eq!(got, Err(expected.to_owned()), "{c} {bytes}");
    }
    assert_eq!(
        GattError::TooLong { len: 600, max: 512 }.to_string(),
        "value is 600 bytes, longer than the 512-byte limit of an attribute value"
    );
}

#[test]
fn json_shape() {
    let m = decode(Characteristic::HeartRate, &hex("16 48 1004")).expect("valid");
    let json = serde_json::to_value(&m).expect("serializable");
    assert_eq!(
        json,
        serde_json::json!({
            "characteristic": "heart_rate",
            "flags": 0x16,
            "heart_rate_bpm": 72,
            "sensor_contact": "detected",
            "energy_expended_kj": null,
            "rr_intervals_1024th_s": [1040],
        })
    );
    let m = decode(Characteristic::BloodPressure, &hex("01 A0F0 6BF0 FF07")).expect("valid");
    let json = serde_json::to_value(&m).expect("serializable");
    assert_eq!(json["characteristic"], "blood_pressure");
    assert_eq!(json["unit"], "kPa");
    assert_eq!(
        json["systolic"],
        serde_json::json!({"kind": "value", "mantissa": 160, "exponent": -1, "value": 16.0})
    );
    assert_eq!(json["mean_arterial"], serde_json::json!({"kind": "nan"}));
    let m = decode(
        Characteristic::PolarPmdData,
        &hex("00 0100000000000000 00 640000"),
    )
    .expect("valid");
    assert_eq!(
        serde_json::to_value(&m).expect("serializable"),
        serde_json::json!({
            "characteristic": "polar_ecg",
            "sensor_timestamp_ns": 1,
            "samples_uv": [100],
        })
    );
}
