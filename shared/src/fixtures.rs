//! Documents for tests and benches (feature `test-support`): one place for the standard
//! session so that a change to the schema changes one fixture, not five.

use crate::doc::{DoseAction, DoseEvent, Protocol, SessionMeta, SessionState};

/// The usual ketamine protocol for depression: 0.5 mg/kg for a 70 kg patient over 40 minutes.
pub fn protocol() -> Protocol {
    Protocol {
        drug: "ketamine".into(),
        route: "iv".into(),
        dose_mg_per_kg: 0.5,
        weight_kg: 70.0,
        planned_minutes: 40,
    }
}

/// A session of `site` and `room` in progress since `started_us`, for patient `p-<id>`, with
/// [`protocol`] and nothing recorded yet. Change fields with struct update syntax:
/// `SessionMeta { state: SessionState::Completed, ..session_meta(..) }`.
pub fn session_meta(id: &str, site: &str, room: &str, started_us: i64) -> SessionMeta {
    SessionMeta {
        id: id.into(),
        site: site.into(),
        room: room.into(),
        patient_id: format!("p-{id}"),
        protocol: protocol(),
        state: SessionState::InProgress,
        created_us: started_us,
        started_us: Some(started_us),
        ended_us: None,
        dose_events: vec![],
        advisories: vec![],
        observations: vec![],
        scores: vec![],
        discharge: None,
    }
}

/// A dose event by `dr-kim`.
pub fn dose(id: &str, at_us: i64, action: DoseAction, rate_mg_per_h: Option<f64>) -> DoseEvent {
    DoseEvent {
        id: id.into(),
        at_us,
        action,
        rate_mg_per_h,
        by: "dr-kim".into(),
    }
}
