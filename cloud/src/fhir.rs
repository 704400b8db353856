//! A session as a FHIR R4 Bundle (`collection`): an Encounter for the session, Observations
//! of the vital signs with LOINC codes and UCUM units (DESIGN.md, "Cloud"), and a
//! MedicationAdministration per stretch of the pump at one rate (the delivered dose, from
//! `clinical::delivered`), every resource referring to the patient as
//! `Patient/{id}` (the patient's own record is `GET /api/v1/patients/{id}`).
//!
//! One Observation per blood-pressure reading; heart rate, SpO2 and temperature, sampled once
//! a second, as one Observation per minute holding the minute's mean over an
//! `effectivePeriod` (a per-second export would be thousands of resources for no clinical
//! gain; the samples themselves are in `/vitals`). ECG and RR intervals are not exported.
//! Pure: data in, JSON out.

use serde_json::{Value, json};
use vigil_shared::doc::SessionState;
use vigil_shared::vitals::Channel;

use crate::store::SessionChart;
use vigil_shared::zone::rfc3339_utc as rfc3339;

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
/// RxNorm's concept for ketamine.
const RXNORM_KETAMINE: &str = "6130";

/// A FHIR id (`[A-Za-z0-9\-\.]{1,64}`) made from one of Vigil's ids.
pub fn fhir_id(s: &str) -> String {
    let mut id: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() {
        id.push('x');
    }
    id
}

fn quantity(value: f64, unit: &str) -> Value {
    json!({"value": value, "unit": unit, "system": UCUM, "code": unit})
}

fn vital_signs() -> Value {
    json!([{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs", "display": "Vital Signs"}]}])
}

fn code(loinc: &str, display: &str) -> Value {
    json!({"coding": [{"system": LOINC, "code": loinc, "display": display}], "text": display})
}

/// The session's Bundle.
pub fn session_bundle(chart: &SessionChart) -> Value {
    let m = &chart.meta;
    let subject = json!({"reference": format!("Patient/{}", fhir_id(&m.patient_id))});
    let encounter_id = fhir_id(&m.id);
    let encounter_ref = json!({"reference": format!("Encounter/{encounter_id}")});
    let mut entries = Vec::new();
    let status = match m.state {
        SessionState::Planned => "planned",
        SessionState::InProgress => "in-progress",
        SessionState::Completed => "finished",
        SessionState::Aborted => "cancelled",
    };
    let mut period = serde_json::Map::new();
    if let Some(s) = m.started_us {
        period.insert("start".into(), rfc3339(s).into());
    }
    if let Some(e) = m.ended_us {
        period.insert("end".into(), rfc3339(e).into());
    }
    entries.push(json!({"resource": {
        "resourceType": "Encounter", "id": encounter_id, "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                  "display": "ambulatory"},
        "subject": subject, "period": period,
        "serviceProvider": {"display": format!("{} room {}", chart.site, m.room)},
    }}));

    let per_minute: [(Channel, &str, &str, &str, f64); 3] = [
        (Channel::Hr, "8867-4", "Heart rate", "/min", 1.0),
        (
            Channel::Spo2,
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            "%",
            1.0,
        ),
        (Channel::Temp, "8310-5", "Body temperature", "Cel", 100.0),
    ];
    for (channel, loinc, display, unit, divisor) in per_minute {
        let Some(page) = chart.vitals.iter().find(|p| p.channel == channel) else {
            continue;
        };
        let mut n = 0;
        for (start, mean) in minute_means(&page.samples) {
            n += 1;
            entries.push(json!({"resource": {
                "resourceType": "Observation", "id": format!("{}-{n}", channel.name()),
                "status": "final", "category": vital_signs(), "code": code(loinc, display),
                "subject": subject, "encounter": encounter_ref,
                "effectivePeriod": {"start": rfc3339(start), "end": rfc3339(start + 60_000_000)},
                "valueQuantity": quantity((mean / divisor * 10.0).round() / 10.0, unit),
            }}));
        }
    }
    if let Some(page) = chart.vitals.iter().find(|p| p.channel == Channel::Nibp) {
        for (n, s) in page.samples.iter().enumerate() {
            let [t, sys, dia, mean] = s[..] else { continue };
            let component = |loinc: &str, display: &str, v: i64| json!({"code": code(loinc, display), "valueQuantity": quantity(v as f64, "mm[Hg]")});
            entries.push(json!({"resource": {
                "resourceType": "Observation", "id": format!("bp-{}", n + 1),
                "status": "final", "category": vital_signs(),
                "code": code("85354-9", "Blood pressure panel with all children optional"),
                "subject": subject, "encounter": encounter_ref, "effectiveDateTime": rfc3339(t),
                "component": [
                    component("8480-6", "Systolic blood pressure", sys),
                    component("8462-4", "Diastolic blood pressure", dia),
                    component("8478-0", "Mean blood pressure", mean),
                ],
            }}));
        }
    }
    // What the pump delivered, one MedicationAdministration per stretch at one rate, each with
    // its own period and amount: they sum to the delivered dose (never the planned total
    // repeated per event). A session still running counts to its last dose event.
    let last_event_us = m.dose_events.iter().map(|d| d.at_us).max();
    let end_us = m.ended_us.or(last_event_us).unwrap_or(m.created_us);
    let delivered = vigil_shared::clinical::delivered(&m.dose_events, end_us);
    let mut medication = json!({"text": m.protocol.drug});
    if m.protocol.drug.eq_ignore_ascii_case("ketamine") {
        medication["coding"] =
            json!([{"system": RXNORM, "code": RXNORM_KETAMINE, "display": "ketamine"}]);
    }
    let performer = |at_us: i64| {
        m.dose_events
            .iter()
            .filter(|d| d.at_us <= at_us)
            .max_by_key(|d| d.at_us)
            .map(|d| d.by.clone())
            .unwrap_or_default()
    };
    let last = delivered.segments.len();
    for (n, seg) in delivered.segments.iter().enumerate() {
        let status = match m.state {
            SessionState::InProgress if n + 1 == last => "in-progress",
            SessionState::Aborted if n + 1 == last => "stopped",
            _ => "completed",
        };
        entries.push(json!({"resource": {
            "resourceType": "MedicationAdministration", "id": format!("dose-{}", n + 1),
            "status": status, "medicationCodeableConcept": medication,
            "subject": subject, "context": encounter_ref,
            "effectivePeriod": {"start": rfc3339(seg.from_us), "end": rfc3339(seg.to_us)},
            "performer": [{"actor": {"display": performer(seg.from_us)}}],
            "note": [{"text": format!(
                "delivered {:.1} mg of {:.1} mg in {} min of pump time; planned {} mg/kg over {} min for {} kg",
                delivered.mg,
                m.protocol.dose_mg_per_kg * m.protocol.weight_kg,
                delivered.infused_us / 60_000_000,
                m.protocol.dose_mg_per_kg, m.protocol.planned_minutes, m.protocol.weight_kg)}],
            "dosage": {
                "route": {"text": m.protocol.route},
                "dose": quantity((seg.mg * 1000.0).round() / 1000.0, "mg"),
                "rateQuantity": quantity(seg.rate_mg_per_h, "mg/h"),
            },
        }}));
    }
    json!({
        "resourceType": "Bundle",
        "id": format!("session-{}", fhir_id(&m.id)),
        "type": "collection",
        "timestamp": rfc3339(m.ended_us.or(m.started_us).unwrap_or(m.created_us)),
        "entry": entries,
    })
}

/// `(minute start µs, mean)` of `[t, v]` samples, minutes aligned to the first sample.
fn minute_means(samples: &[Vec<i64>]) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    let Some(first) = samples.first().and_then(|s| s.first().copied()) else {
        return out;
    };
    let mut current: Option<(i64, i64, u32)> = None;
    for s in samples {
        let [t, v, ..] = s[..] else { continue };
        let minute = first + (t - first).div_euclid(60_000_000) * 60_000_000;
        match &mut current {
            Some((m, sum, n)) if *m == minute => {
                *sum += v;
                *n += 1;
            }
            _ => {
                if let Some((m, sum, n)) = current.take() {
                    out.push((m, sum as f64 / f64::from(n)));
                }
                current = Some((minute, v, 1));
            }
        }
    }
    if let Some((m, sum, n)) = current {
        out.push((m, sum as f64 / f64::from(n)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_minute_means() {
        assert_eq!(fhir_id("s:austin/1@x"), "s-austin-1-x");
        assert_eq!(fhir_id(""), "x");
        assert_eq!(fhir_id(&"a".repeat(80)).len(), 64);
        let samples: Vec<Vec<i64>> = (0..150).map(|s| vec![s * 1_000_000, 60 + s / 60]).collect();
        let means = minute_means(&samples);
        assert_eq!(
            means,
            vec![(0, 60.0), (60_000_000, 61.0), (120_000_000, 62.0)]
        );
    }

    #[test]
    fn doses_are_what_the_pump_delivered_one_resource_per_rate() {
        use vigil_shared::doc::{DoseAction, DoseEvent, Protocol, SessionMeta};
        let minute = 60_000_000;
        let dose = |at: i64, action, rate| DoseEvent {
            id: format!("d{at}"),
            at_us: at * minute,
            action,
            rate_mg_per_h: rate,
            by: "nurse-ana".into(),
        };
        // 60 mg/h for 10 min, paused 5, resumed for 10, then 30 mg/h for 20 min: 10 + 10 + 10.
        let meta = SessionMeta {
            id: "s-1".into(),
            site: "austin".into(),
            room: "1".into(),
            patient_id: "p-1".into(),
            protocol: Protocol {
                drug: "ketamine".into(),
                route: "iv".into(),
                dose_mg_per_kg: 0.5,
                weight_kg: 70.0,
                planned_minutes: 40,
            },
            state: SessionState::Completed,
            created_us: 0,
            started_us: Some(0),
            ended_us: Some(60 * minute),
            dose_events: vec![
                dose(0, DoseAction::Start, Some(60.0)),
                dose(10, DoseAction::Pause, None),
                dose(15, DoseAction::Resume, None),
                dose(25, DoseAction::RateChange, Some(30.0)),
                dose(45, DoseAction::Stop, None),
            ],
            advisories: vec![],
            observations: vec![],
            scores: vec![],
            discharge: None,
        };
        let chart = SessionChart {
            site: "austin".into(),
            meta,
            notes: String::new(),
            vitals: vec![],
            ecg_span: None,
        };
        let bundle = session_bundle(&chart);
        let doses: Vec<&Value> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == "MedicationAdministration")
            .collect();
        let amounts: Vec<f64> = doses
            .iter()
            .map(|r| r["dosage"]["dose"]["value"].as_f64().unwrap())
            .collect();
        assert_eq!(amounts, [10.0, 10.0, 10.0]);
        let rates: Vec<f64> = doses
            .iter()
            .map(|r| r["dosage"]["rateQuantity"]["value"].as_f64().unwrap())
            .collect();
        assert_eq!(rates, [60.0, 60.0, 30.0]);
        assert_eq!(doses[1]["effectivePeriod"]["start"], rfc3339(15 * minute));
        assert!(doses.iter().all(|r| r["status"] == "completed"));
    }
}
