//! The Automerge document schema: session, patient and site-config documents (audit documents
//! are in [`crate::audit`]).
//!
//! Every document has `schema` (a version number) and `kind` at its root. Typed, low-rate parts
//! (protocol, events, advisories, scores, discharge, demographics, configuration) are mapped with
//! `autosurgeon`; vitals are not: each channel is an append-only list of immutable chunk bytes
//! written by hand (see [`SessionDoc::append_chunk`]), because reconciling thousands of chunks
//! through autosurgeon costs hundreds of milliseconds per append. Notes are Automerge `Text`,
//! also edited by hand, so that two people typing merge character by character.
//!
//! This module does no I/O: it turns documents into bytes and back, and validates them. Where
//! the bytes live is the appliance's and the cloud's business.

use std::collections::BTreeMap;

use automerge::{
    AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value, transaction::Transactable,
};
use autosurgeon::{Hydrate, Reconcile, hydrate_prop, reconcile_prop};
use serde::{Deserialize, Serialize};

use crate::advisory::Thresholds;
use crate::chunk::{Chunk, ChunkError, peek_header};
use crate::vitals::Channel;
pub use crate::wire::DocKind;

/// The schema version this code writes. Readers accept every version listed in
/// [`READABLE_SCHEMAS`].
pub const SCHEMA_VERSION: u64 = 1;

/// Every schema version this code has ever written and can still read.
pub const READABLE_SCHEMAS: &[u64] = &[1];

/// Upper bound on chunks per channel in one session document: a 24-hour session at the
/// default 10-second chunk period is 8,640 chunks. Past this the document is rejected as
/// malformed rather than walked for minutes.
pub const MAX_CHUNKS_PER_CHANNEL: usize = 20_000;

/// Errors reading or changing a Vigil document.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The bytes are not an Automerge document.
    #[error("not an automerge document: {0}")]
    Load(#[from] automerge::AutomergeError),
    /// The document has no `kind`, or a kind other than the one expected.
    #[error("document kind is {found:?}, expected {expected:?}")]
    WrongKind {
        /// What the caller expected.
        expected: &'static str,
        /// What the document says (empty when missing).
        found: String,
    },
    /// The document's schema version is missing or newer than this code understands.
    #[error("document schema version {0:?} is not readable by this version of vigil")]
    UnknownSchema(Option<u64>),
    /// A typed part of the document does not have the expected shape.
    #[error("document field does not match the schema: {0}")]
    Hydrate(#[from] autosurgeon::HydrateError),
    /// Writing a typed part failed.
    #[error("cannot write document field: {0}")]
    Reconcile(#[from] autosurgeon::ReconcileError),
    /// The vitals part of a session document is malformed.
    #[error("vitals of channel {channel} are malformed: {reason}")]
    Vitals {
        /// The channel whose list is broken.
        channel: String,
        /// What is wrong.
        reason: String,
    },
    /// A document id that its kind does not allow (audit documents need a UUID).
    #[error("{kind} document id {id:?} is not a UUID")]
    BadId {
        /// The document's kind.
        kind: DocKind,
        /// The refused id.
        id: String,
    },
    /// A log document (audit, ledger) would hold more entries than allowed.
    #[error("{log} document holds {len} entries, adding {adding} would pass the limit of {max}")]
    LogFull {
        /// Which log: `audit` or `ledger`.
        log: &'static str,
        /// Entries it holds.
        len: usize,
        /// Entries being added.
        adding: usize,
        /// The log's limit.
        max: usize,
    },
    /// One entry of a log document is malformed or over a field limit.
    #[error("{log} entry {index} is malformed: {reason}")]
    LogEntry {
        /// Which log.
        log: &'static str,
        /// The entry's position in the list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A log document lacks its entry list (or, for audit, its room).
    #[error("{log} document is malformed: {reason}")]
    LogShape {
        /// Which log.
        log: &'static str,
        /// What is missing.
        reason: String,
    },
    /// A change to a log document that edits, moves or removes an existing entry.
    #[error("{log} entries may only be added, but {reason}")]
    LogRewritten {
        /// Which log.
        log: &'static str,
        /// What the change did.
        reason: String,
    },
}

/// What every document says about itself at its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocHeader {
    /// The document's kind.
    pub kind: DocKind,
    /// The schema version it was written with.
    pub schema: u64,
    /// The document's id (session or patient id, or the site for a site config).
    pub id: String,
    /// The site the document belongs to; the cloud's scope checks use this.
    pub site: String,
}

/// Reads and checks the root fields every Vigil document carries.
pub fn header(doc: &impl ReadDoc) -> Result<DocHeader, DocError> {
    let kind_name = root_str(doc, "kind").unwrap_or_default();
    let kind = DocKind::from_name(&kind_name).ok_or(DocError::WrongKind {
        expected: "session, patient, site_config or audit",
        found: kind_name,
    })?;
    let schema = root_u64(doc, "schema");
    match schema {
        Some(v) if READABLE_SCHEMAS.contains(&v) => {}
        other => return Err(DocError::UnknownSchema(other)),
    }
    Ok(DocHeader {
        kind,
        schema: schema.unwrap_or(SCHEMA_VERSION),
        id: root_str(doc, "id").unwrap_or_default(),
        site: root_str(doc, "site").unwrap_or_default(),
    })
}

/// The root `room` of a document that belongs to one room (sessions and audit documents),
/// if it has one.
pub fn room_of(doc: &impl ReadDoc) -> Option<String> {
    root_str(doc, "room")
}

fn root_str(doc: &impl ReadDoc, key: &str) -> Option<String> {
    match doc.get(automerge::ROOT, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn root_u64(doc: &impl ReadDoc, key: &str) -> Option<u64> {
    match doc.get(automerge::ROOT, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Uint(v) => Some(*v),
            ScalarValue::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// A document type of one kind, so a loader can check the stored kind before wrapping: one
/// typed loader serves every reader instead of each matching kinds by hand.
pub trait Typed: Sized {
    /// The kind its header names.
    const KIND: DocKind;
    /// Wraps an Automerge document, checking its kind and schema.
    fn wrap(doc: AutoCommit) -> Result<Self, DocError>;
}

impl Typed for SessionDoc {
    const KIND: DocKind = DocKind::Session;
    fn wrap(doc: AutoCommit) -> Result<Self, DocError> {
        SessionDoc::from_automerge(doc)
    }
}

impl Typed for PatientDoc {
    const KIND: DocKind = DocKind::Patient;
    fn wrap(doc: AutoCommit) -> Result<Self, DocError> {
        PatientDoc::from_automerge(doc)
    }
}

impl Typed for SiteConfigDoc {
    const KIND: DocKind = DocKind::SiteConfig;
    fn wrap(doc: AutoCommit) -> Result<Self, DocError> {
        SiteConfigDoc::from_automerge(doc)
    }
}

pub(crate) fn expect_kind(doc: &impl ReadDoc, expected: DocKind) -> Result<DocHeader, DocError> {
    let h = header(doc)?;
    if h.kind != expected {
        return Err(DocError::WrongKind {
            expected: expected.as_str(),
            found: h.kind.as_str().into(),
        });
    }
    Ok(h)
}

pub(crate) fn write_header(
    doc: &mut AutoCommit,
    kind: DocKind,
    id: &str,
    site: &str,
) -> Result<(), DocError> {
    doc.put(automerge::ROOT, "schema", SCHEMA_VERSION)?;
    doc.put(automerge::ROOT, "kind", kind.as_str())?;
    doc.put(automerge::ROOT, "id", id)?;
    doc.put(automerge::ROOT, "site", site)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Session

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Created, infusion not started.
    #[autosurgeon(rename = "planned")]
    Planned,
    /// Recording.
    #[autosurgeon(rename = "in_progress")]
    InProgress,
    /// Finished normally.
    #[autosurgeon(rename = "completed")]
    Completed,
    /// Stopped early.
    #[autosurgeon(rename = "aborted")]
    Aborted,
}

/// The infusion protocol.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct Protocol {
    /// The drug, e.g. `ketamine`.
    pub drug: String,
    /// The route, e.g. `iv`.
    pub route: String,
    /// The dose in mg per kg of body weight.
    pub dose_mg_per_kg: f64,
    /// The patient's weight in kg on the day.
    pub weight_kg: f64,
    /// The planned infusion duration in minutes.
    pub planned_minutes: u64,
}

/// A dose event on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoseAction {
    /// Infusion started.
    #[autosurgeon(rename = "start")]
    Start,
    /// Pump rate changed.
    #[autosurgeon(rename = "rate_change")]
    RateChange,
    /// Infusion paused.
    #[autosurgeon(rename = "pause")]
    Pause,
    /// Infusion resumed.
    #[autosurgeon(rename = "resume")]
    Resume,
    /// Infusion stopped.
    #[autosurgeon(rename = "stop")]
    Stop,
}

/// One entry of the dose timeline.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct DoseEvent {
    /// Unique id; the list is keyed on it so concurrent appends merge.
    #[key]
    pub id: String,
    /// When, µs since the epoch.
    pub at_us: i64,
    /// What happened.
    pub action: DoseAction,
    /// The pump rate after the event, mg/h, when known.
    pub rate_mg_per_h: Option<f64>,
    /// Who recorded it.
    pub by: String,
}

/// An advisory raised by the rule engine, and what people did about it.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct AdvisoryRecord {
    /// Unique id.
    #[key]
    pub id: String,
    /// The rule, e.g. `bp_high`, `spo2_low`, `disconnected`.
    pub kind: String,
    /// The channel or device it concerns.
    pub subject: String,
    /// `high`, `medium` or `low`.
    pub priority: String,
    /// Human-readable detail.
    pub detail: String,
    /// When it was raised, µs.
    pub raised_us: i64,
    /// When someone acknowledged it.
    pub acknowledged_us: Option<i64>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When the condition ended.
    pub cleared_us: Option<i64>,
}

/// A side effect observed during the session.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct Observation {
    /// Unique id.
    #[key]
    pub id: String,
    /// When, µs.
    pub at_us: i64,
    /// The effect, e.g. `nausea`, `dissociation`.
    pub effect: String,
    /// `mild`, `moderate` or `severe`.
    pub severity: String,
    /// Who recorded it.
    pub by: String,
}

/// A questionnaire or scale result.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct Score {
    /// Unique id.
    #[key]
    pub id: String,
    /// When, µs.
    pub at_us: i64,
    /// The instrument, e.g. `phq9`, `gad7`, `cadss`, `aldrete`.
    pub instrument: String,
    /// `pre` or `post`.
    pub phase: String,
    /// The total.
    pub value: i64,
    /// Who recorded it.
    pub by: String,
}

/// The discharge record.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct Discharge {
    /// When, µs.
    pub at_us: i64,
    /// Modified Aldrete score (0–10).
    pub aldrete: i64,
    /// The escort's name.
    pub escort: String,
    /// The patient acknowledged no driving for 24 hours.
    pub no_driving_ack: bool,
    /// Who discharged.
    pub by: String,
}

/// The typed, low-rate part of a session document (everything but vitals and notes).
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct SessionMeta {
    /// Session id.
    pub id: String,
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// Patient id.
    pub patient_id: String,
    /// Protocol.
    pub protocol: Protocol,
    /// State.
    pub state: SessionState,
    /// Created, µs.
    pub created_us: i64,
    /// Recording started, µs.
    pub started_us: Option<i64>,
    /// Recording ended, µs.
    pub ended_us: Option<i64>,
    /// Dose timeline.
    pub dose_events: Vec<DoseEvent>,
    /// Advisories.
    pub advisories: Vec<AdvisoryRecord>,
    /// Observations.
    pub observations: Vec<Observation>,
    /// Scores.
    pub scores: Vec<Score>,
    /// Discharge.
    pub discharge: Option<Discharge>,
}

const META_KEYS: [&str; 14] = [
    "id",
    "site",
    "room",
    "patient_id",
    "protocol",
    "state",
    "created_us",
    "started_us",
    "ended_us",
    "dose_events",
    "advisories",
    "observations",
    "scores",
    "discharge",
];

/// A session document: typed metadata, vitals chunk lists and notes.
#[derive(Debug, Clone)]
pub struct SessionDoc {
    doc: AutoCommit,
    /// The object id of each channel's chunk list, looked up once.
    vitals: BTreeMap<Channel, ObjId>,
    notes: ObjId,
}

impl SessionDoc {
    /// A new session document.
    pub fn create(meta: &SessionMeta) -> Result<SessionDoc, DocError> {
        let mut doc = AutoCommit::new();
        write_header(&mut doc, DocKind::Session, &meta.id, &meta.site)?;
        let vitals_obj = doc.put_object(automerge::ROOT, "vitals", ObjType::Map)?;
        let mut vitals = BTreeMap::new();
        for channel in Channel::ALL {
            let list = doc.put_object(&vitals_obj, channel.name(), ObjType::List)?;
            vitals.insert(channel, list);
        }
        let notes = doc.put_object(automerge::ROOT, "notes", ObjType::Text)?;
        crate::care::create_lists(&mut doc)?;
        let mut session = SessionDoc { doc, vitals, notes };
        session.write_meta(meta)?;
        Ok(session)
    }

    /// Loads a saved session document and checks its kind and schema.
    pub fn load(bytes: &[u8]) -> Result<SessionDoc, DocError> {
        SessionDoc::from_automerge(AutoCommit::load(bytes)?)
    }

    /// Wraps an Automerge document already in memory, checking its kind and schema.
    pub fn from_automerge(doc: AutoCommit) -> Result<SessionDoc, DocError> {
        expect_kind(&doc, DocKind::Session)?;
        let vitals_obj = match doc.get(automerge::ROOT, "vitals")? {
            Some((Value::Object(ObjType::Map), id)) => id,
            _ => return Err(vitals_error("*", "no vitals map")),
        };
        let mut vitals = BTreeMap::new();
        for channel in Channel::ALL {
            // A channel added by a newer schema is absent from older documents; such a
            // document is still readable, the channel simply has no chunks yet.
            if let Some((Value::Object(ObjType::List), id)) =
                doc.get(&vitals_obj, channel.name())?
            {
                vitals.insert(channel, id);
            }
        }
        let notes = match doc.get(automerge::ROOT, "notes")? {
            Some((Value::Object(ObjType::Text), id)) => id,
            _ => return Err(vitals_error("notes", "no notes text")),
        };
        Ok(SessionDoc { doc, vitals, notes })
    }

    /// The typed metadata.
    pub fn meta(&self) -> Result<SessionMeta, DocError> {
        read_session_meta(&self.doc)
    }

    /// Changes the typed metadata: hydrate, let `f` edit, reconcile the difference.
    /// On error the open transaction is rolled back, so the document is unchanged.
    pub fn update_meta<R>(&mut self, f: impl FnOnce(&mut SessionMeta) -> R) -> Result<R, DocError> {
        let mut meta = self.meta()?;
        let out = f(&mut meta);
        if let Err(e) = self.write_meta(&meta) {
            self.doc.rollback();
            return Err(e);
        }
        Ok(out)
    }

    fn write_meta(&mut self, meta: &SessionMeta) -> Result<(), DocError> {
        // Each field is reconciled under its own root key, so that the hand-written parts of
        // the root (vitals, notes, schema, kind) are never touched by autosurgeon.
        let d = &mut self.doc;
        let root = automerge::ROOT;
        reconcile_prop(d, &root, META_KEYS[0], &meta.id)?;
        reconcile_prop(d, &root, META_KEYS[1], &meta.site)?;
        reconcile_prop(d, &root, META_KEYS[2], &meta.room)?;
        reconcile_prop(d, &root, META_KEYS[3], &meta.patient_id)?;
        reconcile_prop(d, &root, META_KEYS[4], &meta.protocol)?;
        reconcile_prop(d, &root, META_KEYS[5], meta.state)?;
        reconcile_prop(d, &root, META_KEYS[6], meta.created_us)?;
        reconcile_prop(d, &root, META_KEYS[7], meta.started_us)?;
        reconcile_prop(d, &root, META_KEYS[8], meta.ended_us)?;
        reconcile_prop(d, &root, META_KEYS[9], &meta.dose_events)?;
        reconcile_prop(d, &root, META_KEYS[10], &meta.advisories)?;
        reconcile_prop(d, &root, META_KEYS[11], &meta.observations)?;
        reconcile_prop(d, &root, META_KEYS[12], &meta.scores)?;
        reconcile_prop(d, &root, META_KEYS[13], &meta.discharge)?;
        Ok(())
    }

    /// Appends one closed chunk to its channel's list. The chunk's header is checked first:
    /// a chunk of the wrong channel or an unreadable one never enters the document.
    pub fn append_chunk(&mut self, channel: Channel, bytes: Vec<u8>) -> Result<(), DocError> {
        let h = peek_header(&bytes).map_err(|e| vitals_error(channel.name(), &e.to_string()))?;
        if h.channel != channel {
            return Err(vitals_error(
                channel.name(),
                "chunk belongs to another channel",
            ));
        }
        let list = match self.vitals.get(&channel) {
            Some(list) => list.clone(),
            None => {
                let vitals_obj = match self.doc.get(automerge::ROOT, "vitals")? {
                    Some((Value::Object(ObjType::Map), id)) => id,
                    _ => return Err(vitals_error("*", "no vitals map")),
                };
                let list = self
                    .doc
                    .put_object(&vitals_obj, channel.name(), ObjType::List)?;
                self.vitals.insert(channel, list.clone());
                list
            }
        };
        let len = self.doc.length(&list);
        if len >= MAX_CHUNKS_PER_CHANNEL {
            return Err(vitals_error(channel.name(), "too many chunks"));
        }
        self.doc.insert(&list, len, ScalarValue::Bytes(bytes))?;
        Ok(())
    }

    /// Number of chunks stored for a channel.
    pub fn chunk_count(&self, channel: Channel) -> usize {
        self.vitals
            .get(&channel)
            .map_or(0, |list| self.doc.length(list))
    }

    /// Every chunk of a channel, each decoded on its own: a corrupt chunk yields an error in
    /// its place while the others still read.
    pub fn chunks(&self, channel: Channel) -> Vec<Result<Chunk, ChunkReadError>> {
        self.chunk_bytes(channel)
            .into_iter()
            .map(|b| match b {
                Some(bytes) => match Chunk::decode(&bytes) {
                    Ok(c) if c.channel == channel => Ok(c),
                    Ok(_) => Err(ChunkReadError::WrongChannel),
                    Err(e) => Err(ChunkReadError::Decode(e)),
                },
                None => Err(ChunkReadError::NotBytes),
            })
            .collect()
    }

    /// The raw bytes of every chunk of a channel (`None` for a list item that isn't bytes).
    pub fn chunk_bytes(&self, channel: Channel) -> Vec<Option<Vec<u8>>> {
        let Some(list) = self.vitals.get(&channel) else {
            return Vec::new();
        };
        let len = self.doc.length(list).min(MAX_CHUNKS_PER_CHANNEL);
        (0..len)
            .map(|i| match self.doc.get(list, i) {
                Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                    ScalarValue::Bytes(b) => Some(b.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Appends text to the notes.
    pub fn append_note(&mut self, text: &str) -> Result<(), DocError> {
        let len = self.doc.length(&self.notes);
        self.doc.splice_text(&self.notes, len, 0, text)?;
        Ok(())
    }

    /// The notes as plain text.
    pub fn notes(&self) -> Result<String, DocError> {
        Ok(self.doc.text(&self.notes)?)
    }

    /// The underlying Automerge document (for saving and syncing).
    pub fn automerge(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// The underlying Automerge document, read-only.
    pub fn automerge_ref(&self) -> &AutoCommit {
        &self.doc
    }
}

/// Root key of a session's check-in record (absent in sessions started without the room
/// screen, and in documents written before it existed: readers treat absence as `None`).
pub const CHECKIN_KEY: &str = "checkin";

/// What the room screen recorded at check-in, before the infusion: baseline vitals, the
/// screening flags found and any clinician override, the pump settings and the pre-infusion
/// checklist. Written once, in the same transaction that creates the session.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct CheckIn {
    /// When, µs.
    pub at_us: i64,
    /// Who checked the patient in (staff id).
    pub by: String,
    /// Baseline systolic pressure, mmHg.
    pub baseline_systolic: i64,
    /// Baseline diastolic pressure, mmHg.
    pub baseline_diastolic: i64,
    /// Baseline heart rate, bpm.
    pub baseline_hr: Option<i64>,
    /// Baseline SpO2, %.
    pub baseline_spo2: Option<i64>,
    /// Screening flags answered "yes" (codes of `clinical::screening::ScreeningFlag`), a high
    /// baseline counted as uncontrolled hypertension.
    pub flags: Vec<String>,
    /// The clinician's reason for starting despite the flags.
    pub override_reason: Option<String>,
    /// The clinician who overrode (staff id).
    pub override_by: Option<String>,
    /// Concentration of the prepared infusion, mg/mL.
    pub concentration_mg_per_ml: f64,
    /// Total dose, mg.
    pub total_mg: f64,
    /// Pump rate, mg/h.
    pub rate_mg_per_h: f64,
    /// Pump rate, mL/h.
    pub rate_ml_per_h: f64,
    /// Escort home arranged.
    pub escort_arranged: bool,
    /// Informed consent signed.
    pub consent: bool,
    /// Nothing by mouth as instructed.
    pub nothing_by_mouth: bool,
}

/// The check-in record of a session document; absent is `None`, malformed an error.
fn read_checkin(doc: &AutoCommit) -> Result<Option<CheckIn>, DocError> {
    if doc.get(automerge::ROOT, CHECKIN_KEY)?.is_none() {
        return Ok(None);
    }
    Ok(Some(hydrate_prop(doc, automerge::ROOT, CHECKIN_KEY)?))
}

impl SessionDoc {
    /// The check-in record, if the session has one.
    pub fn checkin(&self) -> Result<Option<CheckIn>, DocError> {
        read_checkin(&self.doc)
    }

    /// Writes the check-in record.
    pub fn set_checkin(&mut self, checkin: &CheckIn) -> Result<(), DocError> {
        if let Err(e) = reconcile_prop(&mut self.doc, automerge::ROOT, CHECKIN_KEY, checkin) {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(())
    }
}

/// Why one chunk of a session document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkReadError {
    /// The bytes are not a valid chunk.
    #[error("corrupt chunk: {0}")]
    Decode(ChunkError),
    /// The chunk is valid but belongs to another channel's list.
    #[error("chunk of another channel")]
    WrongChannel,
    /// The list item is not a bytes value.
    #[error("list item is not a chunk")]
    NotBytes,
}

/// Reads a session document's typed metadata from any Automerge document (no copy), as
/// [`SessionDoc::meta`] does.
pub fn read_session_meta(doc: &AutoCommit) -> Result<SessionMeta, DocError> {
    Ok(SessionMeta {
        id: hydrate_prop(doc, automerge::ROOT, "id")?,
        site: hydrate_prop(doc, automerge::ROOT, "site")?,
        room: hydrate_prop(doc, automerge::ROOT, "room")?,
        patient_id: hydrate_prop(doc, automerge::ROOT, "patient_id")?,
        protocol: hydrate_prop(doc, automerge::ROOT, "protocol")?,
        state: hydrate_prop(doc, automerge::ROOT, "state")?,
        created_us: hydrate_prop(doc, automerge::ROOT, "created_us")?,
        started_us: hydrate_prop(doc, automerge::ROOT, "started_us")?,
        ended_us: hydrate_prop(doc, automerge::ROOT, "ended_us")?,
        dose_events: hydrate_prop(doc, automerge::ROOT, "dose_events")?,
        advisories: hydrate_prop(doc, automerge::ROOT, "advisories")?,
        observations: hydrate_prop(doc, automerge::ROOT, "observations")?,
        scores: hydrate_prop(doc, automerge::ROOT, "scores")?,
        discharge: hydrate_prop(doc, automerge::ROOT, "discharge")?,
    })
}

/// Checks that a document is a well-formed Vigil document of `kind`: root fields, schema
/// version, and every typed part hydrating. Used by the cloud before it commits changes an
/// appliance sent, and by the appliance for documents the cloud sends down.
pub fn validate_document(doc: &AutoCommit, kind: DocKind) -> Result<DocHeader, DocError> {
    let h = expect_kind(doc, kind)?;
    match kind {
        DocKind::Session => {
            let meta = read_session_meta(doc)?;
            if meta.id != h.id || meta.site != h.site {
                return Err(DocError::WrongKind {
                    expected: "consistent id and site",
                    found: meta.id,
                });
            }
            match doc.get(automerge::ROOT, "vitals")? {
                Some((Value::Object(ObjType::Map), _)) => {}
                _ => return Err(vitals_error("*", "no vitals map")),
            }
            read_checkin(doc)?;
            crate::care::read_care(doc)?;
        }
        DocKind::Patient => {
            let p = PatientDoc::from_automerge(doc.clone())?;
            p.record()?;
            p.infusions_done()?;
            p.risk_screens()?;
            p.screening_answers()?;
        }
        DocKind::SiteConfig => {
            hydrate_prop::<_, StoredThresholds, _, _>(doc, automerge::ROOT, "thresholds")?;
            hydrate_prop::<_, Vec<RoomConfig>, _, _>(doc, automerge::ROOT, "rooms")?;
            hydrate_prop::<_, Vec<StaffMember>, _, _>(doc, automerge::ROOT, "staff")?;
            read_infusion_limits(doc)?;
            if doc.get(automerge::ROOT, DISCHARGE_RULES_KEY)?.is_some() {
                hydrate_prop::<_, StoredDischargeRules, _, _>(
                    doc,
                    automerge::ROOT,
                    DISCHARGE_RULES_KEY,
                )?;
            }
            read_api_tokens(doc)?;
            read_revoked_certificates(doc)?;
            if doc.get(automerge::ROOT, TIME_ZONE_KEY)?.is_some() {
                hydrate_prop::<_, String, _, _>(doc, automerge::ROOT, TIME_ZONE_KEY)?;
            }
        }
        DocKind::Audit => crate::audit::validate(doc)?,
        DocKind::Ledger => crate::ledger::doc::validate(doc)?,
    }
    Ok(h)
}

fn vitals_error(channel: &str, reason: &str) -> DocError {
    DocError::Vitals {
        channel: channel.to_owned(),
        reason: reason.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Patient

/// Answers to the pre-infusion screening; `true` flags a contraindication.
#[derive(Debug, Clone, Default, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(default)]
pub struct Screening {
    /// Baseline blood pressure above 140/90 and not controlled.
    pub uncontrolled_hypertension: bool,
    /// Cardiovascular disease.
    pub cardiovascular_disease: bool,
    /// History of psychosis.
    pub psychosis_history: bool,
    /// Pregnant.
    pub pregnancy: bool,
    /// Current substance use.
    pub substance_use: bool,
    /// When answered, µs.
    pub answered_us: Option<i64>,
    /// Who asked.
    pub by: Option<String>,
}

/// The planned course of treatment.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(default)]
pub struct CoursePlan {
    /// `induction` or `maintenance`.
    pub phase: String,
    /// Infusions planned in the induction.
    pub infusions_planned: u64,
    /// Over how many weeks.
    pub weeks: u64,
    /// Infusions per week, e.g. `[3, 2, 1]`.
    pub per_week: Vec<u64>,
    /// Days between maintenance infusions once the induction is complete, the patient's own
    /// (absent in documents written before it existed: the default).
    #[autosurgeon(missing = "default_maintenance_interval_days")]
    pub maintenance_interval_days: u64,
}

fn default_maintenance_interval_days() -> u64 {
    crate::clinical::DEFAULT_MAINTENANCE_INTERVAL_DAYS
}

impl Default for CoursePlan {
    fn default() -> Self {
        CoursePlan {
            phase: "induction".into(),
            infusions_planned: 6,
            weeks: 3,
            per_week: vec![3, 2, 1],
            maintenance_interval_days: default_maintenance_interval_days(),
        }
    }
}

/// A patient document's typed content.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct PatientRecord {
    /// Patient id.
    pub id: String,
    /// Home site.
    pub site: String,
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub birth_date: String,
    /// Administrative sex as recorded.
    pub sex: String,
    /// Phone number.
    pub phone: Option<String>,
    /// Screening answers.
    pub screening: Screening,
    /// Current medications.
    pub medications: Vec<String>,
    /// Course plan.
    pub course: CoursePlan,
    /// Outcome scores over the course (PHQ-9 and others).
    pub outcome_scores: Vec<Score>,
}

const PATIENT_KEYS: [&str; 9] = [
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "phone",
    "screening",
    "medications",
    "course",
    "outcome_scores",
];

/// A patient document.
#[derive(Debug, Clone)]
pub struct PatientDoc {
    doc: AutoCommit,
}

impl PatientDoc {
    /// A new patient document.
    pub fn create(record: &PatientRecord) -> Result<PatientDoc, DocError> {
        let mut doc = AutoCommit::new();
        write_header(&mut doc, DocKind::Patient, &record.id, &record.site)?;
        doc.put_object(automerge::ROOT, INFUSIONS_DONE_KEY, ObjType::List)?;
        doc.put_object(automerge::ROOT, RISK_SCREENS_KEY, ObjType::List)?;
        doc.put_object(automerge::ROOT, SCREENING_ANSWERS_KEY, ObjType::List)?;
        let mut p = PatientDoc { doc };
        p.write(record)?;
        Ok(p)
    }

    /// Loads and checks a saved patient document.
    pub fn load(bytes: &[u8]) -> Result<PatientDoc, DocError> {
        PatientDoc::from_automerge(AutoCommit::load(bytes)?)
    }

    /// Wraps a document in memory, checking kind and schema.
    pub fn from_automerge(doc: AutoCommit) -> Result<PatientDoc, DocError> {
        expect_kind(&doc, DocKind::Patient)?;
        Ok(PatientDoc { doc })
    }

    /// The typed content.
    pub fn record(&self) -> Result<PatientRecord, DocError> {
        let d = &self.doc;
        let root = automerge::ROOT;
        Ok(PatientRecord {
            id: hydrate_prop(d, &root, "id")?,
            site: hydrate_prop(d, &root, "site")?,
            given_name: hydrate_prop(d, &root, "given_name")?,
            family_name: hydrate_prop(d, &root, "family_name")?,
            birth_date: hydrate_prop(d, &root, "birth_date")?,
            sex: hydrate_prop(d, &root, "sex")?,
            phone: hydrate_prop(d, &root, "phone")?,
            screening: hydrate_prop(d, &root, "screening")?,
            medications: hydrate_prop(d, &root, "medications")?,
            course: hydrate_prop(d, &root, "course")?,
            outcome_scores: hydrate_prop(d, &root, "outcome_scores")?,
        })
    }

    /// Changes the content; on error the document is unchanged.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut PatientRecord) -> R) -> Result<R, DocError> {
        let mut record = self.record()?;
        let out = f(&mut record);
        if let Err(e) = self.write(&record) {
            self.doc.rollback();
            return Err(e);
        }
        Ok(out)
    }

    fn write(&mut self, r: &PatientRecord) -> Result<(), DocError> {
        let d = &mut self.doc;
        let root = automerge::ROOT;
        reconcile_prop(d, &root, PATIENT_KEYS[0], &r.given_name)?;
        reconcile_prop(d, &root, PATIENT_KEYS[1], &r.family_name)?;
        reconcile_prop(d, &root, PATIENT_KEYS[2], &r.birth_date)?;
        reconcile_prop(d, &root, PATIENT_KEYS[3], &r.sex)?;
        reconcile_prop(d, &root, PATIENT_KEYS[4], &r.phone)?;
        reconcile_prop(d, &root, PATIENT_KEYS[5], &r.screening)?;
        reconcile_prop(d, &root, PATIENT_KEYS[6], &r.medications)?;
        reconcile_prop(d, &root, PATIENT_KEYS[7], &r.course)?;
        reconcile_prop(d, &root, PATIENT_KEYS[8], &r.outcome_scores)?;
        Ok(())
    }

    /// The underlying Automerge document.
    pub fn automerge(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// The patient's infusions done (completed sessions), in any room of the site, in the
    /// order recorded; empty for a document written before the list existed.
    pub fn infusions_done(&self) -> Result<Vec<InfusionDone>, DocError> {
        if self.doc.get(automerge::ROOT, INFUSIONS_DONE_KEY)?.is_none() {
            return Ok(Vec::new());
        }
        Ok(hydrate_prop(
            &self.doc,
            automerge::ROOT,
            INFUSIONS_DONE_KEY,
        )?)
    }

    /// Records an infusion done; recording the same session again changes nothing. The list
    /// is keyed by session, so two rooms recording at once merge.
    pub fn record_infusion_done(&mut self, done: &InfusionDone) -> Result<(), DocError> {
        let mut all = self.infusions_done()?;
        if all.iter().any(|d| d.session_id == done.session_id) {
            return Ok(());
        }
        all.push(done.clone());
        if let Err(e) = reconcile_prop(&mut self.doc, automerge::ROOT, INFUSIONS_DONE_KEY, &all) {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(())
    }
}

impl PatientDoc {
    /// The patient's suicide-risk screens, one per check-in that asked, oldest first.
    pub fn risk_screens(&self) -> Result<Vec<crate::care::RiskScreenEntry>, DocError> {
        if self.doc.get(automerge::ROOT, RISK_SCREENS_KEY)?.is_none() {
            return Ok(Vec::new());
        }
        Ok(hydrate_prop(&self.doc, automerge::ROOT, RISK_SCREENS_KEY)?)
    }

    /// Adds or replaces (by id) a risk screen: a new check-in's answers, or a clinician's
    /// assessment of one. The list is keyed by id, so two rooms writing at once merge.
    pub fn put_risk_screen(
        &mut self,
        screen: &crate::care::RiskScreenEntry,
    ) -> Result<(), DocError> {
        let mut all = self.risk_screens()?;
        match all.iter_mut().find(|s| s.id == screen.id) {
            Some(s) => *s = screen.clone(),
            None => all.push(screen.clone()),
        }
        if let Err(e) = reconcile_prop(&mut self.doc, automerge::ROOT, RISK_SCREENS_KEY, &all) {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(())
    }
}

impl PatientDoc {
    /// Every screening answer the patient has given, each stamped with the check-in that asked
    /// it (the latest per flag counts: `care::latest_answers`).
    pub fn screening_answers(&self) -> Result<Vec<crate::care::ScreeningEntry>, DocError> {
        if self
            .doc
            .get(automerge::ROOT, SCREENING_ANSWERS_KEY)?
            .is_none()
        {
            return Ok(Vec::new());
        }
        Ok(hydrate_prop(
            &self.doc,
            automerge::ROOT,
            SCREENING_ANSWERS_KEY,
        )?)
    }

    /// Adds a check-in's answers. The list is keyed by id, so two rooms adding at once merge.
    pub fn add_screening_answers(
        &mut self,
        answers: &[crate::care::ScreeningEntry],
    ) -> Result<(), DocError> {
        let mut all = self.screening_answers()?;
        all.extend(answers.iter().cloned());
        if let Err(e) = reconcile_prop(&mut self.doc, automerge::ROOT, SCREENING_ANSWERS_KEY, &all)
        {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(())
    }
}

/// Root key of a patient's per-flag screening answers (absent in documents written before it
/// existed).
pub const SCREENING_ANSWERS_KEY: &str = "screening_answers";

/// Root key of a patient's suicide-risk screens (absent in documents written before it
/// existed).
pub const RISK_SCREENS_KEY: &str = "risk_screens";

/// Root key of a patient's infusions done (absent in documents written before it existed).
pub const INFUSIONS_DONE_KEY: &str = "infusions_done";

/// One infusion done: a session of the patient that completed (`clinical::infusion_done`),
/// recorded in the patient's document by the room that ran it, so every room of the site and
/// the cloud count the course the same way.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct InfusionDone {
    /// The session.
    #[key]
    pub session_id: String,
    /// When the infusion started, µs.
    pub started_us: i64,
    /// The room.
    pub room: String,
}

// ---------------------------------------------------------------------------------------------
// Site config

/// A monitor assigned to a room.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct MonitorAssignment {
    /// BLE address or advertised name.
    pub address_or_name: String,
    /// What it measures, e.g. `heart_rate`, `blood_pressure`, `pulse_oximeter`.
    pub kind: String,
}

/// A room of the site.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct RoomConfig {
    /// Room id.
    #[key]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Assigned monitors.
    pub monitors: Vec<MonitorAssignment>,
}

/// A staff member who may sign in at the room screen.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct StaffMember {
    /// Staff id.
    #[key]
    pub id: String,
    /// Display name.
    pub name: String,
    /// `nurse`, `clinician`, `front_desk`.
    pub role: String,
    /// Hash of the person's PIN (never the PIN).
    pub pin_hash: String,
}

/// Advisory thresholds as stored in the site config (mirrors [`Thresholds`]).
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
struct StoredThresholds {
    bp_systolic_high: i64,
    bp_diastolic_high: i64,
    bp_systolic_immediate: i64,
    bp_diastolic_immediate: i64,
    bp_consecutive_readings: u64,
    hr_high_bpm: i64,
    hr_high_duration_s: u64,
    spo2_low_pct: i64,
    spo2_low_duration_s: u64,
    no_data_s: u64,
    // Added after the first release: absent in older documents, which then use the defaults.
    #[autosurgeon(missing = "Option::default")]
    bp_systolic_low: Option<i64>,
    #[autosurgeon(missing = "Option::default")]
    bp_rise_pct: Option<u64>,
    #[autosurgeon(missing = "Option::default")]
    hr_low_bpm: Option<i64>,
    #[autosurgeon(missing = "Option::default")]
    hr_low_duration_s: Option<u64>,
}

impl From<&Thresholds> for StoredThresholds {
    fn from(t: &Thresholds) -> Self {
        StoredThresholds {
            bp_systolic_high: t.bp_systolic_high.into(),
            bp_diastolic_high: t.bp_diastolic_high.into(),
            bp_systolic_immediate: t.bp_systolic_immediate.into(),
            bp_diastolic_immediate: t.bp_diastolic_immediate.into(),
            bp_consecutive_readings: t.bp_consecutive_readings.into(),
            hr_high_bpm: t.hr_high_bpm.into(),
            hr_high_duration_s: t.hr_high_duration_s.into(),
            spo2_low_pct: t.spo2_low_pct.into(),
            spo2_low_duration_s: t.spo2_low_duration_s.into(),
            no_data_s: t.no_data_s.into(),
            bp_systolic_low: Some(t.bp_systolic_low.into()),
            bp_rise_pct: Some(t.bp_rise_pct.into()),
            hr_low_bpm: Some(t.hr_low_bpm.into()),
            hr_low_duration_s: Some(t.hr_low_duration_s.into()),
        }
    }
}

impl StoredThresholds {
    /// Out-of-range stored numbers fall back to the default for that field, so a document
    /// edited by a newer or broken writer still yields usable thresholds.
    fn to_thresholds(&self) -> Thresholds {
        let d = Thresholds::default();
        let i = |v: i64, dflt: i32| i32::try_from(v).unwrap_or(dflt);
        let u = |v: u64, dflt: u32| u32::try_from(v).unwrap_or(dflt);
        Thresholds {
            bp_systolic_high: i(self.bp_systolic_high, d.bp_systolic_high),
            bp_diastolic_high: i(self.bp_diastolic_high, d.bp_diastolic_high),
            bp_systolic_immediate: i(self.bp_systolic_immediate, d.bp_systolic_immediate),
            bp_diastolic_immediate: i(self.bp_diastolic_immediate, d.bp_diastolic_immediate),
            bp_consecutive_readings: u(self.bp_consecutive_readings, d.bp_consecutive_readings),
            hr_high_bpm: i(self.hr_high_bpm, d.hr_high_bpm),
            hr_high_duration_s: u(self.hr_high_duration_s, d.hr_high_duration_s),
            spo2_low_pct: i(self.spo2_low_pct, d.spo2_low_pct),
            spo2_low_duration_s: u(self.spo2_low_duration_s, d.spo2_low_duration_s),
            no_data_s: u(self.no_data_s, d.no_data_s),
            bp_systolic_low: self
                .bp_systolic_low
                .map_or(d.bp_systolic_low, |v| i(v, d.bp_systolic_low)),
            bp_rise_pct: self
                .bp_rise_pct
                .map_or(d.bp_rise_pct, |v| u(v, d.bp_rise_pct)),
            hr_low_bpm: self.hr_low_bpm.map_or(d.hr_low_bpm, |v| i(v, d.hr_low_bpm)),
            hr_low_duration_s: self
                .hr_low_duration_s
                .map_or(d.hr_low_duration_s, |v| u(v, d.hr_low_duration_s)),
        }
    }
}

/// A site configuration's typed content.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// Site id.
    pub site: String,
    /// Display name, e.g. `Austin, TX`.
    pub name: String,
    /// Region, for regional managers' scope.
    pub region: String,
    /// Rooms.
    pub rooms: Vec<RoomConfig>,
    /// Advisory thresholds chosen by the site's medical director.
    pub thresholds: Thresholds,
    /// Staff who may sign in.
    pub staff: Vec<StaffMember>,
}

/// A site config document.
#[derive(Debug, Clone)]
pub struct SiteConfigDoc {
    doc: AutoCommit,
}

/// Root key of a site's infusion limits (absent: the defaults of
/// [`crate::clinical::InfusionLimits`]).
pub const INFUSION_LIMITS_KEY: &str = "infusion_limits";

/// Infusion limits as stored in the site config (mirrors [`crate::clinical::InfusionLimits`]).
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
struct StoredInfusionLimits {
    max_dose_mg_per_kg: f64,
    max_total_mg: f64,
    max_rate_mg_per_h: f64,
    min_minutes: u64,
    max_minutes: u64,
}

fn read_infusion_limits(
    doc: &AutoCommit,
) -> Result<Option<crate::clinical::InfusionLimits>, DocError> {
    if doc.get(automerge::ROOT, INFUSION_LIMITS_KEY)?.is_none() {
        return Ok(None);
    }
    let s: StoredInfusionLimits = hydrate_prop(doc, automerge::ROOT, INFUSION_LIMITS_KEY)?;
    Ok(Some(crate::clinical::InfusionLimits {
        max_dose_mg_per_kg: s.max_dose_mg_per_kg,
        max_total_mg: s.max_total_mg,
        max_rate_mg_per_h: s.max_rate_mg_per_h,
        min_minutes: s.min_minutes,
        max_minutes: s.max_minutes,
    }))
}

/// Root key of a site's appliance API tokens (absent: none).
pub const API_TOKENS_KEY: &str = "api_tokens";

/// An integration token for the appliances' JSON API, issued by the cloud for one site. Only
/// a hash is stored: the document travels to every room of the site, and whoever reads it must
/// not learn a usable token. A token is never deleted, only revoked, so every room learns of
/// the revocation by the same merge that brought the token.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct SiteApiToken {
    /// What it is for (`ehr-bridge`); unique within the site, shown in the appliance's audit log.
    #[key]
    pub label: String,
    /// SHA-256 of the token, lowercase hex. Tokens are 256 random bits, so a fast hash is
    /// enough: there is nothing to brute-force.
    pub sha256: String,
    /// Issued, µs.
    pub created_us: i64,
    /// No longer accepted from this time, µs.
    pub expires_us: i64,
    /// Revoked by the cloud.
    pub revoked: bool,
}

fn read_api_tokens(doc: &AutoCommit) -> Result<Vec<SiteApiToken>, DocError> {
    if doc.get(automerge::ROOT, API_TOKENS_KEY)?.is_none() {
        return Ok(Vec::new());
    }
    Ok(hydrate_prop(doc, automerge::ROOT, API_TOKENS_KEY)?)
}

impl SiteConfigDoc {
    /// The site's appliance API tokens, revoked ones included.
    pub fn api_tokens(&self) -> Result<Vec<SiteApiToken>, DocError> {
        read_api_tokens(&self.doc)
    }

    /// Replaces the site's token list; on error the document is unchanged.
    pub fn set_api_tokens(&mut self, tokens: &[SiteApiToken]) -> Result<(), DocError> {
        if let Err(e) = reconcile_prop(&mut self.doc, automerge::ROOT, API_TOKENS_KEY, tokens) {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(())
    }
}

/// Root key of the clinic's revoked certificates (absent: none).
pub const REVOKED_CERTIFICATES_KEY: &str = "revoked_certificates";

/// A certificate serial as the site configuration keys it: lowercase hex of its big-endian
/// bytes without leading zero bytes (`00` for zero), so one number has one spelling.
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    if start == bytes.len() {
        return "00".into();
    }
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

fn read_revoked_certificates(doc: &AutoCommit) -> Result<BTreeMap<String, i64>, DocError> {
    if doc
        .get(automerge::ROOT, REVOKED_CERTIFICATES_KEY)?
        .is_none()
    {
        return Ok(BTreeMap::new());
    }
    Ok(hydrate_prop(
        doc,
        automerge::ROOT,
        REVOKED_CERTIFICATES_KEY,
    )?)
}

impl SiteConfigDoc {
    /// The clinic's revoked certificates, by serial ([`serial_hex`]), each with when it was
    /// revoked (µs). The cloud writes them so that appliances refuse a revoked appliance as
    /// a peer, as the cloud itself does.
    pub fn revoked_certificates(&self) -> Result<BTreeMap<String, i64>, DocError> {
        read_revoked_certificates(&self.doc)
    }

    /// Adds revocations to the list, keeping every one already there (a revocation is never
    /// undone); `true` if any was new. On error the document is unchanged.
    pub fn add_revoked_certificates(
        &mut self,
        revoked: &BTreeMap<String, i64>,
    ) -> Result<bool, DocError> {
        let mut all = self.revoked_certificates()?;
        let before = all.len();
        for (serial, at_us) in revoked {
            all.entry(serial.clone()).or_insert(*at_us);
        }
        if all.len() == before {
            return Ok(false);
        }
        if let Err(e) = reconcile_prop(
            &mut self.doc,
            automerge::ROOT,
            REVOKED_CERTIFICATES_KEY,
            &all,
        ) {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(true)
    }
}

impl SiteConfigDoc {
    /// The site's infusion limits, if its medical director set any.
    pub fn infusion_limits(&self) -> Result<Option<crate::clinical::InfusionLimits>, DocError> {
        read_infusion_limits(&self.doc)
    }

    /// Sets the site's infusion limits; on error the document is unchanged.
    pub fn set_infusion_limits(
        &mut self,
        l: &crate::clinical::InfusionLimits,
    ) -> Result<(), DocError> {
        let stored = StoredInfusionLimits {
            max_dose_mg_per_kg: l.max_dose_mg_per_kg,
            max_total_mg: l.max_total_mg,
            max_rate_mg_per_h: l.max_rate_mg_per_h,
            min_minutes: l.min_minutes,
            max_minutes: l.max_minutes,
        };
        if let Err(e) = reconcile_prop(&mut self.doc, automerge::ROOT, INFUSION_LIMITS_KEY, stored)
        {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(())
    }
}

/// Root key of a site's discharge rules (absent: the defaults of
/// [`crate::clinical::discharge::DischargeRules`]).
pub const DISCHARGE_RULES_KEY: &str = "discharge_rules";

/// Discharge rules as stored in the site config (mirrors
/// [`crate::clinical::discharge::DischargeRules`]).
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
struct StoredDischargeRules {
    min_observation_min: u32,
    max_cadss: i64,
    bp_systolic_below: i64,
    bp_diastolic_below: i64,
    bp_within_pct_of_baseline: i64,
    bp_max_age_min: u32,
}

impl SiteConfigDoc {
    /// The site's discharge rules, if its medical director set any.
    pub fn discharge_rules(
        &self,
    ) -> Result<Option<crate::clinical::discharge::DischargeRules>, DocError> {
        if self
            .doc
            .get(automerge::ROOT, DISCHARGE_RULES_KEY)?
            .is_none()
        {
            return Ok(None);
        }
        let s: StoredDischargeRules =
            hydrate_prop(&self.doc, automerge::ROOT, DISCHARGE_RULES_KEY)?;
        Ok(Some(crate::clinical::discharge::DischargeRules {
            min_observation_min: s.min_observation_min,
            max_cadss: s.max_cadss,
            bp_systolic_below: s.bp_systolic_below,
            bp_diastolic_below: s.bp_diastolic_below,
            bp_within_pct_of_baseline: s.bp_within_pct_of_baseline,
            bp_max_age_min: s.bp_max_age_min,
        }))
    }

    /// Sets the site's discharge rules; on error the document is unchanged.
    pub fn set_discharge_rules(
        &mut self,
        r: &crate::clinical::discharge::DischargeRules,
    ) -> Result<(), DocError> {
        let stored = StoredDischargeRules {
            min_observation_min: r.min_observation_min,
            max_cadss: r.max_cadss,
            bp_systolic_below: r.bp_systolic_below,
            bp_diastolic_below: r.bp_diastolic_below,
            bp_within_pct_of_baseline: r.bp_within_pct_of_baseline,
            bp_max_age_min: r.bp_max_age_min,
        };
        if let Err(e) = reconcile_prop(&mut self.doc, automerge::ROOT, DISCHARGE_RULES_KEY, stored)
        {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(())
    }
}

/// Root key of a site's IANA time zone name (absent: [`crate::zone::DEFAULT_ZONE`]).
pub const TIME_ZONE_KEY: &str = "time_zone";

impl SiteConfigDoc {
    /// The site's time zone name as configured, if any.
    pub fn time_zone_name(&self) -> Result<Option<String>, DocError> {
        if self.doc.get(automerge::ROOT, TIME_ZONE_KEY)?.is_none() {
            return Ok(None);
        }
        Ok(Some(hydrate_prop(
            &self.doc,
            automerge::ROOT,
            TIME_ZONE_KEY,
        )?))
    }

    /// The site's time zone: UTC when none is configured or the name is unknown here (a
    /// newer zone database at the cloud must not stop the appliance's pages).
    pub fn zone(&self) -> crate::zone::SiteZone {
        let name = self.time_zone_name().ok().flatten();
        crate::zone::SiteZone::parse_or_utc(name.as_deref())
    }

    /// Sets the site's time zone (an IANA name, checked); on error the document is unchanged.
    pub fn set_time_zone(&mut self, zone: &crate::zone::SiteZone) -> Result<(), DocError> {
        if self.time_zone_name()?.as_deref() == Some(zone.name()) {
            return Ok(());
        }
        if let Err(e) = reconcile_prop(&mut self.doc, automerge::ROOT, TIME_ZONE_KEY, zone.name()) {
            self.doc.rollback();
            return Err(e.into());
        }
        Ok(())
    }
}

impl SiteConfigDoc {
    /// A new site config document.
    pub fn create(config: &SiteConfig) -> Result<SiteConfigDoc, DocError> {
        let mut doc = AutoCommit::new();
        write_header(&mut doc, DocKind::SiteConfig, &config.site, &config.site)?;
        let mut s = SiteConfigDoc { doc };
        s.write(config)?;
        Ok(s)
    }

    /// Loads and checks a saved site config.
    pub fn load(bytes: &[u8]) -> Result<SiteConfigDoc, DocError> {
        SiteConfigDoc::from_automerge(AutoCommit::load(bytes)?)
    }

    /// Wraps a loaded document after checking its kind (no save and reload).
    pub fn from_automerge(doc: AutoCommit) -> Result<SiteConfigDoc, DocError> {
        expect_kind(&doc, DocKind::SiteConfig)?;
        Ok(SiteConfigDoc { doc })
    }

    /// The typed content.
    pub fn config(&self) -> Result<SiteConfig, DocError> {
        let d = &self.doc;
        let root = automerge::ROOT;
        let stored: StoredThresholds = hydrate_prop(d, &root, "thresholds")?;
        Ok(SiteConfig {
            site: hydrate_prop(d, &root, "site")?,
            name: hydrate_prop(d, &root, "name")?,
            region: hydrate_prop(d, &root, "region")?,
            rooms: hydrate_prop(d, &root, "rooms")?,
            thresholds: stored.to_thresholds(),
            staff: hydrate_prop(d, &root, "staff")?,
        })
    }

    /// Changes the content; on error the document is unchanged.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut SiteConfig) -> R) -> Result<R, DocError> {
        let mut c = self.config()?;
        let out = f(&mut c);
        if let Err(e) = self.write(&c) {
            self.doc.rollback();
            return Err(e);
        }
        Ok(out)
    }

    fn write(&mut self, c: &SiteConfig) -> Result<(), DocError> {
        let d = &mut self.doc;
        let root = automerge::ROOT;
        reconcile_prop(d, &root, "name", &c.name)?;
        reconcile_prop(d, &root, "region", &c.region)?;
        reconcile_prop(d, &root, "rooms", &c.rooms)?;
        reconcile_prop(
            d,
            &root,
            "thresholds",
            StoredThresholds::from(&c.thresholds),
        )?;
        reconcile_prop(d, &root, "staff", &c.staff)?;
        Ok(())
    }

    /// The underlying Automerge document.
    pub fn automerge(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vitals::Sample;

    fn meta() -> SessionMeta {
        SessionMeta {
            created_us: 1_000,
            patient_id: "p-1".into(),
            dose_events: vec![DoseEvent {
                by: "nurse-a".into(),
                ..crate::fixtures::dose("d1", 2_000, DoseAction::Start, Some(52.5))
            }],
            scores: vec![Score {
                id: "sc1".into(),
                at_us: 1_500,
                instrument: "phq9".into(),
                phase: "pre".into(),
                value: 18,
                by: "nurse-a".into(),
            }],
            ..crate::fixtures::session_meta("s-1", "austin", "1", 2_000)
        }
    }

    fn patient() -> PatientRecord {
        PatientRecord {
            id: "p-1".into(),
            site: "austin".into(),
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            birth_date: "1980-12-10".into(),
            sex: "female".into(),
            phone: None,
            screening: Screening::default(),
            medications: vec!["sertraline".into()],
            course: CoursePlan::default(),
            outcome_scores: vec![],
        }
    }

    fn hr_chunk(start_us: i64, n: usize) -> Vec<u8> {
        let samples: Vec<Sample> = (0..n)
            .map(|i| Sample::scalar(start_us + i as i64 * 1_000_000, 70 + (i % 5) as i32))
            .collect();
        Chunk {
            channel: Channel::Hr,
            samples,
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn session_round_trips_through_save_and_load() {
        let mut s = SessionDoc::create(&meta()).unwrap();
        s.append_chunk(Channel::Hr, hr_chunk(2_000, 10)).unwrap();
        s.append_chunk(Channel::Hr, hr_chunk(10_002_000, 10))
            .unwrap();
        s.append_note("calm, ").unwrap();
        s.append_note("talkative").unwrap();
        let bytes = s.automerge().save();

        let loaded = SessionDoc::load(&bytes).unwrap();
        assert_eq!(loaded.meta().unwrap(), meta());
        assert_eq!(loaded.notes().unwrap(), "calm, talkative");
        let chunks: Vec<Chunk> = loaded
            .chunks(Channel::Hr)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].samples[0].t_us, 10_002_000);
        assert_eq!(loaded.chunk_count(Channel::Spo2), 0);
        let h = header(loaded.automerge_ref()).unwrap();
        assert_eq!(
            (h.kind, h.schema, h.id.as_str(), h.site.as_str()),
            (DocKind::Session, 1, "s-1", "austin")
        );
    }

    #[test]
    fn update_meta_appends_keyed_events() {
        let mut s = SessionDoc::create(&meta()).unwrap();
        s.update_meta(|m| {
            m.observations.push(Observation {
                id: "o1".into(),
                at_us: 5,
                effect: "nausea".into(),
                severity: "mild".into(),
                by: "n".into(),
            })
        })
        .unwrap();
        s.update_meta(|m| m.state = SessionState::Completed)
            .unwrap();
        let m = s.meta().unwrap();
        assert_eq!(m.observations.len(), 1);
        assert_eq!(m.state, SessionState::Completed);
    }

    #[test]
    fn corrupt_chunk_reports_an_error_while_others_read() {
        let mut s = SessionDoc::create(&meta()).unwrap();
        s.append_chunk(Channel::Hr, hr_chunk(0, 5)).unwrap();
        // Bypass append_chunk's check to plant a damaged chunk, as a buggy or hostile peer could.
        let good = hr_chunk(5_000_000, 5);
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad.truncate(last);
        let list = s.vitals[&Channel::Hr].clone();
        s.automerge()
            .insert(&list, 1, ScalarValue::Bytes(bad))
            .unwrap();
        s.automerge()
            .insert(&list, 2, ScalarValue::Bytes(good))
            .unwrap();
        s.automerge().insert(&list, 3, "not bytes").unwrap();
        let decoded = s.chunks(Channel::Hr);
        assert_eq!(decoded.len(), 4);
        assert!(decoded[0].is_ok());
        assert!(decoded[1].is_err());
        assert!(decoded[2].is_ok());
        assert_eq!(decoded[3], Err(ChunkReadError::NotBytes));
    }

    #[test]
    fn append_chunk_refuses_a_chunk_of_another_channel() {
        let mut s = SessionDoc::create(&meta()).unwrap();
        assert!(s.append_chunk(Channel::Spo2, hr_chunk(0, 3)).is_err());
        assert!(s.append_chunk(Channel::Hr, vec![0xff, 1, 2]).is_err());
        assert_eq!(s.chunk_count(Channel::Spo2), 0);
        assert_eq!(s.chunk_count(Channel::Hr), 0);
    }

    #[test]
    fn loading_checks_kind_and_schema() {
        let mut p = PatientDoc::create(&patient()).unwrap();
        let bytes = p.automerge().save();
        assert!(matches!(
            SessionDoc::load(&bytes),
            Err(DocError::WrongKind { .. })
        ));

        let mut future = SessionDoc::create(&meta()).unwrap();
        future
            .automerge()
            .put(automerge::ROOT, "schema", 99_u64)
            .unwrap();
        let bytes = future.automerge().save();
        assert!(matches!(
            SessionDoc::load(&bytes),
            Err(DocError::UnknownSchema(Some(99)))
        ));

        assert!(matches!(
            SessionDoc::load(b"garbage"),
            Err(DocError::Load(_))
        ));
    }

    #[test]
    fn a_course_plan_written_before_the_maintenance_interval_reads_the_default() {
        let mut p = PatientDoc::create(&patient()).unwrap();
        let (_, course) = p
            .automerge()
            .get(automerge::ROOT, PATIENT_KEYS[7])
            .unwrap()
            .unwrap();
        p.automerge()
            .delete(&course, "maintenance_interval_days")
            .unwrap();
        let old = PatientDoc::load(&p.automerge().save()).unwrap();
        assert_eq!(
            old.record().unwrap().course.maintenance_interval_days,
            crate::clinical::DEFAULT_MAINTENANCE_INTERVAL_DAYS
        );
    }

    #[test]
    fn concurrent_patient_edits_merge() {
        let mut a = PatientDoc::create(&patient()).unwrap();
        let mut b = PatientDoc::load(&a.automerge().save()).unwrap();
        b.automerge().set_actor(automerge::ActorId::random());

        a.update(|r| r.phone = Some("512-555-0100".into())).unwrap();
        a.update(|r| r.medications.push("bupropion".into()))
            .unwrap();
        b.update(|r| r.screening.substance_use = true).unwrap();
        b.update(|r| r.family_name = "King".into()).unwrap();

        let mut b_doc = b.automerge().clone();
        a.automerge().merge(&mut b_doc).unwrap();
        let mut a_doc = a.automerge().clone();
        b.automerge().merge(&mut a_doc).unwrap();

        let ra = a.record().unwrap();
        assert_eq!(ra, b.record().unwrap());
        assert_eq!(ra.phone.as_deref(), Some("512-555-0100"));
        assert_eq!(
            ra.medications,
            vec!["sertraline".to_string(), "bupropion".to_string()]
        );
        assert!(ra.screening.substance_use);
        assert_eq!(ra.family_name, "King");
    }

    #[test]
    fn infusions_done_in_two_rooms_merge_once_each() {
        let done = |id: &str, room: &str, at| InfusionDone {
            session_id: id.into(),
            started_us: at,
            room: room.into(),
        };
        let mut a = PatientDoc::create(&patient()).unwrap();
        assert_eq!(a.infusions_done().unwrap(), vec![]);
        let mut b = PatientDoc::load(&a.automerge().save()).unwrap();
        b.automerge().set_actor(automerge::ActorId::random());
        a.record_infusion_done(&done("s1", "1", 10)).unwrap();
        a.record_infusion_done(&done("s1", "1", 10)).unwrap();
        b.record_infusion_done(&done("s2", "2", 20)).unwrap();
        let mut b_doc = b.automerge().clone();
        a.automerge().merge(&mut b_doc).unwrap();
        let mut ids: Vec<String> = a
            .infusions_done()
            .unwrap()
            .into_iter()
            .map(|d| d.session_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["s1", "s2"]);
        validate_document(
            &AutoCommit::load(&a.automerge().save()).unwrap(),
            DocKind::Patient,
        )
        .unwrap();
        // A document written before the list existed reads as none done.
        a.automerge()
            .delete(automerge::ROOT, INFUSIONS_DONE_KEY)
            .unwrap();
        assert_eq!(a.infusions_done().unwrap(), vec![]);
    }

    #[test]
    fn concurrent_session_events_and_notes_merge() {
        let mut a = SessionDoc::create(&meta()).unwrap();
        let mut b = SessionDoc::load(&a.automerge().save()).unwrap();
        b.automerge().set_actor(automerge::ActorId::random());
        a.update_meta(|m| {
            m.observations.push(Observation {
                id: "oa".into(),
                at_us: 10,
                effect: "nausea".into(),
                severity: "mild".into(),
                by: "a".into(),
            })
        })
        .unwrap();
        b.update_meta(|m| {
            m.observations.push(Observation {
                id: "ob".into(),
                at_us: 11,
                effect: "dissociation".into(),
                severity: "moderate".into(),
                by: "b".into(),
            })
        })
        .unwrap();
        a.append_note("from a. ").unwrap();
        b.append_note("from b. ").unwrap();
        a.append_chunk(Channel::Hr, hr_chunk(0, 3)).unwrap();
        b.append_chunk(Channel::Spo2, {
            let s = vec![Sample::scalar(0, 98), Sample::scalar(1_000_000, 97)];
            Chunk {
                channel: Channel::Spo2,
                samples: s,
            }
            .encode()
            .unwrap()
        })
        .unwrap();
        let mut bd = b.automerge().clone();
        a.automerge().merge(&mut bd).unwrap();
        let merged = SessionDoc::from_automerge(a.automerge().clone()).unwrap();
        let m = merged.meta().unwrap();
        let mut ids: Vec<_> = m.observations.iter().map(|o| o.id.clone()).collect();
        ids.sort();
        assert_eq!(ids, vec!["oa", "ob"]);
        let notes = merged.notes().unwrap();
        assert!(
            notes.contains("from a. ") && notes.contains("from b. "),
            "{notes}"
        );
        assert_eq!(merged.chunk_count(Channel::Hr), 1);
        assert_eq!(merged.chunk_count(Channel::Spo2), 1);
    }

    #[test]
    fn checkin_round_trips_and_is_optional() {
        let mut s = SessionDoc::create(&meta()).unwrap();
        assert_eq!(
            s.checkin().unwrap(),
            None,
            "absent in a session without one"
        );
        validate_document(s.automerge_ref(), DocKind::Session).unwrap();
        let c = CheckIn {
            at_us: 1_900,
            by: "nurse-a".into(),
            baseline_systolic: 150,
            baseline_diastolic: 85,
            baseline_hr: Some(72),
            baseline_spo2: None,
            flags: vec!["uncontrolled_hypertension".into()],
            override_reason: Some("white-coat; home readings 125/80".into()),
            override_by: Some("dr-b".into()),
            concentration_mg_per_ml: 0.5,
            total_mg: 35.0,
            rate_mg_per_h: 52.5,
            rate_ml_per_h: 105.0,
            escort_arranged: true,
            consent: true,
            nothing_by_mouth: true,
        };
        s.set_checkin(&c).unwrap();
        let loaded = SessionDoc::load(&s.automerge().save()).unwrap();
        assert_eq!(loaded.checkin().unwrap(), Some(c));
        assert_eq!(loaded.meta().unwrap(), meta());
        validate_document(loaded.automerge_ref(), DocKind::Session).unwrap();
        // A malformed record is refused by validation.
        let mut bad = SessionDoc::create(&meta()).unwrap();
        bad.automerge()
            .put(automerge::ROOT, CHECKIN_KEY, "not a map")
            .unwrap();
        assert!(validate_document(bad.automerge_ref(), DocKind::Session).is_err());
    }

    #[test]
    fn site_config_round_trips_thresholds() {
        let t = Thresholds {
            bp_systolic_high: 170,
            ..Thresholds::default()
        };
        let cfg = SiteConfig {
            site: "florida".into(),
            name: "Florida".into(),
            region: "southeast".into(),
            rooms: vec![RoomConfig {
                id: "1".into(),
                name: "Room 1".into(),
                monitors: vec![],
            }],
            thresholds: t,
            staff: vec![],
        };
        let mut d = SiteConfigDoc::create(&cfg).unwrap();
        let loaded = SiteConfigDoc::load(&d.automerge().save()).unwrap();
        assert_eq!(loaded.config().unwrap(), cfg);
        // A configuration written before the low-pressure, rise and bradycardia thresholds
        // existed loads with their defaults.
        let mut old = SiteConfigDoc::load(&d.automerge().save()).unwrap();
        let (_, stored) = old
            .automerge()
            .get(automerge::ROOT, "thresholds")
            .unwrap()
            .unwrap();
        for key in [
            "bp_systolic_low",
            "bp_rise_pct",
            "hr_low_bpm",
            "hr_low_duration_s",
        ] {
            old.automerge().delete(&stored, key).unwrap();
        }
        let old = SiteConfigDoc::load(&old.automerge().save()).unwrap();
        assert_eq!(old.config().unwrap().thresholds, cfg.thresholds);
        // Infusion limits are optional and round-trip when set.
        assert_eq!(loaded.infusion_limits().unwrap(), None);
        let limits = crate::clinical::InfusionLimits {
            max_dose_mg_per_kg: 0.75,
            ..Default::default()
        };
        d.set_infusion_limits(&limits).unwrap();
        let loaded = SiteConfigDoc::load(&d.automerge().save()).unwrap();
        assert_eq!(loaded.infusion_limits().unwrap(), Some(limits));
        // So are the discharge rules.
        assert_eq!(loaded.discharge_rules().unwrap(), None);
        let rules = crate::clinical::discharge::DischargeRules {
            min_observation_min: 60,
            max_cadss: 2,
            ..Default::default()
        };
        d.set_discharge_rules(&rules).unwrap();
        let loaded = SiteConfigDoc::load(&d.automerge().save()).unwrap();
        assert_eq!(loaded.discharge_rules().unwrap(), Some(rules));
        validate_document(
            &AutoCommit::load(&d.automerge().save()).unwrap(),
            DocKind::SiteConfig,
        )
        .unwrap();
        // API tokens are optional too; a revocation merges into a room's copy.
        assert!(loaded.api_tokens().unwrap().is_empty());
        let token = SiteApiToken {
            label: "ehr".into(),
            sha256: "ab".repeat(32),
            created_us: 1,
            expires_us: 2,
            revoked: false,
        };
        d.set_api_tokens(std::slice::from_ref(&token)).unwrap();
        let mut room = SiteConfigDoc::load(&d.automerge().save()).unwrap();
        d.set_api_tokens(&[SiteApiToken {
            revoked: true,
            ..token.clone()
        }])
        .unwrap();
        room.automerge().merge(d.automerge()).unwrap();
        let tokens = room.api_tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert!(tokens[0].revoked);
        // Revoked certificates: added, never removed, merged into a room's copy.
        assert!(room.revoked_certificates().unwrap().is_empty());
        let first = BTreeMap::from([("0a1b".to_owned(), 5)]);
        assert!(d.add_revoked_certificates(&first).unwrap());
        assert!(!d.add_revoked_certificates(&first).unwrap(), "nothing new");
        let later = BTreeMap::from([("0a1b".to_owned(), 9), ("ff".to_owned(), 7)]);
        assert!(d.add_revoked_certificates(&later).unwrap());
        room.automerge().merge(d.automerge()).unwrap();
        assert_eq!(
            room.revoked_certificates().unwrap(),
            BTreeMap::from([("0a1b".to_owned(), 5), ("ff".to_owned(), 7)]),
            "the first revocation time stays"
        );
        validate_document(
            &AutoCommit::load(&room.automerge().save()).unwrap(),
            DocKind::SiteConfig,
        )
        .unwrap();
    }

    #[test]
    fn serials_have_one_spelling() {
        assert_eq!(serial_hex(&[0, 0, 0x0a, 0xff]), "0aff");
        assert_eq!(serial_hex(&[0x7f, 0x01]), "7f01");
        assert_eq!(serial_hex(&[0, 0]), "00");
        assert_eq!(serial_hex(&[]), "00");
    }

    #[test]
    fn a_sites_time_zone_travels_in_its_configuration() {
        let cfg = SiteConfig {
            site: "austin".into(),
            name: "Austin, TX".into(),
            region: "south".into(),
            rooms: vec![],
            thresholds: Thresholds::default(),
            staff: vec![],
        };
        let mut cloud = SiteConfigDoc::create(&cfg).unwrap();
        // A site configured before zones existed reads as UTC.
        assert_eq!(cloud.time_zone_name().unwrap(), None);
        assert_eq!(cloud.zone().name(), "UTC");
        let mut room = SiteConfigDoc::load(&cloud.automerge().save()).unwrap();
        let chicago = crate::zone::SiteZone::parse("America/Chicago").unwrap();
        cloud.set_time_zone(&chicago).unwrap();
        room.automerge().merge(cloud.automerge()).unwrap();
        assert_eq!(room.zone(), chicago);
        assert_eq!(room.config().unwrap(), cfg);
        // Setting the same zone again writes nothing.
        let heads = cloud.automerge().get_heads();
        cloud.set_time_zone(&chicago).unwrap();
        assert_eq!(cloud.automerge().get_heads(), heads);
        // A name this build does not know reads as UTC rather than failing the page.
        room.automerge()
            .put(automerge::ROOT, TIME_ZONE_KEY, "Mars/Olympus")
            .unwrap();
        assert_eq!(room.zone().name(), "UTC");
        validate_document(
            &AutoCommit::load(&room.automerge().save()).unwrap(),
            DocKind::SiteConfig,
        )
        .unwrap();
        // Anything but a string there is a malformed document.
        room.automerge()
            .put_object(automerge::ROOT, TIME_ZONE_KEY, automerge::ObjType::Map)
            .unwrap();
        assert!(
            validate_document(
                &AutoCommit::load(&room.automerge().save()).unwrap(),
                DocKind::SiteConfig,
            )
            .is_err()
        );
    }
}
