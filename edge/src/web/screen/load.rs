//! What the room screen's pages read: sessions, patients, the course's infusions done, the
//! staff names, each from the appliance's database through a read-only connection.

use std::collections::BTreeMap;

use vigil_shared::care::SessionCare;
use vigil_shared::clinical;
use vigil_shared::doc::{
    CheckIn, DocKind, PatientDoc, PatientRecord, SessionDoc, SessionMeta, SessionState,
};

use crate::recorder::RecorderError;
use crate::store;

/// Patients read for a search; a room appliance holds its site's patients, a few thousand at
/// most. Past this the search says to narrow it.
pub const MAX_PATIENTS_SCANNED: usize = 5_000;

/// A session's parts the screen shows (no vitals: those are decoded only by the API).
pub(crate) struct SessionParts {
    pub(crate) meta: SessionMeta,
    pub(crate) notes: String,
    pub(crate) checkin: Option<CheckIn>,
    /// The care record: the order, overrides, checkpoints, how the session ended when not by
    /// a discharge home (an EMS transfer, leaving against advice), ….
    pub(crate) care: SessionCare,
}

pub(crate) fn session(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<SessionParts>, RecorderError> {
    let Some(doc) = store::load_typed::<SessionDoc>(conn, id)? else {
        return Ok(None);
    };
    Ok(Some(SessionParts {
        meta: doc.meta()?,
        notes: doc.notes()?,
        checkin: doc.checkin()?,
        care: doc.care()?,
    }))
}

pub(crate) fn patient(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<PatientRecord>, RecorderError> {
    match store::load_typed::<PatientDoc>(conn, id)? {
        Some(doc) => Ok(Some(doc.record()?)),
        None => Ok(None),
    }
}

/// Whether a room's session row is an infusion done (`clinical::infusion_done`, the one
/// definition); a state this version cannot read is not.
fn row_is_infusion_done(r: &store::SessionRow) -> bool {
    serde_json::from_value::<SessionState>(serde_json::Value::String(r.state.clone()))
        .is_ok_and(clinical::infusion_done)
}

/// Start times of a patient's infusions done (completed sessions): those the site's rooms
/// recorded in the patient's document, and this room's own completed sessions (which covers
/// sessions completed before the document kept the list). A started but aborted session is not
/// an infusion done.
pub(crate) fn infusions_done(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Vec<i64>, RecorderError> {
    let mut done: BTreeMap<String, i64> = BTreeMap::new();
    if let Some(doc) = store::load_typed::<PatientDoc>(conn, id)? {
        for d in doc.infusions_done()? {
            done.insert(d.session_id, d.started_us);
        }
    }
    for r in store::sessions(conn)? {
        if r.patient_id == id && row_is_infusion_done(&r) {
            done.insert(r.id, r.started_us.unwrap_or_default());
        }
    }
    Ok(done.into_values().collect())
}

/// The patient's latest infusion done in this room (a completed session), to show at the next
/// check-in: the dose, how it was tolerated, how it ended.
pub(crate) fn last_infusion(
    conn: &rusqlite::Connection,
    patient_id: &str,
) -> Result<Option<SessionParts>, RecorderError> {
    let row = store::sessions(conn)?
        .into_iter()
        .find(|r| r.patient_id == patient_id && row_is_infusion_done(r));
    match row {
        Some(r) => session(conn, &r.id),
        None => Ok(None),
    }
}

/// Every patient of the site, by family then given name (at most [`MAX_PATIENTS_SCANNED`]).
pub(crate) fn all_patients(
    conn: &rusqlite::Connection,
) -> Result<Vec<PatientRecord>, RecorderError> {
    let ids = store::document_ids(conn, DocKind::Patient.as_str())?;
    let mut out = Vec::new();
    for id in ids.into_iter().take(MAX_PATIENTS_SCANNED) {
        if let Some(p) = patient(conn, &id)? {
            out.push(p);
        }
    }
    out.sort_by(|a, b| {
        (a.family_name.to_lowercase(), a.given_name.to_lowercase())
            .cmp(&(b.family_name.to_lowercase(), b.given_name.to_lowercase()))
    });
    Ok(out)
}

/// Staff ids to names, for showing who did what.
pub(crate) fn staff_names(conn: &rusqlite::Connection, site: &str) -> BTreeMap<String, String> {
    super::site_config(conn, site)
        .ok()
        .flatten()
        .map(|c| c.staff.into_iter().map(|m| (m.id, m.name)).collect())
        .unwrap_or_default()
}

/// The site's clinicians (id, name), who may prescribe and override; empty before the first
/// sync.
pub(crate) fn clinicians(conn: &rusqlite::Connection, site: &str) -> Vec<(String, String)> {
    let clinician = vigil_shared::clinical::StaffRole::Clinician.code();
    super::site_config(conn, site)
        .ok()
        .flatten()
        .map(|c| {
            c.staff
                .into_iter()
                .filter(|m| m.role == clinician)
                .map(|m| (m.id, m.name))
                .collect()
        })
        .unwrap_or_default()
}

/// The patient's suicide-risk screen of this visit, if one was taken
/// (`crate::recorder::current_risk_screen`).
pub(crate) fn current_risk_screen(
    conn: &rusqlite::Connection,
    id: &str,
    now_us: i64,
) -> Result<Option<vigil_shared::care::RiskScreenEntry>, RecorderError> {
    match store::load_typed::<PatientDoc>(conn, id)? {
        Some(doc) => crate::recorder::current_risk_screen(&doc, now_us),
        None => Ok(None),
    }
}

/// The patient's screening answers so far, each with the check-in that asked it.
pub(crate) fn screening_answers(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Vec<vigil_shared::care::ScreeningEntry>, RecorderError> {
    match store::load_typed::<PatientDoc>(conn, id)? {
        Some(doc) => Ok(doc.screening_answers()?),
        None => Ok(Vec::new()),
    }
}
