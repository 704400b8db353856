//! The recorder: turns samples and people's actions into durable session documents.
//!
//! It owns the database's write connection and the open session's document. Samples arrive in
//! batches ([`Recorder::ingest`]) and wait in memory until the next group commit
//! ([`Recorder::commit`]), which in one SQLite transaction stages them as runs of the open
//! chunk, moves chunks that have spanned a chunk period into the session document, and appends
//! the document's new changes. A sample is *recorded* once that transaction commits; a kill
//! after it loses nothing, because a restarted recorder reads the staging table back
//! ([`Recorder::open`]).
//!
//! The recorder is synchronous and does not read clocks: callers pass `now_us`. The appliance
//! runs it on a thread of its own ([`crate::app`]); the pipeline bench drives it directly.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use automerge::ChangeHash;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use vigil_hardware::sim::Scenario;
use vigil_hardware::source::{DeviceStatus, SourceEvent};
use vigil_shared::advisory::{AdvisoryEngine, AdvisoryKey, Thresholds, Transition};
use vigil_shared::care::{
    AdverseEntry, CheckpointEntry, DispositionEntry, InterventionEntry, OrderEntry, OverrideEntry,
    RiskAssessmentEntry, RiskScreenEntry, ScreeningEntry, latest_answers,
};
use vigil_shared::chunk::Chunk;
use vigil_shared::clinical;
use vigil_shared::clinical::checkpoints::{Checkpoint, SedationScale};
use vigil_shared::clinical::discharge::{self, DischargeRules, Escort};
use vigil_shared::clinical::order::{
    PrescriberOrder, RateAccepted, RateOverride, check_rate_change,
};
use vigil_shared::clinical::risk::{self, RiskDecision};
use vigil_shared::clinical::screening::{
    Answer, FlagOverride, ScreeningFlag, blocked_message, screening_gate,
};
use vigil_shared::doc::{
    AdvisoryRecord, CheckIn, CoursePlan, Discharge, DocError, DocKind, DoseAction, DoseEvent,
    Observation, PatientDoc, PatientRecord, Protocol, Score, Screening, SessionDoc, SessionMeta,
    SessionState, SiteConfigDoc,
};
use vigil_shared::vitals::{Channel, Sample};

use crate::store::{self, SessionRow, StoreError};

mod handle;
mod ledger;
pub use handle::{Command, Handle, Reply};
pub use ledger::LedgerInput;

/// Samples buffered between two group commits, per channel, before the recorder refuses more.
/// At 250 Hz ECG and one commit a second this is over a minute of headroom; a commit that keeps
/// failing (a full disk) must not turn into unbounded memory.
pub const MAX_PENDING_SAMPLES: usize = 1 << 16;

/// Sessions deleted in one retention pass: keeps the write transaction short; the next pass
/// takes the rest.
pub const PURGE_BATCH: usize = 16;

/// Longest free text accepted in a note or name: a tablet keyboard can't reasonably produce
/// more, and a document is forever.
pub const MAX_TEXT_LEN: usize = 10_000;

/// Errors from recorder requests, sorted by what the API should answer.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// No such patient or session.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (a session already running, …).
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but its values are not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A document could not be read or written.
    #[error(transparent)]
    Doc(Box<DocError>),
    /// The recorder's queue is full; nothing was done, and asking again later may work.
    #[error("the recorder is busy; try again in a moment")]
    Busy,
    /// The recorder thread has stopped (the appliance is shutting down); nothing was done.
    #[error("the recorder has stopped")]
    Stopped,
}

impl From<DocError> for RecorderError {
    fn from(e: DocError) -> RecorderError {
        RecorderError::Doc(Box::new(e))
    }
}

/// Settings the recorder needs from the configuration.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Site id.
    pub site: String,
    /// Room id.
    pub room: String,
    /// Length of a vitals chunk, µs of appliance time.
    pub chunk_period_us: i64,
    /// Advisory thresholds used until the site's configuration document arrives from the
    /// cloud; from then on, each new session uses the site's.
    pub thresholds: Thresholds,
    /// The channels the room's monitors deliver (a silent one raises a "no data" advisory).
    pub expected_channels: Vec<Channel>,
    /// Largest size the database may grow to, bytes (SQLite `max_page_count`); `None`: as
    /// large as the disk allows.
    pub max_db_bytes: Option<u64>,
}

/// A new patient, as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// Administrative sex.
    #[serde(default)]
    pub sex: String,
    /// Phone.
    #[serde(default)]
    pub phone: Option<String>,
    /// Screening answers.
    #[serde(default)]
    pub screening: Screening,
    /// Medications.
    #[serde(default)]
    pub medications: Vec<String>,
    /// Course plan (default: induction, 6 over 3 weeks).
    #[serde(default)]
    pub course: CoursePlan,
}

/// Changes to a patient's record; absent fields stay as they are. Lists grow by the entries
/// given, so two rooms adding medications at once both keep theirs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientUpdate {
    /// New phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Medications to add.
    #[serde(default)]
    pub add_medications: Vec<String>,
    /// New screening answers.
    #[serde(default)]
    pub screening: Option<Screening>,
    /// New course plan.
    #[serde(default)]
    pub course: Option<CoursePlan>,
    /// Outcome scores to add to the course record (an id already present is not added twice).
    #[serde(default)]
    pub add_outcome_scores: Vec<Score>,
}

/// A session start request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// The checked-in patient.
    pub patient_id: String,
    /// The infusion protocol.
    pub protocol: Protocol,
    /// Who starts it.
    #[serde(default)]
    pub by: String,
    /// For simulated rooms: the scenario the virtual patient follows (default from config).
    #[serde(default)]
    pub scenario: Option<Scenario>,
    /// The prescriber's order the session starts from (required).
    #[serde(default)]
    pub order: Option<OrderInput>,
    /// This check-in's suicide-risk screen, recorded with the patient before the start is
    /// checked (absent: the one recorded at this visit already, if any).
    #[serde(default)]
    pub risk_screen: Option<RiskScreenInput>,
    /// This check-in's screening answers, recorded with the patient before the start is
    /// checked; flags not answered here count with their latest earlier answer (at most 30
    /// days old; pregnancy only if asked today).
    #[serde(default)]
    pub screening: Vec<ScreeningAnswerInput>,
    /// A clinician's override of each flag answered "yes", with a reason of its own.
    #[serde(default)]
    pub flag_overrides: Vec<FlagOverrideInput>,
}

/// One screening question answered at check-in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreeningAnswerInput {
    /// The flag's code (`clinical::screening::ScreeningFlag`).
    pub flag: String,
    /// Yes.
    pub yes: bool,
}

impl ScreeningAnswerInput {
    /// Every question answered "no": a patient with nothing to flag (the demo's, the benches').
    pub fn all_no() -> Vec<ScreeningAnswerInput> {
        ScreeningFlag::ALL
            .iter()
            .map(|f| ScreeningAnswerInput {
                flag: f.code().to_owned(),
                yes: false,
            })
            .collect()
    }
}

/// A clinician's reason to start despite one flag.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagOverrideInput {
    /// The flag's code.
    pub flag: String,
    /// Why the infusion may go ahead.
    pub reason: String,
}

/// A suicide-risk screen as asked at check-in: the PHQ-9 item by item and the C-SSRS
/// screener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskScreenInput {
    /// PHQ-9 items 1-9, each 0-3 (item 9: thoughts of being better off dead or of self-harm).
    pub phq9_items: Vec<i64>,
    /// The C-SSRS screener's six answers, in order (wish to be dead, thoughts, method, intent,
    /// plan, behaviour).
    pub cssrs: Vec<bool>,
}

/// A clinician's assessment of a positive risk screen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskAssessmentInput {
    /// `proceed`, `defer` or `refer`.
    pub decision: String,
    /// What the clinician found and why they decided so.
    pub note: String,
    /// The clinician (staff id).
    #[serde(default)]
    pub by: String,
}

/// The prescriber's order, as a start request gives it. The dose and duration are the
/// protocol's; the rate range defaults to the planned rate ±25 % (`clinical::order`), and the
/// concentrations to the formulary's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderInput {
    /// Staff id of the prescriber (a clinician on the site's staff list).
    pub prescriber: String,
    /// `depression`, `ptsd`, `anxiety` or `other`.
    pub indication: String,
    /// Lowest pump rate the prescriber allows, mg/h.
    #[serde(default)]
    pub rate_min_mg_per_h: Option<f64>,
    /// Highest pump rate the prescriber allows, mg/h.
    #[serde(default)]
    pub rate_max_mg_per_h: Option<f64>,
}

/// Something that happened during a session, as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionEvent {
    /// Dose timeline entry.
    Dose {
        /// What.
        action: DoseAction,
        /// Rate after the event, mg/h.
        #[serde(default)]
        rate_mg_per_h: Option<f64>,
        /// A clinician's reason for a rate outside the order's range (the only way past it).
        #[serde(default)]
        override_reason: Option<String>,
        /// Who.
        by: String,
    },
    /// Side effect.
    Observation {
        /// The effect.
        effect: String,
        /// `mild`, `moderate`, `severe`.
        severity: String,
        /// Who.
        by: String,
    },
    /// Free-text note.
    Note {
        /// The text.
        text: String,
        /// Who.
        by: String,
    },
    /// A score.
    Score {
        /// `phq9`, `gad7`, `cadss`, `aldrete`.
        instrument: String,
        /// `pre` or `post`.
        phase: String,
        /// The total.
        value: i64,
        /// Who.
        by: String,
    },
    /// Acknowledge an advisory.
    Acknowledge {
        /// Which advisory (its id in the session).
        advisory_id: String,
        /// Who.
        by: String,
    },
    /// An adverse event: unexpected or severe, apart from the expected effects recorded as
    /// observations (`clinical::adverse`).
    AdverseEvent {
        /// What happened.
        event: String,
        /// Onset, µs (default: now).
        #[serde(default)]
        onset_us: Option<i64>,
        /// End, µs, if it has ended.
        #[serde(default)]
        end_us: Option<i64>,
        /// `mild`, `moderate`, `severe`.
        severity: String,
        /// `hospitalisation`, `life_threatening` or `death` when serious.
        #[serde(default)]
        seriousness: Option<String>,
        /// What was given in response.
        #[serde(default)]
        interventions: Vec<InterventionInput>,
        /// `resolved`, `resolved_with_sequelae`, `ongoing`, `transferred`, `fatal`.
        outcome: String,
        /// Who.
        by: String,
    },
    /// A clinician's review of an adverse event (a serious one is due within 24 hours).
    ReviewAdverse {
        /// Which event (its id in the session).
        event_id: String,
        /// The clinician.
        by: String,
    },
    /// A timed monitoring checkpoint: blood pressure and a sedation score.
    Checkpoint {
        /// `before_start`, `at_40_min` or `before_discharge`.
        checkpoint: String,
        /// Systolic, mmHg.
        systolic: i64,
        /// Diastolic, mmHg.
        diastolic: i64,
        /// `moaas` (0-5) or `rass` (-5 to +4).
        sedation_scale: String,
        /// The sedation score.
        sedation: i64,
        /// Who.
        by: String,
    },
    /// Discharge home with an escort, through the discharge gate (`clinical::discharge`).
    Discharge {
        /// The modified Aldrete items: activity, respiration, circulation, consciousness,
        /// oxygen saturation, each 0-2.
        aldrete_items: Vec<i64>,
        /// Escort's name.
        escort: String,
        /// Escort's phone.
        escort_phone: String,
        /// Escort's relationship to the patient.
        escort_relationship: String,
        /// No driving for 24 hours acknowledged.
        no_driving_ack: bool,
        /// A clinician's reason for discharging with a CADSS over the site's limit.
        #[serde(default)]
        cadss_override_reason: Option<String>,
        /// Who.
        by: String,
    },
}

/// A drug or measure given in response to an adverse event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterventionInput {
    /// `ondansetron`, `midazolam`, `labetalol`, `oxygen` or `other`.
    pub rescue: String,
    /// As given, e.g. `4 mg` or `2 L/min`.
    pub dose: String,
    /// E.g. `iv`, `po`, `nasal cannula`.
    pub route: String,
    /// When, µs (default: the event's onset).
    #[serde(default)]
    pub at_us: Option<i64>,
}

/// How a session ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSession {
    /// Who stops it.
    #[serde(default)]
    pub by: String,
    /// `true` if stopped early.
    #[serde(default)]
    pub aborted: bool,
    /// How the patient left when not discharged home: `ems_transfer` or `against_advice`
    /// (`clinical::discharge::Disposition`). Ends the session without the discharge criteria,
    /// as an early stop, and is flagged for the clinicians and managers.
    #[serde(default)]
    pub disposition: Option<String>,
    /// What happened, in the clinician's words; required with a disposition.
    #[serde(default)]
    pub note: String,
}

/// The dispositions that end a session without the discharge criteria.
const ENDING_DISPOSITIONS: [&str; 2] = ["ems_transfer", "against_advice"];

/// What [`Recorder::open`] found in progress, so the caller can re-attach sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumedSession {
    /// Session id.
    pub id: String,
    /// When it started, µs.
    pub started_us: i64,
    /// Scenario of a simulated session.
    pub scenario: Option<String>,
    /// Staged samples read back from the staging table.
    pub staged_samples: usize,
}

/// A snapshot of the recorder for the status API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecorderStatus {
    /// The session being recorded.
    pub session: Option<ActiveSummary>,
    /// The last sample of each channel (live values).
    pub last: BTreeMap<Channel, Sample>,
    /// Device states as sources reported them.
    pub devices: BTreeMap<String, String>,
    /// The last group commit failed because the disk is full.
    pub disk_full: bool,
    /// The last storage error, if the last commit failed.
    pub last_error: Option<String>,
    /// Samples committed since start-up.
    pub samples_committed: u64,
    /// Samples measured during a session but dropped since start-up because the pending
    /// buffer ([`MAX_PENDING_SAMPLES`]) was full: commits kept failing (a full disk) or fell
    /// that far behind. Never recorded, so not "lost" in DESIGN.md's sense, but a gap.
    pub samples_dropped: u64,
    /// Appliance time of the last successful group commit, µs.
    pub last_commit_us: Option<i64>,
}

/// The running session, for status.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveSummary {
    /// Id.
    pub id: String,
    /// Patient.
    pub patient_id: String,
    /// Start, µs.
    pub started_us: i64,
    /// Advisories raised and not cleared.
    pub active_advisories: Vec<AdvisoryRecord>,
}

#[derive(Debug, Default)]
struct OpenChunk {
    /// Samples already in the staging table.
    staged: Vec<Sample>,
    /// Samples received since the last group commit.
    pending: Vec<Sample>,
    /// Next staging sequence number.
    next_seq: i64,
    /// The staged runs were moved into a chunk; the rows must go in the next transaction.
    clear_staging: bool,
    /// Samples received since the last successful commit (for the committed count).
    fresh: u64,
    /// The time of the last sample taken on this channel in this session.
    last_us: Option<i64>,
}

struct Active {
    id: String,
    patient_id: String,
    started_us: i64,
    doc: SessionDoc,
    /// Heads of the document as last written to SQLite.
    saved_heads: Vec<ChangeHash>,
    open: BTreeMap<Channel, OpenChunk>,
    engine: AdvisoryEngine,
    /// Advisory records raised and not yet cleared, by rule key.
    raised: HashMap<AdvisoryKey, String>,
}

/// The recorder. See the module documentation.
pub struct Recorder {
    conn: Connection,
    db_path: PathBuf,
    cfg: RecorderConfig,
    active: Option<Active>,
    status: RecorderStatus,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("db", &self.db_path)
            .field("room", &self.cfg.room)
            .finish()
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Recorder {
    /// Opens the database and resumes a session that was in progress when the appliance
    /// stopped, with its staged samples.
    pub fn open(
        db_path: &Path,
        cfg: RecorderConfig,
    ) -> Result<(Recorder, Option<ResumedSession>), RecorderError> {
        let conn = store::open_writer(db_path)?;
        if let Some(bytes) = cfg.max_db_bytes {
            store::limit_size(&conn, bytes)?;
        }
        let mut recorder = Recorder {
            conn,
            db_path: db_path.to_owned(),
            cfg,
            active: None,
            status: RecorderStatus::default(),
        };
        let resumed = recorder.resume()?;
        Ok((recorder, resumed))
    }

    /// The database connection (for metadata such as the clock anchor).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn resume(&mut self) -> Result<Option<ResumedSession>, RecorderError> {
        let rows = store::sessions(&self.conn)?;
        let Some(row) = rows.into_iter().find(|r| r.state == "in_progress") else {
            return Ok(None);
        };
        let Some(mut doc) = store::load_typed::<SessionDoc>(&self.conn, &row.id)? else {
            return Err(RecorderError::NotFound(format!(
                "document of in-progress session {}",
                row.id
            )));
        };
        let meta = doc.meta()?;
        let mut open: BTreeMap<Channel, OpenChunk> = BTreeMap::new();
        let mut staged_samples = 0;
        for run in store::staged(&self.conn, &row.id)? {
            let oc = open.entry(run.channel).or_default();
            oc.next_seq = oc.next_seq.max(run.seq + 1);
            match run.samples {
                Ok(samples) => {
                    staged_samples += samples.len();
                    oc.staged.extend(samples);
                }
                Err(reason) => tracing::error!(
                    session = %row.id, channel = %run.channel, seq = run.seq, %reason,
                    "a staged run of samples is unreadable and was skipped"
                ),
            }
        }
        let raised = meta
            .advisories
            .iter()
            .filter(|a| a.cleared_us.is_none())
            .filter_map(|a| Some((advisory_key(&a.kind, &a.subject)?, a.id.clone())))
            .collect();
        let saved_heads = doc.automerge().get_heads();
        let started_us = meta.started_us.unwrap_or(meta.created_us);
        self.active = Some(Active {
            id: row.id.clone(),
            patient_id: meta.patient_id.clone(),
            started_us,
            doc,
            saved_heads,
            open,
            engine: AdvisoryEngine::new(self.thresholds(), &self.cfg.expected_channels),
            raised,
        });
        tracing::info!(session = %row.id, staged_samples, "resumed the session in progress");
        Ok(Some(ResumedSession {
            id: row.id,
            started_us,
            scenario: row.scenario,
            staged_samples,
        }))
    }

    /// The thresholds in force: the site configuration's, once the cloud has sent it, else the
    /// configured defaults. A site config that can't be read is logged and the defaults used:
    /// advisories are a secondary display, never a reason to stop recording.
    fn thresholds(&self) -> Thresholds {
        let stored = store::load_typed::<SiteConfigDoc>(&self.conn, &self.cfg.site);
        match stored.map(|d| d.map(|d| d.config().ok())) {
            Ok(None) => self.cfg.thresholds.clone(),
            Ok(Some(Some(c))) if c.thresholds.validate().is_ok() => c.thresholds,
            _ => {
                tracing::warn!(site = %self.cfg.site, "site configuration unreadable or out of range; using default thresholds");
                self.cfg.thresholds.clone()
            }
        }
    }

    /// The recorder's state for the status API.
    pub fn status(&self) -> RecorderStatus {
        let mut s = self.status.clone();
        s.session = self.active.as_ref().map(|a| ActiveSummary {
            id: a.id.clone(),
            patient_id: a.patient_id.clone(),
            started_us: a.started_us,
            active_advisories: a
                .doc
                .meta()
                .map(|m| {
                    m.advisories
                        .into_iter()
                        .filter(|x| x.cleared_us.is_none())
                        .collect()
                })
                .unwrap_or_default(),
        });
        s
    }

    /// The last sample of each channel, for live values between two status snapshots.
    pub fn last_values(&self) -> &BTreeMap<Channel, Sample> {
        &self.status.last
    }

    /// The session being recorded, if any.
    pub fn active_session(&self) -> Option<&str> {
        self.active.as_ref().map(|a| a.id.as_str())
    }

    /// Takes what sources delivered. Samples outside a session are shown live but not
    /// recorded. Returns how many samples were dropped because the pending buffer is full.
    pub fn ingest(&mut self, events: Vec<SourceEvent>) -> usize {
        let mut dropped = 0;
        let mut out_of_order = 0_usize;
        for event in events {
            match event {
                SourceEvent::Samples(batch) => {
                    if let Some(last) = batch.samples.last() {
                        self.status.last.insert(batch.channel, *last);
                    }
                    let Some(a) = self.active.as_mut() else {
                        continue;
                    };
                    let mut transitions = Vec::new();
                    let oc = a.open.entry(batch.channel).or_default();
                    for s in batch.samples {
                        if s.t_us < a.started_us {
                            continue;
                        }
                        // A channel's samples go forward in time (chunks refuse anything
                        // else); a source that breaks that loses the sample, not the record.
                        let floor = oc
                            .last_us
                            .or_else(|| oc.pending.last().or(oc.staged.last()).map(|p| p.t_us));
                        if floor.is_some_and(|f| s.t_us < f) {
                            out_of_order += 1;
                            continue;
                        }
                        if oc.pending.len() >= MAX_PENDING_SAMPLES {
                            dropped += 1;
                            continue;
                        }
                        transitions.extend(a.engine.observe(batch.channel, &s));
                        oc.last_us = Some(s.t_us);
                        oc.pending.push(s);
                        oc.fresh += 1;
                    }
                    apply_transitions(a, transitions);
                }
                SourceEvent::Device {
                    device,
                    status,
                    at_us,
                } => {
                    self.status
                        .devices
                        .insert(device.clone(), device_status_name(&status).to_owned());
                    if let Some(a) = self.active.as_mut() {
                        let t = a
                            .engine
                            .device_status(&device, to_shared_status(&status), at_us);
                        apply_transitions(a, t);
                    }
                }
            }
        }
        if dropped > 0 {
            self.status.samples_dropped += dropped as u64;
            tracing::warn!(
                dropped,
                "pending sample buffer full; samples dropped (is the disk full?)"
            );
        }
        if out_of_order > 0 {
            tracing::warn!(
                out_of_order,
                "samples older than their channel's last one; not recorded"
            );
        }
        dropped
    }

    /// The group commit: closes chunks that have spanned a chunk period, stages the rest and
    /// writes the document's new changes, all in one transaction. On error nothing in memory
    /// is lost; the next commit retries.
    pub fn commit(&mut self, now_us: i64) -> Result<(), RecorderError> {
        let period = self.cfg.chunk_period_us;
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let transitions = a.engine.tick(now_us);
        apply_transitions(a, transitions);
        close_chunks(a, now_us, period, false)?;
        let mut result = write_active(&mut self.conn, a, now_us);
        if matches!(&result, Err(RecorderError::Store(e)) if e.is_full()) {
            // The disk is full: say so in the session, and make room by deleting the oldest
            // sessions the cloud already holds in full (whatever their age); if that freed
            // anything, try again at once. Nothing in memory is dropped meanwhile.
            raise_storage_full(a, now_us);
            let freed = store::purgeable_sessions(&self.conn, i64::MAX, PURGE_BATCH)
                .map(|ids| ids.into_iter().filter(|id| *id != a.id).collect::<Vec<_>>())
                .unwrap_or_default();
            if !freed.is_empty() && delete_sessions(&mut self.conn, &freed).is_ok() {
                tracing::warn!(
                    sessions = freed.len(),
                    "disk full: deleted the oldest sessions the cloud holds"
                );
                result = write_active(&mut self.conn, a, now_us);
            }
        }
        if result.is_ok() && clear_storage_full(a, now_us) {
            // The cleared advisory goes to disk with the next commit.
            tracing::info!("disk space is back; recording is durable again");
        }
        note_result(&mut self.status, &result, now_us);
        result.map(|_| ())
    }

    /// Samples committed so far (for status and tests).
    pub fn samples_committed(&self) -> u64 {
        self.status.samples_committed
    }

    /// Deletes finished sessions that ended more than `retention_us` before `now_us` and that
    /// the cloud has confirmed in full, at most [`PURGE_BATCH`] at a time. The session being
    /// recorded and anything unconfirmed are never touched. Returns the ids deleted.
    pub fn purge(&mut self, now_us: i64, retention_us: i64) -> Result<Vec<String>, RecorderError> {
        let ids = store::purgeable_sessions(
            &self.conn,
            now_us.saturating_sub(retention_us),
            PURGE_BATCH,
        )?;
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| self.active_session() != Some(id.as_str()))
            .collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        delete_sessions(&mut self.conn, &ids)?;
        tracing::info!(
            sessions = ids.len(),
            "deleted sessions past retention that the cloud holds"
        );
        Ok(ids)
    }

    /// Moves audit entries the HTTP server wrote into this appliance's audit document, which
    /// syncs to the cloud ([`crate::audit::fold`]).
    pub fn fold_audit(&mut self, now_us: i64) -> Result<usize, RecorderError> {
        crate::audit::fold(&mut self.conn, &self.cfg.site, &self.cfg.room, now_us)
    }

    /// Registers a patient.
    pub fn create_patient(
        &mut self,
        input: NewPatient,
        now_us: i64,
    ) -> Result<PatientRecord, RecorderError> {
        check_text("given_name", &input.given_name, true)?;
        check_text("family_name", &input.family_name, true)?;
        // The UTC date: at most a day off the site's, and never rejects a real birth date.
        let today = vigil_shared::zone::utc_date(now_us).unwrap_or((9999, 12, 31));
        clinical::check_birth_date(&input.birth_date, today)
            .map_err(|e| RecorderError::Invalid(format!("birth_date: {e}")))?;
        let record = PatientRecord {
            id: new_id(),
            site: self.cfg.site.clone(),
            given_name: input.given_name,
            family_name: input.family_name,
            birth_date: input.birth_date,
            sex: input.sex,
            phone: input.phone,
            screening: Screening {
                answered_us: Some(now_us),
                ..input.screening
            },
            medications: input.medications,
            course: input.course,
            outcome_scores: Vec::new(),
        };
        check_course(&record.course)?;
        let mut doc = PatientDoc::create(&record)?;
        doc.add_screening_answers(&legacy_positive(&record.screening, now_us))?;
        let bytes = doc.automerge().save();
        let tx = store::write_tx(&mut self.conn)?;
        store::insert_document(
            &tx,
            &record.id,
            DocKind::Patient.as_str(),
            &record.site,
            &bytes,
            now_us,
        )?;
        tx.commit().map_err(StoreError::from_sqlite)?;
        Ok(record)
    }

    /// Changes a patient's record. Durable when this returns.
    pub fn update_patient(
        &mut self,
        id: &str,
        update: PatientUpdate,
        now_us: i64,
    ) -> Result<PatientRecord, RecorderError> {
        if let Some(phone) = &update.phone {
            check_text("phone", phone, false)?;
        }
        for m in &update.add_medications {
            check_text("add_medications", m, true)?;
        }
        if let Some(course) = &update.course {
            check_course(course)?;
        }
        let (_, doc) = self.change_patient(id, now_us, |doc| {
            if let Some(s) = &update.screening {
                doc.add_screening_answers(&legacy_positive(s, now_us))?;
            }
            Ok(doc.update(|r| {
                if let Some(phone) = update.phone {
                    r.phone = Some(phone);
                }
                r.medications.extend(update.add_medications);
                if let Some(screening) = update.screening {
                    r.screening = Screening {
                        answered_us: Some(now_us),
                        ..screening
                    };
                }
                if let Some(course) = update.course {
                    r.course = course;
                }
                for score in update.add_outcome_scores {
                    if !r.outcome_scores.iter().any(|s| s.id == score.id) {
                        r.outcome_scores.push(score);
                    }
                }
            })?)
        })?;
        Ok(doc.record()?)
    }

    /// Loads a patient's document, lets `f` change it and writes the changes in one
    /// transaction; durable when this returns. Nothing is written when `f` fails.
    fn change_patient<R>(
        &mut self,
        id: &str,
        now_us: i64,
        f: impl FnOnce(&mut PatientDoc) -> Result<R, RecorderError>,
    ) -> Result<(R, PatientDoc), RecorderError> {
        let Some(mut doc) = store::load_typed::<PatientDoc>(&self.conn, id)? else {
            return Err(RecorderError::NotFound(format!("patient {id}")));
        };
        let heads = doc.automerge().get_heads();
        let out = f(&mut doc)?;
        let changes = doc.automerge().save_after(&heads);
        if !changes.is_empty() {
            let tx = store::write_tx(&mut self.conn)?;
            // The sync client writes patients too: a compaction folds what is stored.
            store::append_shared(&tx, id, &changes, now_us)?;
            tx.commit().map_err(StoreError::from_sqlite)?;
        }
        Ok((out, doc))
    }

    /// Records this visit's suicide-risk screen with the patient, so every room of the site
    /// and the clinician asked to assess it see the answers. The same answers again keep the
    /// screen (and any assessment of it) as it is.
    pub fn record_risk_screen(
        &mut self,
        patient_id: &str,
        input: RiskScreenInput,
        by: &str,
        now_us: i64,
    ) -> Result<RiskScreenEntry, RecorderError> {
        check_text("by", by, true)?;
        if input.phq9_items.len() != 9 || input.phq9_items.iter().any(|v| !(0..=3).contains(v)) {
            return Err(RecorderError::Invalid(
                "risk_screen.phq9_items must be the nine PHQ-9 items, each 0-3".into(),
            ));
        }
        if input.cssrs.len() != 6 {
            return Err(RecorderError::Invalid(
                "risk_screen.cssrs must be the C-SSRS screener's six answers".into(),
            ));
        }
        let (screen, _) = self.change_patient(patient_id, now_us, |doc| {
            if let Some(current) = current_risk_screen(doc, now_us)?
                && current.phq9_items == input.phq9_items
                && current.cssrs == input.cssrs
            {
                return Ok(current);
            }
            let screen = RiskScreenEntry {
                id: new_id(),
                phq9_items: input.phq9_items,
                cssrs: input.cssrs,
                at_us: now_us,
                by: by.to_owned(),
                assessment: None,
            };
            doc.put_risk_screen(&screen)?;
            Ok(screen)
        })?;
        Ok(screen)
    }

    /// Records a check-in's screening answers with the patient, each stamped now, so every room
    /// of the site sees them and the next check-in within 30 days need not ask again (except
    /// pregnancy, asked at every visit).
    pub fn record_screening(
        &mut self,
        patient_id: &str,
        answers: &[ScreeningAnswerInput],
        by: &str,
        now_us: i64,
    ) -> Result<Vec<ScreeningEntry>, RecorderError> {
        check_text("by", by, true)?;
        let entries = answers
            .iter()
            .map(|a| {
                let flag = ScreeningFlag::parse(&a.flag)
                    .map_err(|e| RecorderError::Invalid(format!("screening: {e}")))?;
                Ok(ScreeningEntry {
                    id: new_id(),
                    flag: flag.code().to_owned(),
                    yes: a.yes,
                    asked_us: now_us,
                    by: by.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, RecorderError>>()?;
        if entries.is_empty() {
            return Ok(entries);
        }
        self.change_patient(patient_id, now_us, |doc| {
            Ok(doc.add_screening_answers(&entries)?)
        })?;
        Ok(entries)
    }

    /// The site's time zone (for "today"), UTC before the configuration arrives.
    fn site_zone(&self) -> Result<vigil_shared::zone::SiteZone, RecorderError> {
        Ok(crate::reads::site_config_doc(&self.conn, &self.cfg.site)?
            .map_or_else(vigil_shared::zone::SiteZone::utc, |d| d.zone()))
    }

    /// Records a clinician's assessment of this visit's risk screen.
    pub fn assess_risk(
        &mut self,
        patient_id: &str,
        input: RiskAssessmentInput,
        now_us: i64,
    ) -> Result<RiskScreenEntry, RecorderError> {
        check_text("by", &input.by, true)?;
        check_text("note", &input.note, true)?;
        let decision = RiskDecision::parse(&input.decision).ok_or_else(|| {
            RecorderError::Invalid(format!(
                "decision {:?} is not proceed, defer or refer",
                input.decision
            ))
        })?;
        if !self.is_clinician(&input.by)? {
            return Err(RecorderError::Invalid(format!(
                "only a clinician may assess a suicide-risk screen; {} is not one on this site's staff list",
                input.by
            )));
        }
        let (screen, _) = self.change_patient(patient_id, now_us, |doc| {
            let Some(mut screen) = current_risk_screen(doc, now_us)? else {
                return Err(RecorderError::Conflict(
                    "there is no suicide-risk screen of this visit to assess".into(),
                ));
            };
            screen.assessment = Some(RiskAssessmentEntry {
                decision: decision.code().into(),
                note: input.note,
                by: input.by,
                at_us: now_us,
            });
            doc.put_risk_screen(&screen)?;
            Ok(screen)
        })?;
        Ok(screen)
    }

    /// Starts recording a session for a registered patient.
    pub fn start_session(
        &mut self,
        input: NewSession,
        now_us: i64,
    ) -> Result<SessionMeta, RecorderError> {
        self.start_session_checked(input, None, now_us)
    }

    /// Starts recording a session with the room screen's check-in record, written in the same
    /// transaction as the new document. A check-in that lists contraindication flags must
    /// carry an override reason and who gave it; the screen checks that person's role.
    pub fn start_session_checked(
        &mut self,
        input: NewSession,
        checkin: Option<CheckIn>,
        now_us: i64,
    ) -> Result<SessionMeta, RecorderError> {
        // The check-in happened now, whatever the caller's clock said.
        let mut checkin = checkin.map(|c| CheckIn { at_us: now_us, ..c });
        if let Some(c) = &checkin {
            check_text("checkin.by", &c.by, true)?;
            check_text(
                "checkin.override_reason",
                c.override_reason.as_deref().unwrap_or(""),
                false,
            )?;
        }
        // The clinical rules hold whoever asks (the screen, the API, an integration): the
        // flags come from the patient's own screening, the limits from the site's
        // configuration, and an override only from a clinician on the site's staff list.
        // This visit's risk screen and screening answers are recorded with the patient first,
        // so a blocked start keeps them for the clinician asked to assess or override; then
        // the gates, over one read of the patient's document.
        let by = checkin
            .as_ref()
            .map_or(input.by.as_str(), |c| c.by.as_str())
            .to_owned();
        if let Some(screen) = input.risk_screen.clone() {
            self.record_risk_screen(&input.patient_id, screen, &by, now_us)?;
        }
        self.record_screening(&input.patient_id, &input.screening, &by, now_us)?;
        let Some(patient) = store::load_typed::<PatientDoc>(&self.conn, &input.patient_id)? else {
            return Err(RecorderError::NotFound(format!(
                "patient {}",
                input.patient_id
            )));
        };
        let risk = current_risk_screen(&patient, now_us)?;
        match &risk {
            None => {
                return Err(RecorderError::Conflict(
                    risk::RiskBlock::NotScreened.to_string(),
                ));
            }
            Some(screen) => screen
                .gate()
                .map_err(|e| RecorderError::Conflict(e.to_string()))?,
        }
        // Screening, per flag: every flag's latest answer through the gate; each "yes" needs a
        // clinician's reason of its own.
        let answers = latest_answers(&patient.screening_answers()?);
        let high_bp = checkin
            .as_ref()
            .is_some_and(|c| clinical::high_baseline_bp(c.baseline_systolic, c.baseline_diastolic));
        let by_role = if !input.flag_overrides.is_empty() && self.is_clinician(&by)? {
            clinical::StaffRole::Clinician
        } else {
            clinical::StaffRole::Nurse
        };
        let overrides = input
            .flag_overrides
            .iter()
            .map(|o| {
                check_text("flag_overrides.reason", &o.reason, false)?;
                Ok(FlagOverride {
                    flag: ScreeningFlag::parse(&o.flag)
                        .map_err(|e| RecorderError::Invalid(format!("flag_overrides: {e}")))?,
                    reason: o.reason.clone(),
                    by_role,
                })
            })
            .collect::<Result<Vec<_>, RecorderError>>()?;
        let today = self.site_zone()?.day_start(now_us);
        let parsed: Vec<Answer> = answers.iter().filter_map(ScreeningEntry::answer).collect();
        if let Err(blocks) = screening_gate(&parsed, &overrides, high_bp, now_us, today) {
            return Err(RecorderError::Conflict(blocked_message(&blocks)));
        }
        let positive: Vec<String> = ScreeningFlag::ALL
            .iter()
            .filter(|f| {
                parsed.iter().any(|a| a.flag == **f && a.yes)
                    || (**f == ScreeningFlag::UncontrolledHypertension && high_bp)
            })
            .map(|f| f.code().to_owned())
            .collect();
        let flag_overrides: Vec<OverrideEntry> = overrides
            .iter()
            .filter(|o| positive.iter().any(|p| p == o.flag.code()) && !o.reason.trim().is_empty())
            .map(|o| OverrideEntry {
                id: new_id(),
                subject: o.flag.code().to_owned(),
                reason: o.reason.trim().to_owned(),
                by: by.clone(),
                at_us: now_us,
            })
            .collect();
        if let Some(c) = &mut checkin {
            c.flags = positive;
            let reasons: Vec<String> = flag_overrides
                .iter()
                .map(|o| format!("{}: {}", o.subject.replace('_', " "), o.reason))
                .collect();
            c.override_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
            c.override_by = (!reasons.is_empty()).then(|| by.clone());
        }
        let limits = crate::reads::infusion_limits(&self.conn, &self.cfg.site);
        let order = self.prescriber_order(input.order.as_ref(), &input.protocol, &limits)?;
        if let Some(c) = &checkin {
            order
                .check_concentration(c.concentration_mg_per_ml)
                .and_then(|_| check_rate_change(c.rate_mg_per_h, &order, &limits, None))
                .map_err(|e| RecorderError::Invalid(format!("pump setting refused: {e}")))?;
        }
        if let Some(a) = &self.active {
            return Err(RecorderError::Conflict(format!(
                "session {} is already in progress in this room; stop it first",
                a.id
            )));
        }
        let p = &input.protocol;
        check_text("protocol.drug", &p.drug, true)?;
        check_text("protocol.route", &p.route, true)?;
        let meta = SessionMeta {
            id: new_id(),
            site: self.cfg.site.clone(),
            room: self.cfg.room.clone(),
            patient_id: input.patient_id.clone(),
            protocol: input.protocol,
            state: SessionState::InProgress,
            created_us: now_us,
            started_us: Some(now_us),
            ended_us: None,
            dose_events: Vec::new(),
            advisories: Vec::new(),
            observations: Vec::new(),
            scores: Vec::new(),
            discharge: None,
        };
        let mut doc = SessionDoc::create(&meta)?;
        if let Some(c) = &checkin {
            doc.set_checkin(c)?;
        }
        doc.update_care(|c| {
            c.order = Some(OrderEntry::new(&order, now_us, &input.by));
            c.risk = risk;
            c.screening = answers;
            c.overrides.extend(flag_overrides);
        })?;
        let bytes = doc.automerge().save();
        let row = SessionRow {
            id: meta.id.clone(),
            patient_id: meta.patient_id.clone(),
            state: "in_progress".into(),
            started_us: Some(now_us),
            ended_us: None,
            scenario: input.scenario.map(|s| s.to_string()),
        };
        let tx = store::write_tx(&mut self.conn)?;
        store::insert_document(
            &tx,
            &meta.id,
            DocKind::Session.as_str(),
            &meta.site,
            &bytes,
            now_us,
        )?;
        store::upsert_session(&tx, &row)?;
        tx.commit().map_err(StoreError::from_sqlite)?;
        let saved_heads = doc.automerge().get_heads();
        self.active = Some(Active {
            id: meta.id.clone(),
            patient_id: meta.patient_id.clone(),
            started_us: now_us,
            doc,
            saved_heads,
            open: BTreeMap::new(),
            engine: AdvisoryEngine::new(self.thresholds(), &self.cfg.expected_channels),
            raised: HashMap::new(),
        });
        tracing::info!(session = %meta.id, patient = %meta.patient_id, "session started");
        Ok(meta)
    }

    /// The site's staff list as this appliance last received it (empty before the first).
    fn staff(&self) -> Result<Vec<vigil_shared::doc::StaffMember>, RecorderError> {
        Ok(
            match crate::reads::site_config_doc(&self.conn, &self.cfg.site)? {
                Some(doc) => doc.config()?.staff,
                None => Vec::new(),
            },
        )
    }

    /// Whether the site's staff list names `id` as a clinician.
    fn is_clinician(&self, id: &str) -> Result<bool, RecorderError> {
        let clinician = clinical::StaffRole::Clinician.code();
        Ok(self
            .staff()?
            .iter()
            .any(|m| m.id == id && m.role == clinician))
    }

    /// The prescriber's order a start gives, checked: a known indication, a prescriber the
    /// site's staff list names as a clinician (once the appliance has the list), a protocol
    /// within the site's limits and a rate range inside them that holds the planned rate.
    fn prescriber_order(
        &self,
        input: Option<&OrderInput>,
        p: &Protocol,
        limits: &clinical::InfusionLimits,
    ) -> Result<PrescriberOrder, RecorderError> {
        let Some(o) = input else {
            return Err(RecorderError::Invalid(
                "a session starts from the prescriber's order: order.prescriber and order.indication are required".into(),
            ));
        };
        check_text("order.prescriber", &o.prescriber, true)?;
        let indication = clinical::Indication::parse(&o.indication)
            .map_err(|e| RecorderError::Invalid(format!("order.indication: {e}")))?;
        let staff = self.staff()?;
        let clinician = clinical::StaffRole::Clinician.code();
        if !staff.is_empty()
            && !staff
                .iter()
                .any(|m| m.id == o.prescriber && m.role == clinician)
        {
            return Err(RecorderError::Invalid(format!(
                "order.prescriber {:?} is not a clinician on this site's staff list",
                o.prescriber
            )));
        }
        let (_, planned_rate) =
            clinical::check_protocol(p.dose_mg_per_kg, p.weight_kg, p.planned_minutes, limits)
                .map_err(|e| RecorderError::Invalid(format!("protocol refused: {e}")))?;
        let mut order = PrescriberOrder::standard(
            &o.prescriber,
            indication,
            p.dose_mg_per_kg,
            p.planned_minutes,
            p.weight_kg,
            limits,
        )
        .map_err(|e| RecorderError::Invalid(format!("protocol refused: {e}")))?;
        if let Some(min) = o.rate_min_mg_per_h {
            order.rate_mg_per_h.0 = min;
        }
        if let Some(max) = o.rate_max_mg_per_h {
            order.rate_mg_per_h.1 = max;
        }
        order
            .validate(limits)
            .and_then(|()| check_rate_change(planned_rate, &order, limits, None))
            .map_err(|e| RecorderError::Invalid(format!("order refused: {e}")))?;
        Ok(order)
    }

    /// Records an event on a session (the running one, or a finished one for late scores,
    /// notes and discharge). Durable when this returns.
    pub fn add_event(
        &mut self,
        session_id: &str,
        event: SessionEvent,
        now_us: i64,
    ) -> Result<SessionMeta, RecorderError> {
        validate_event(&event)?;
        match &event {
            SessionEvent::Dose {
                action: DoseAction::Start,
                ..
            } => self.check_draw_recorded(session_id)?,
            SessionEvent::Discharge { .. } => self.check_reconciled(session_id)?,
            _ => {}
        }
        let overrides =
            |reason: &Option<String>| reason.as_deref().is_some_and(|r| !r.trim().is_empty());
        let rules = match &event {
            SessionEvent::Dose {
                rate_mg_per_h: Some(_),
                override_reason,
                by,
                ..
            } => Some(EventRules {
                limits: crate::reads::infusion_limits(&self.conn, &self.cfg.site),
                discharge: DischargeRules::default(),
                // Asked only when someone overrides: a plain rate change reads no staff list.
                by_clinician: overrides(override_reason) && self.is_clinician(by)?,
            }),
            SessionEvent::ReviewAdverse { by, .. } => Some(EventRules {
                limits: clinical::InfusionLimits::default(),
                discharge: DischargeRules::default(),
                by_clinician: self.is_clinician(by)?,
            }),
            SessionEvent::Discharge {
                cadss_override_reason,
                by,
                ..
            } => Some(EventRules {
                limits: clinical::InfusionLimits::default(),
                discharge: crate::reads::discharge_rules(&self.conn, &self.cfg.site),
                by_clinician: overrides(cadss_override_reason) && self.is_clinician(by)?,
            }),
            _ => None,
        };
        if self.active.as_ref().is_some_and(|a| a.id == session_id) {
            let a = self
                .active
                .as_mut()
                .ok_or_else(|| RecorderError::NotFound(session_id.into()))?;
            apply_checked(&mut a.doc, event, rules.as_ref(), now_us)?;
            let result = write_active(&mut self.conn, a, now_us);
            note_result(&mut self.status, &result, now_us);
            result?;
            return Ok(a.doc.meta()?);
        }
        let Some(mut doc) = store::load_typed::<SessionDoc>(&self.conn, session_id)? else {
            return Err(RecorderError::NotFound(format!("session {session_id}")));
        };
        let heads = doc.automerge().get_heads();
        apply_checked(&mut doc, event, rules.as_ref(), now_us)?;
        let changes = doc.automerge().save_after(&heads);
        let tx = store::write_tx(&mut self.conn)?;
        store::append_changes(&tx, session_id, &changes, now_us, || {
            Ok(doc.automerge().save())
        })?;
        tx.commit().map_err(StoreError::from_sqlite)?;
        Ok(doc.meta()?)
    }

    /// Stops the running session: every open chunk is closed into the document, whatever its
    /// length, and the state is written, in one transaction.
    pub fn stop_session(
        &mut self,
        session_id: &str,
        input: StopSession,
        now_us: i64,
    ) -> Result<SessionMeta, RecorderError> {
        let Some(a) = self.active.as_mut().filter(|a| a.id == session_id) else {
            return match store::load_document(&self.conn, session_id)? {
                Some(_) => Err(RecorderError::Conflict(format!(
                    "session {session_id} is not in progress"
                ))),
                None => Err(RecorderError::NotFound(format!("session {session_id}"))),
            };
        };
        if let Some(code) = &input.disposition {
            if !ENDING_DISPOSITIONS.contains(&code.as_str()) {
                return Err(RecorderError::Invalid(format!(
                    "disposition {code:?} is not ems_transfer or against_advice (a patient going home is discharged)"
                )));
            }
            check_text("note", &input.note, true)?;
        }
        close_chunks(a, now_us, self.cfg.chunk_period_us, true)?;
        let aborted = input.aborted || input.disposition.is_some();
        let state = if aborted {
            SessionState::Aborted
        } else {
            SessionState::Completed
        };
        a.doc.update_meta(|m| {
            m.state = state;
            m.ended_us = Some(now_us);
        })?;
        if let Some(code) = &input.disposition {
            a.doc.update_care(|c| {
                c.disposition = Some(DispositionEntry {
                    code: code.clone(),
                    escort_name: String::new(),
                    escort_phone: String::new(),
                    escort_relationship: String::new(),
                    aldrete_items: Vec::new(),
                    note: input.note.clone(),
                    at_us: now_us,
                    by: input.by.clone(),
                });
            })?;
        }
        let row = SessionRow {
            id: a.id.clone(),
            patient_id: a.patient_id.clone(),
            state: if aborted { "aborted" } else { "completed" }.into(),
            started_us: Some(a.started_us),
            ended_us: Some(now_us),
            scenario: None,
        };
        let result = write_active(&mut self.conn, a, now_us).and_then(|n| {
            let tx = store::write_tx(&mut self.conn)?;
            store::upsert_session(&tx, &row)?;
            tx.commit().map_err(StoreError::from_sqlite)?;
            Ok(n)
        });
        note_result(&mut self.status, &result, now_us);
        result?;
        let meta = a.doc.meta()?;
        tracing::info!(session = %session_id, by = %input.by, state = ?state, "session stopped");
        let (patient_id, started_us) = (a.patient_id.clone(), a.started_us);
        self.active = None;
        if clinical::infusion_done(state) {
            let done = vigil_shared::doc::InfusionDone {
                session_id: session_id.to_owned(),
                started_us,
                room: self.cfg.room.clone(),
            };
            // The session itself is durable; the course count catches up at the next stop
            // if this fails, so it is logged, not returned.
            if let Err(e) = self.record_infusion_done(&patient_id, &done, now_us) {
                tracing::warn!(session = %session_id, error = %e, "cannot record the infusion in the patient's course");
            }
        }
        Ok(meta)
    }

    /// Records an infusion done in the patient's document, which the site's rooms and the
    /// cloud share: the course's count of infusions done, one definition everywhere.
    fn record_infusion_done(
        &mut self,
        patient_id: &str,
        done: &vigil_shared::doc::InfusionDone,
        now_us: i64,
    ) -> Result<(), RecorderError> {
        self.change_patient(
            patient_id,
            now_us,
            |doc| Ok(doc.record_infusion_done(done)?),
        )?;
        Ok(())
    }
}

/// Deletes sessions in one transaction.
fn delete_sessions(conn: &mut Connection, ids: &[String]) -> Result<(), RecorderError> {
    let tx = store::write_tx(conn)?;
    for id in ids {
        store::delete_session(&tx, id)?;
    }
    tx.commit().map_err(StoreError::from_sqlite)?;
    Ok(())
}

/// The technical advisory for a full disk: recorded samples wait in memory, so the nurse must
/// know that a power cut now would lose them.
const STORAGE_FULL: &str = "storage_full";

/// Whether the session has an uncleared storage advisory.
fn storage_full_raised(a: &Active) -> bool {
    a.doc
        .meta()
        .map(|m| {
            m.advisories
                .iter()
                .any(|r| r.kind == STORAGE_FULL && r.cleared_us.is_none())
        })
        .unwrap_or(false)
}

/// Raises the storage advisory in the session (in memory; it reaches the disk with the first
/// commit that succeeds), once.
fn raise_storage_full(a: &mut Active, now_us: i64) {
    if storage_full_raised(a) {
        return;
    }
    let result = a.doc.update_meta(|m| {
        m.advisories.push(AdvisoryRecord {
            id: new_id(),
            kind: STORAGE_FULL.into(),
            subject: "appliance".into(),
            // Medium, above the low of other technical advisories: samples are at risk.
            priority: "medium".into(),
            detail: "the appliance's disk is full; new samples wait in memory until space returns"
                .into(),
            raised_us: now_us,
            acknowledged_us: None,
            acknowledged_by: None,
            cleared_us: None,
        })
    });
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot record the storage advisory");
    }
}

/// Clears the storage advisory if it is raised; returns whether it was.
fn clear_storage_full(a: &mut Active, now_us: i64) -> bool {
    if !storage_full_raised(a) {
        return false;
    }
    a.doc
        .update_meta(|m| {
            for r in m
                .advisories
                .iter_mut()
                .filter(|r| r.kind == STORAGE_FULL && r.cleared_us.is_none())
            {
                r.cleared_us = Some(now_us);
            }
        })
        .is_ok()
}

/// Keeps the status in step with the last write: errors are shown, not hidden.
fn note_result(status: &mut RecorderStatus, result: &Result<u64, RecorderError>, now_us: i64) {
    match result {
        Ok(n) => {
            status.disk_full = false;
            status.last_error = None;
            status.last_commit_us = Some(now_us);
            status.samples_committed += n;
        }
        Err(e) => {
            status.disk_full = matches!(e, RecorderError::Store(s) if s.is_full());
            status.last_error = Some(e.to_string());
            tracing::error!(error = %e, "write failed; samples stay in memory and the next commit retries");
        }
    }
}

/// Moves samples that have spanned a chunk period (all of them when `all`) into chunks of at
/// most one period each.
fn close_chunks(
    a: &mut Active,
    now_us: i64,
    period_us: i64,
    all: bool,
) -> Result<(), RecorderError> {
    for (&channel, oc) in a.open.iter_mut() {
        let first = oc.staged.first().or(oc.pending.first()).map(|s| s.t_us);
        let Some(first) = first else { continue };
        if !all && first + period_us > now_us {
            continue;
        }
        let mut samples = std::mem::take(&mut oc.staged);
        samples.append(&mut oc.pending);
        let mut rest = samples.as_slice();
        while let Some(head) = rest.first() {
            let boundary = head.t_us + period_us;
            if !all && boundary > now_us {
                break;
            }
            let n = rest
                .iter()
                .position(|s| s.t_us >= boundary)
                .unwrap_or(rest.len());
            let chunk = Chunk {
                channel,
                samples: rest[..n].to_vec(),
            };
            let bytes = chunk
                .encode()
                .map_err(|e| RecorderError::Invalid(format!("chunk of {channel}: {e}")))?;
            a.doc.append_chunk(channel, bytes)?;
            rest = &rest[n..];
        }
        // What is left of the open chunk must be staged again in the same transaction that
        // deletes the old runs.
        oc.pending = rest.to_vec();
        oc.clear_staging = true;
    }
    Ok(())
}

/// Writes the active session's staged runs and document changes in one transaction.
/// Returns how many newly received samples it made durable.
fn write_active(conn: &mut Connection, a: &mut Active, now_us: i64) -> Result<u64, RecorderError> {
    let changes = a.doc.automerge().save_after(&a.saved_heads);
    let tx = store::write_tx(conn)?;
    for (&channel, oc) in a.open.iter() {
        if oc.clear_staging {
            store::clear_staging(&tx, &a.id, channel)?;
        }
        if !oc.pending.is_empty() {
            store::stage_samples(&tx, &a.id, channel, oc.next_seq, &oc.pending)?;
        }
    }
    let doc = &mut a.doc;
    store::append_changes(&tx, &a.id, &changes, now_us, || Ok(doc.automerge().save()))?;
    tx.commit().map_err(StoreError::from_sqlite)?;
    // Committed: only now does memory move on.
    a.saved_heads = a.doc.automerge().get_heads();
    let mut committed = 0;
    for oc in a.open.values_mut() {
        committed += std::mem::take(&mut oc.fresh);
        if !oc.pending.is_empty() {
            oc.next_seq += 1;
            let mut pending = std::mem::take(&mut oc.pending);
            oc.staged.append(&mut pending);
        }
        oc.clear_staging = false;
    }
    Ok(committed)
}

fn apply_transitions(a: &mut Active, transitions: Vec<Transition>) {
    for t in transitions {
        let result = match t {
            Transition::Raised {
                key,
                priority,
                at_us,
                detail,
            } => {
                if a.raised.contains_key(&key) {
                    continue;
                }
                let id = new_id();
                a.raised.insert(key.clone(), id.clone());
                a.doc.update_meta(|m| {
                    m.advisories.push(AdvisoryRecord {
                        id,
                        kind: key.kind.name().to_owned(),
                        subject: key.subject.clone(),
                        priority: priority.name().to_owned(),
                        detail,
                        raised_us: at_us,
                        acknowledged_us: None,
                        acknowledged_by: None,
                        cleared_us: None,
                    })
                })
            }
            Transition::Cleared { key, at_us } => {
                let Some(id) = a.raised.remove(&key) else {
                    continue;
                };
                a.doc.update_meta(|m| {
                    if let Some(r) = m.advisories.iter_mut().find(|r| r.id == id) {
                        r.cleared_us = Some(at_us);
                    }
                })
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record an advisory in the session document");
        }
    }
}

fn advisory_key(kind: &str, subject: &str) -> Option<AdvisoryKey> {
    let kind = vigil_shared::advisory::AdvisoryKind::from_name(kind)?;
    Some(AdvisoryKey {
        kind,
        subject: subject.to_owned(),
    })
}

fn to_shared_status(s: &DeviceStatus) -> vigil_shared::advisory::DeviceStatus {
    use vigil_shared::advisory::DeviceStatus as S;
    match s {
        DeviceStatus::Connected => S::Connected,
        DeviceStatus::Disconnected => S::Disconnected,
        DeviceStatus::SensorContact(c) => S::SensorContact(*c),
    }
}

fn device_status_name(s: &DeviceStatus) -> &'static str {
    match s {
        DeviceStatus::Connected => "connected",
        DeviceStatus::Disconnected => "disconnected",
        DeviceStatus::SensorContact(true) => "connected",
        DeviceStatus::SensorContact(false) => "sensor_off",
    }
}

/// A course plan's maintenance interval within [`clinical::MAINTENANCE_INTERVAL_RANGE`].
fn check_course(course: &CoursePlan) -> Result<(), RecorderError> {
    let range = clinical::MAINTENANCE_INTERVAL_RANGE;
    if range.contains(&course.maintenance_interval_days) {
        Ok(())
    } else {
        Err(RecorderError::Invalid(format!(
            "course.maintenance_interval_days must be {}-{} days",
            range.start(),
            range.end()
        )))
    }
}

fn check_text(field: &str, value: &str, required: bool) -> Result<(), RecorderError> {
    if required && value.trim().is_empty() {
        return Err(RecorderError::Invalid(format!("{field} is required")));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(RecorderError::Invalid(format!(
            "{field} is longer than {MAX_TEXT_LEN} bytes"
        )));
    }
    Ok(())
}

fn validate_event(event: &SessionEvent) -> Result<(), RecorderError> {
    match event {
        SessionEvent::Dose {
            rate_mg_per_h, by, ..
        } => {
            check_text("by", by, true)?;
            if let Some(r) = rate_mg_per_h
                && !(r.is_finite() && (0.0..=clinical::RATE_SANITY_MAX_MG_PER_H).contains(r))
            {
                return Err(RecorderError::Invalid(format!(
                    "rate_mg_per_h must be between 0 and {}",
                    clinical::RATE_SANITY_MAX_MG_PER_H
                )));
            }
        }
        SessionEvent::Observation {
            effect,
            severity,
            by,
        } => {
            check_text("by", by, true)?;
            check_text("effect", effect, true)?;
            clinical::Severity::parse(severity)
                .map_err(|e| RecorderError::Invalid(e.to_string()))?;
        }
        SessionEvent::Note { text, by } => {
            check_text("by", by, true)?;
            check_text("text", text, true)?;
        }
        SessionEvent::Score {
            instrument,
            phase,
            value,
            by,
        } => {
            check_text("by", by, true)?;
            let instrument = clinical::Instrument::parse(instrument)
                .map_err(|e| RecorderError::Invalid(e.to_string()))?;
            instrument.check(*value).map_err(RecorderError::Invalid)?;
            clinical::ScorePhase::parse(phase)
                .map_err(|e| RecorderError::Invalid(e.to_string()))?;
        }
        SessionEvent::Acknowledge { advisory_id, by } => {
            check_text("by", by, true)?;
            check_text("advisory_id", advisory_id, true)?;
        }
        SessionEvent::AdverseEvent {
            event,
            by,
            interventions,
            ..
        } => {
            check_text("by", by, true)?;
            check_text("event", event, true)?;
            for i in interventions {
                check_text("interventions.dose", &i.dose, false)?;
                check_text("interventions.route", &i.route, false)?;
            }
        }
        SessionEvent::ReviewAdverse { event_id, by } => {
            check_text("by", by, true)?;
            check_text("event_id", event_id, true)?;
        }
        SessionEvent::Checkpoint {
            checkpoint,
            systolic,
            diastolic,
            sedation_scale,
            sedation,
            by,
        } => {
            check_text("by", by, true)?;
            Checkpoint::parse(checkpoint).map_err(|e| RecorderError::Invalid(e.to_string()))?;
            clinical::check_bp(*systolic, *diastolic).map_err(RecorderError::Invalid)?;
            SedationScale::parse(sedation_scale)
                .map_err(|e| RecorderError::Invalid(e.to_string()))?
                .check(*sedation)
                .map_err(RecorderError::Invalid)?;
        }
        SessionEvent::Discharge {
            aldrete_items,
            escort,
            escort_phone,
            escort_relationship,
            no_driving_ack,
            cadss_override_reason,
            by,
        } => {
            check_text("by", by, true)?;
            if clinical::Aldrete::from_items(aldrete_items).is_none() {
                return Err(RecorderError::Invalid(
                    "aldrete_items must be the five modified Aldrete items (activity, respiration, circulation, consciousness, oxygen saturation), each 0-2".into(),
                ));
            }
            for (field, value) in [
                ("escort", escort),
                ("escort_phone", escort_phone),
                ("escort_relationship", escort_relationship),
            ] {
                check_text(field, value, true)?;
            }
            check_text(
                "cadss_override_reason",
                cadss_override_reason.as_deref().unwrap_or(""),
                false,
            )?;
            Escort {
                name: escort.clone(),
                phone: escort_phone.clone(),
                relationship: escort_relationship.clone(),
            }
            .check()
            .map_err(RecorderError::Invalid)?;
            if !no_driving_ack {
                return Err(RecorderError::Invalid(
                    "discharge needs no_driving_ack".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The "yes" answers of the record's five-question screening (the API's `screening` of a
/// patient) as per-flag answers stamped now: a positive answer counts at the next start; a
/// "no" there is not an answer to the full list, which the check-in asks.
fn legacy_positive(s: &Screening, now_us: i64) -> Vec<ScreeningEntry> {
    [
        (
            s.uncontrolled_hypertension,
            ScreeningFlag::UncontrolledHypertension,
        ),
        (
            s.cardiovascular_disease,
            ScreeningFlag::CardiovascularDisease,
        ),
        (s.psychosis_history, ScreeningFlag::PsychosisHistory),
        (s.pregnancy, ScreeningFlag::Pregnancy),
        (s.substance_use, ScreeningFlag::SubstanceUse),
    ]
    .into_iter()
    .filter(|(yes, _)| *yes)
    .map(|(_, flag)| ScreeningEntry {
        id: new_id(),
        flag: flag.code().to_owned(),
        yes: true,
        asked_us: now_us,
        by: s.by.clone().unwrap_or_default(),
    })
    .collect()
}

/// A patient's risk screen of this visit: the latest, if taken within
/// [`risk::SCREEN_VALID_US`] of `now_us`.
pub fn current_risk_screen(
    doc: &PatientDoc,
    now_us: i64,
) -> Result<Option<RiskScreenEntry>, RecorderError> {
    Ok(doc
        .risk_screens()?
        .into_iter()
        .filter(|s| now_us - s.at_us <= risk::SCREEN_VALID_US)
        .max_by_key(|s| s.at_us))
}

/// Signs a record off (an advisory's acknowledgement, an adverse event's review) once: who and
/// when stay those of the first sign-off, so two tablets signing at once keep one.
fn sign_once(by_slot: &mut Option<String>, at_slot: &mut Option<i64>, by: String, now_us: i64) {
    if at_slot.is_none() {
        *at_slot = Some(now_us);
        *by_slot = Some(by);
    }
}

/// Checks an adverse event record: its vocabulary, its times (not before the session, not in
/// the future, not ending before its onset), complete interventions, death only as fatal.
fn check_adverse(e: &AdverseEntry, created_us: i64, now_us: i64) -> Result<(), RecorderError> {
    use vigil_shared::clinical::adverse::{
        AdverseEvent, EventOutcome, Intervention, Rescue, Seriousness,
    };
    let invalid = |e: &dyn std::fmt::Display| RecorderError::Invalid(e.to_string());
    for t in std::iter::once(e.onset_us).chain(e.end_us) {
        if !(created_us..=now_us).contains(&t) {
            return Err(RecorderError::Invalid(
                "an adverse event's onset and end are within the session, not in the future".into(),
            ));
        }
    }
    let interventions = e
        .interventions
        .iter()
        .map(|i| {
            Ok(Intervention {
                rescue: Rescue::parse(&i.rescue).map_err(|e| invalid(&e))?,
                dose: i.dose.clone(),
                route: i.route.clone(),
                at_us: i.at_us,
            })
        })
        .collect::<Result<Vec<_>, RecorderError>>()?;
    AdverseEvent {
        event: e.event.clone(),
        onset_us: e.onset_us,
        end_us: e.end_us,
        severity: clinical::Severity::parse(&e.severity).map_err(|e| invalid(&e))?,
        seriousness: e
            .seriousness
            .as_deref()
            .map(Seriousness::parse)
            .transpose()
            .map_err(|e| invalid(&e))?,
        interventions,
        outcome: EventOutcome::parse(&e.outcome).map_err(|e| invalid(&e))?,
        review: None,
    }
    .validate()
    .map_err(|e| invalid(&e))
}

/// What an event is checked against besides the session's own record.
struct EventRules {
    /// The site's infusion limits (rates).
    limits: clinical::InfusionLimits,
    /// The site's discharge rules (discharge).
    discharge: DischargeRules,
    /// Whether whoever acted is a clinician (their override counts).
    by_clinician: bool,
}

/// Checks an event against the session's record and the site's rules, then applies it, with
/// a clinician's override beside it when one let it through: a rate against the order and the
/// site's limits (a session started before orders were recorded is still held to the site's
/// limits), a discharge against the discharge gate.
fn apply_checked(
    doc: &mut SessionDoc,
    event: SessionEvent,
    rules: Option<&EventRules>,
    now_us: i64,
) -> Result<(), RecorderError> {
    let overridden = match (rules, &event) {
        (
            Some(rules),
            SessionEvent::Dose {
                rate_mg_per_h: Some(rate),
                override_reason,
                by,
                ..
            },
        ) => check_rate(doc, rules, *rate, override_reason.as_deref(), by, now_us)?,
        (
            Some(rules),
            SessionEvent::Discharge {
                aldrete_items,
                cadss_override_reason,
                by,
                ..
            },
        ) => check_discharge(
            doc,
            rules,
            aldrete_items,
            cadss_override_reason.as_deref(),
            by,
            now_us,
        )?,
        (Some(rules), SessionEvent::ReviewAdverse { .. }) if !rules.by_clinician => {
            return Err(RecorderError::Invalid(
                "only a clinician may review an adverse event".into(),
            ));
        }
        _ => None,
    };
    if let Some(entry) = overridden {
        doc.update_care(|c| c.overrides.push(entry))?;
    }
    apply_event(doc, event, now_us)
}

/// A rate against the session's order and the site's limits; the override to record when a
/// clinician's reason let it past the order's range.
fn check_rate(
    doc: &SessionDoc,
    rules: &EventRules,
    rate: f64,
    reason: Option<&str>,
    by: &str,
    now_us: i64,
) -> Result<Option<OverrideEntry>, RecorderError> {
    let refused =
        |e: &dyn std::fmt::Display| RecorderError::Invalid(format!("pump rate refused: {e}"));
    let Some(entry) = doc.care()?.order else {
        clinical::check_rate(rate, &rules.limits).map_err(|e| refused(&e))?;
        return Ok(None);
    };
    let reason = reason.unwrap_or("").trim();
    let order = entry.order();
    let over = RateOverride {
        reason,
        by_clinician: rules.by_clinician,
    };
    match check_rate_change(rate, &order, &rules.limits, Some(over)).map_err(|e| refused(&e))? {
        RateAccepted::WithinOrder => Ok(None),
        RateAccepted::Overridden => {
            let (min, max) = order.rate_mg_per_h;
            Ok(Some(OverrideEntry {
                id: new_id(),
                subject: format!("rate {rate} mg/h (order {min}-{max} mg/h)"),
                reason: reason.to_owned(),
                by: by.to_owned(),
                at_us: now_us,
            }))
        }
    }
}

/// A discharge home against the gate: 409 listing everything still missing. The override to
/// record when a clinician's reason let a CADSS over the site's limit through.
fn check_discharge(
    doc: &SessionDoc,
    rules: &EventRules,
    aldrete_items: &[i64],
    reason: Option<&str>,
    by: &str,
    now_us: i64,
) -> Result<Option<OverrideEntry>, RecorderError> {
    let meta = doc.meta()?;
    let care = doc.care()?;
    if meta.discharge.is_some() || care.disposition.is_some() {
        return Err(RecorderError::Conflict(
            "the session has already ended with a disposition".into(),
        ));
    }
    let reason = reason.unwrap_or("").trim();
    if !reason.is_empty() && !rules.by_clinician {
        return Err(RecorderError::Invalid(
            "only a clinician may override the CADSS limit".into(),
        ));
    }
    let facts = discharge::facts(
        &meta,
        &care,
        doc.checkin()?.as_ref(),
        clinical::Aldrete::from_items(aldrete_items),
        !reason.is_empty(),
        now_us,
    );
    let missing = discharge::discharge_gate(&rules.discharge, &facts);
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
        return Err(RecorderError::Conflict(format!(
            "discharge refused: {}",
            list.join("; ")
        )));
    }
    let limit = rules.discharge.max_cadss;
    Ok(match facts.cadss_post {
        Some(v) if v > limit => Some(OverrideEntry {
            id: new_id(),
            subject: format!("CADSS {v} over the site's limit of {limit}"),
            reason: reason.to_owned(),
            by: by.to_owned(),
            at_us: now_us,
        }),
        _ => None,
    })
}

fn apply_event(
    doc: &mut SessionDoc,
    event: SessionEvent,
    now_us: i64,
) -> Result<(), RecorderError> {
    match event {
        SessionEvent::Dose {
            action,
            rate_mg_per_h,
            by,
            override_reason: _,
        } => doc.update_meta(|m| {
            m.dose_events.push(DoseEvent {
                id: new_id(),
                at_us: now_us,
                action,
                rate_mg_per_h,
                by,
            })
        })?,
        SessionEvent::Observation {
            effect,
            severity,
            by,
        } => doc.update_meta(|m| {
            m.observations.push(Observation {
                id: new_id(),
                at_us: now_us,
                effect,
                severity,
                by,
            })
        })?,
        SessionEvent::Note { text, by } => {
            doc.append_note(&format!("[{by}] {text}\n"))?;
        }
        SessionEvent::Score {
            instrument,
            phase,
            value,
            by,
        } => doc.update_meta(|m| {
            m.scores.push(Score {
                id: new_id(),
                at_us: now_us,
                instrument,
                phase,
                value,
                by,
            })
        })?,
        SessionEvent::Acknowledge { advisory_id, by } => {
            doc.update_meta(|m| {
                let r = m.advisories.iter_mut().find(|r| r.id == advisory_id)?;
                sign_once(&mut r.acknowledged_by, &mut r.acknowledged_us, by, now_us);
                Some(())
            })?
            .ok_or_else(|| RecorderError::NotFound(format!("advisory {advisory_id}")))?;
        }
        SessionEvent::AdverseEvent {
            event,
            onset_us,
            end_us,
            severity,
            seriousness,
            interventions,
            outcome,
            by,
        } => {
            let onset_us = onset_us.unwrap_or(now_us);
            let interventions: Vec<InterventionEntry> = interventions
                .into_iter()
                .map(|i| InterventionEntry {
                    rescue: i.rescue,
                    dose: i.dose,
                    route: i.route,
                    at_us: i.at_us.unwrap_or(onset_us),
                })
                .collect();
            let entry = AdverseEntry {
                id: new_id(),
                event,
                onset_us,
                end_us,
                severity,
                seriousness,
                interventions,
                outcome,
                by,
                reviewed_by: None,
                reviewed_us: None,
            };
            check_adverse(&entry, doc.meta()?.created_us, now_us)?;
            doc.update_care(|c| c.adverse_events.push(entry))?
        }
        SessionEvent::ReviewAdverse { event_id, by } => {
            doc.update_care(|c| {
                let e = c.adverse_events.iter_mut().find(|e| e.id == event_id)?;
                sign_once(&mut e.reviewed_by, &mut e.reviewed_us, by, now_us);
                Some(())
            })?
            .ok_or_else(|| RecorderError::NotFound(format!("adverse event {event_id}")))?;
        }
        SessionEvent::Checkpoint {
            checkpoint,
            systolic,
            diastolic,
            sedation_scale,
            sedation,
            by,
        } => doc.update_care(|c| {
            c.checkpoints.push(CheckpointEntry {
                id: new_id(),
                checkpoint,
                at_us: now_us,
                systolic,
                diastolic,
                sedation_scale,
                sedation,
                by,
            })
        })?,
        SessionEvent::Discharge {
            aldrete_items,
            escort,
            escort_phone,
            escort_relationship,
            no_driving_ack,
            cadss_override_reason: _,
            by,
        } => {
            let aldrete = clinical::Aldrete::from_items(&aldrete_items)
                .and_then(|a| a.total())
                .map_or(0, i64::from);
            doc.update_meta(|m| {
                m.discharge = Some(Discharge {
                    at_us: now_us,
                    aldrete,
                    escort: escort.clone(),
                    no_driving_ack,
                    by: by.clone(),
                })
            })?;
            doc.update_care(|c| {
                c.disposition = Some(DispositionEntry {
                    code: "home".into(),
                    escort_name: escort,
                    escort_phone,
                    escort_relationship,
                    aldrete_items,
                    note: String::new(),
                    at_us: now_us,
                    by,
                })
            })?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::vitals::SampleBatch;

    const DAY_US: i64 = 86_400 * 1_000_000;
    const T0: i64 = 1_790_000_000_000_000;

    /// The prescriber's order every test session starts from (no staff list here, so any
    /// named prescriber is taken).
    fn order() -> Option<OrderInput> {
        Some(OrderInput {
            prescriber: "dr-kim".into(),
            indication: "depression".into(),
            rate_min_mg_per_h: None,
            rate_max_mg_per_h: None,
        })
    }

    /// This visit's risk screen with no positive answer.
    fn no_risk() -> Option<RiskScreenInput> {
        Some(RiskScreenInput {
            phq9_items: vec![2, 2, 2, 2, 2, 2, 1, 1, 0],
            cssrs: vec![false; 6],
        })
    }

    fn recorder(dir: &Path) -> Recorder {
        let cfg = RecorderConfig {
            site: "austin".into(),
            room: "1".into(),
            chunk_period_us: 10_000_000,
            thresholds: Thresholds::default(),
            expected_channels: vec![Channel::Hr],
            max_db_bytes: None,
        };
        Recorder::open(&dir.join("edge.db"), cfg).unwrap().0
    }

    /// Records a short finished session and returns its id.
    /// Registers a patient and starts a session for them at `start_us`; returns its id.
    fn start(r: &mut Recorder, start_us: i64) -> String {
        start_with(r, no_risk(), start_us).unwrap().id
    }

    /// Registers a patient and starts their session with `risk_screen` as this visit's.
    fn start_with(
        r: &mut Recorder,
        risk_screen: Option<RiskScreenInput>,
        start_us: i64,
    ) -> Result<SessionMeta, RecorderError> {
        let patient = r
            .create_patient(
                NewPatient {
                    given_name: "A".into(),
                    family_name: "B".into(),
                    birth_date: "1980-01-01".into(),
                    sex: String::new(),
                    phone: None,
                    screening: Screening::default(),
                    medications: vec![],
                    course: CoursePlan::default(),
                },
                start_us,
            )
            .unwrap();
        let protocol = vigil_shared::fixtures::protocol();
        r.start_session(
            NewSession {
                patient_id: patient.id,
                protocol,
                by: "n".into(),
                scenario: None,
                order: order(),
                risk_screen,
                screening: ScreeningAnswerInput::all_no(),
                flag_overrides: vec![],
            },
            start_us,
        )
    }

    #[test]
    fn screening_is_asked_per_flag_kept_30_days_pregnancy_daily_and_each_yes_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        seed_staff(&mut r);
        let day = 86_400 * 1_000_000;
        let patient = r
            .create_patient(
                NewPatient {
                    given_name: "A".into(),
                    family_name: "B".into(),
                    birth_date: "1980-01-01".into(),
                    sex: String::new(),
                    phone: None,
                    screening: Screening::default(),
                    medications: vec![],
                    course: CoursePlan::default(),
                },
                T0,
            )
            .unwrap()
            .id;
        let start = |r: &mut Recorder, screening, flag_overrides, by: &str, at| {
            r.start_session(
                NewSession {
                    patient_id: patient.clone(),
                    protocol: vigil_shared::fixtures::protocol(),
                    by: by.into(),
                    scenario: None,
                    order: order(),
                    risk_screen: no_risk(),
                    screening,
                    flag_overrides,
                },
                at,
            )
        };
        let refused = |result: Result<SessionMeta, RecorderError>| match result {
            Err(RecorderError::Conflict(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // Never asked: every flag is named.
        let m = refused(start(&mut r, vec![], vec![], "rn", T0));
        assert!(
            m.contains("Pregnancy: not asked") && m.contains("Breastfeeding: not asked"),
            "{m}"
        );
        // All answered "no" today, then tomorrow: pregnancy must be asked again.
        start(&mut r, ScreeningAnswerInput::all_no(), vec![], "rn", T0)
            .map(|m| {
                r.stop_session(
                    &m.id,
                    StopSession {
                        by: "rn".into(),
                        aborted: true,
                        disposition: None,
                        note: String::new(),
                    },
                    T0 + 60_000_000,
                )
            })
            .unwrap()
            .unwrap();
        let m = refused(start(&mut r, vec![], vec![], "rn", T0 + day));
        assert_eq!(
            m,
            "start blocked by screening: Pregnancy: not asked today; ask at every visit"
        );
        // Pregnancy asked, the rest 31 days old: stale.
        let pregnancy_no = || {
            vec![ScreeningAnswerInput {
                flag: "pregnancy".into(),
                yes: false,
            }]
        };
        let m = refused(start(&mut r, pregnancy_no(), vec![], "rn", T0 + 31 * day));
        assert!(
            m.contains("Severe liver disease: answer is more than 30 days old"),
            "{m}"
        );
        // Asked again, with a history of psychosis: a nurse's reason does not pass it, and a
        // reason for one flag does not cover another.
        let mut answers = ScreeningAnswerInput::all_no();
        answers[2].yes = true;
        assert_eq!(answers[2].flag, "psychosis_history");
        let reason = |flag: &str| {
            vec![FlagOverrideInput {
                flag: flag.into(),
                reason: "stable for ten years, psychiatrist agrees".into(),
            }]
        };
        let at = T0 + 31 * day;
        let m = refused(start(
            &mut r,
            answers.clone(),
            reason("psychosis_history"),
            "rn",
            at,
        ));
        assert!(
            m.contains("History of psychosis: only a clinician may override"),
            "{m}"
        );
        let m = refused(start(&mut r, vec![], reason("current_mania"), "dr-kim", at));
        assert!(
            m.contains("History of psychosis: a clinician must override"),
            "{m}"
        );
        let meta = start(&mut r, vec![], reason("psychosis_history"), "dr-kim", at).unwrap();
        let doc = store::load_typed::<SessionDoc>(&r.conn, &meta.id)
            .unwrap()
            .unwrap();
        let care = doc.care().unwrap();
        assert_eq!(
            care.screening.len(),
            ScreeningFlag::ALL.len(),
            "every flag's answer kept"
        );
        assert_eq!(care.overrides.len(), 1, "only the flag that needed it");
        assert_eq!(
            (
                care.overrides[0].subject.as_str(),
                care.overrides[0].by.as_str()
            ),
            ("psychosis_history", "dr-kim")
        );
    }

    #[test]
    fn a_positive_risk_screen_blocks_the_start_until_a_clinician_decides_to_proceed() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        seed_staff(&mut r);
        let hour = 3_600 * 1_000_000;
        // Not screened at this visit: refused.
        let e = start_with(&mut r, None, T0).unwrap_err();
        assert!(e.to_string().contains("has not been done"), "{e}");
        // Item 9 answered "several days" and a wish to be dead: blocked until assessed; the
        // answers are kept with the patient.
        let positive = RiskScreenInput {
            phq9_items: vec![2, 2, 1, 3, 1, 2, 1, 0, 1],
            cssrs: vec![true, false, false, false, false, false],
        };
        let e = start_with(&mut r, Some(positive.clone()), T0).unwrap_err();
        assert!(
            matches!(&e, RecorderError::Conflict(m) if m.contains("positive suicide-risk answer (low)")),
            "{e}"
        );
        let screened: Vec<(String, RiskScreenEntry)> =
            store::document_ids(&r.conn, DocKind::Patient.as_str())
                .unwrap()
                .into_iter()
                .filter_map(|id| {
                    let doc = store::load_typed::<PatientDoc>(&r.conn, &id).unwrap()?;
                    Some((id, current_risk_screen(&doc, T0 + hour).unwrap()?))
                })
                .collect();
        assert_eq!(screened.len(), 1, "only the second patient was screened");
        let (pid, screen) = screened.into_iter().next().unwrap();
        assert_eq!(screen.phq9_items, positive.phq9_items);
        let assess = |decision: &str, by: &str| RiskAssessmentInput {
            decision: decision.into(),
            note: "passive ideation, no plan; safety plan reviewed".into(),
            by: by.into(),
        };
        // A nurse may not assess; an unknown decision is refused.
        let e = r
            .assess_risk(&pid, assess("proceed", "rn"), T0 + hour)
            .unwrap_err();
        assert!(e.to_string().contains("only a clinician"), "{e}");
        let e = r
            .assess_risk(&pid, assess("maybe", "dr-kim"), T0 + hour)
            .unwrap_err();
        assert!(e.to_string().contains("not proceed, defer or refer"), "{e}");
        // Deferred: still no infusion today.
        r.assess_risk(&pid, assess("defer", "dr-kim"), T0 + hour)
            .unwrap();
        let start_again = |r: &mut Recorder, at| {
            r.start_session(
                NewSession {
                    patient_id: pid.clone(),
                    protocol: vigil_shared::fixtures::protocol(),
                    by: "rn".into(),
                    scenario: None,
                    order: order(),
                    // The same answers again: the screen (and its assessment) stays.
                    risk_screen: Some(positive.clone()),
                    screening: ScreeningAnswerInput::all_no(),
                    flag_overrides: vec![],
                },
                at,
            )
        };
        let e = start_again(&mut r, T0 + 2 * hour).unwrap_err();
        assert!(e.to_string().contains("decided: defer"), "{e}");
        // Proceed: the start goes ahead, and the session's care record keeps the screen.
        r.assess_risk(&pid, assess("proceed", "dr-kim"), T0 + 2 * hour)
            .unwrap();
        let meta = start_again(&mut r, T0 + 3 * hour).unwrap();
        let doc = store::load_typed::<SessionDoc>(&r.conn, &meta.id)
            .unwrap()
            .unwrap();
        let risk = doc.care().unwrap().risk.unwrap();
        assert_eq!(risk.assessment.map(|a| a.decision), Some("proceed".into()));
        // Tomorrow's visit needs a screen of its own.
        let stop = StopSession {
            by: "rn".into(),
            aborted: true,
            disposition: None,
            note: String::new(),
        };
        r.stop_session(&meta.id, stop, T0 + 4 * hour).unwrap();
        let e = start_again(&mut r, T0 + 20 * hour).unwrap_err();
        assert!(
            e.to_string().contains("needs a clinician's assessment"),
            "{e}"
        );
    }

    fn session(r: &mut Recorder, start_us: i64) -> String {
        let id = start(r, start_us);
        let samples = (0..30)
            .map(|i| Sample::scalar(start_us + i * 1_000_000, 70))
            .collect();
        r.ingest(vec![SourceEvent::Samples(SampleBatch {
            channel: Channel::Hr,
            samples,
        })]);
        r.commit(start_us + 30_000_000).unwrap();
        r.stop_session(
            &id,
            StopSession {
                by: "n".into(),
                aborted: false,
                disposition: None,
                note: String::new(),
            },
            start_us + 31_000_000,
        )
        .unwrap();
        id
    }

    #[test]
    fn a_completed_session_is_an_infusion_done_in_the_patients_course_and_an_aborted_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        let patient_of = |r: &Recorder, session: &str| {
            let (_, doc) = store::load_document(&r.conn, session).unwrap().unwrap();
            SessionDoc::from_automerge(doc)
                .unwrap()
                .meta()
                .unwrap()
                .patient_id
        };
        let done_of = |r: &Recorder, patient: &str| {
            let (_, doc) = store::load_document(&r.conn, patient).unwrap().unwrap();
            PatientDoc::from_automerge(doc)
                .unwrap()
                .infusions_done()
                .unwrap()
        };
        let completed = session(&mut r, T0);
        let patient = patient_of(&r, &completed);
        assert_eq!(
            done_of(&r, &patient),
            vec![vigil_shared::doc::InfusionDone {
                session_id: completed.clone(),
                started_us: T0,
                room: "1".into(),
            }]
        );
        let aborted = start(&mut r, T0 + DAY_US);
        r.stop_session(
            &aborted,
            StopSession {
                by: "n".into(),
                aborted: true,
                disposition: None,
                note: String::new(),
            },
            T0 + DAY_US + 60_000_000,
        )
        .unwrap();
        let other = patient_of(&r, &aborted);
        assert_eq!(
            done_of(&r, &other),
            vec![],
            "an aborted session is not done"
        );
    }

    /// Puts austin's staff list (a clinician and a nurse) in the recorder's database.
    fn seed_staff(r: &mut Recorder) {
        use vigil_shared::doc::{SiteConfig, StaffMember};
        let member = |id: &str, role: &str| StaffMember {
            id: id.into(),
            name: id.into(),
            role: role.into(),
            pin_hash: String::new(),
        };
        let config = SiteConfig {
            site: "austin".into(),
            name: "Austin".into(),
            region: "central".into(),
            rooms: vec![],
            thresholds: Thresholds::default(),
            staff: vec![member("dr-kim", "clinician"), member("rn", "nurse")],
        };
        let bytes = SiteConfigDoc::create(&config).unwrap().automerge().save();
        let tx = store::write_tx(&mut r.conn).unwrap();
        store::insert_document(
            &tx,
            "austin",
            DocKind::SiteConfig.as_str(),
            "austin",
            &bytes,
            0,
        )
        .unwrap();
        tx.commit().unwrap();
    }

    fn go_home(by: &str, cadss_override: Option<&str>) -> SessionEvent {
        SessionEvent::Discharge {
            aldrete_items: vec![2, 2, 2, 2, 1],
            escort: "Marco Diaz".into(),
            escort_phone: "+1 512 555 0100".into(),
            escort_relationship: "brother".into(),
            no_driving_ack: true,
            cadss_override_reason: cadss_override.map(str::to_owned),
            by: by.into(),
        }
    }

    fn bp_checkpoint(checkpoint: &str, systolic: i64, diastolic: i64) -> SessionEvent {
        SessionEvent::Checkpoint {
            checkpoint: checkpoint.into(),
            systolic,
            diastolic,
            sedation_scale: "moaas".into(),
            sedation: 5,
            by: "rn".into(),
        }
    }

    fn refusal(r: &mut Recorder, id: &str, event: SessionEvent, at_us: i64) -> String {
        match r.add_event(id, event, at_us) {
            Err(RecorderError::Conflict(m) | RecorderError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_ledger_gates_the_infusion_on_its_draw_and_the_discharge_on_its_reconciliation() {
        use vigil_shared::ledger::{EntryKind, LossKind, Lot};
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        seed_staff(&mut r);
        let min = 60 * 1_000_000;
        // A site that does not keep its stock here: nothing is gated.
        let free = start(&mut r, T0);
        let dose = |action, rate| SessionEvent::Dose {
            action,
            rate_mg_per_h: Some(rate),
            override_reason: None,
            by: "rn".into(),
        };
        r.add_event(&free, dose(DoseAction::Start, 52.5), T0 + min)
            .unwrap();
        r.stop_session(
            &free,
            StopSession {
                by: "rn".into(),
                aborted: true,
                disposition: None,
                note: String::new(),
            },
            T0 + 2 * min,
        )
        .unwrap();

        let receipt = LedgerInput::Receipt {
            lot: Lot {
                id: "L1".into(),
                ndc: "0409-2051-05".into(),
                product: "Ketamine HCl 50 mg/mL, 10 mL vial".into(),
                lot_number: "LN-1".into(),
                mg_per_ml: 50.0,
                expiry: "2030-01-01".into(),
            },
            ml: 10.0,
            supplier: "McKesson".into(),
            invoice: "INV-9".into(),
        };
        let unwitnessed = r.ledger_append(receipt.clone(), "rn", None, T0 + 3 * min);
        assert!(
            matches!(&unwitnessed, Err(RecorderError::Conflict(m)) if m.contains("witness")),
            "{unwitnessed:?}"
        );
        let entry = r
            .ledger_append(receipt, "rn", Some("dr-kim".into()), T0 + 3 * min)
            .unwrap();
        assert_eq!(entry.place, "safe");

        // Now the draw comes first.
        let id = start(&mut r, T0 + 10 * min);
        let m = refusal(&mut r, &id, dose(DoseAction::Start, 52.5), T0 + 11 * min);
        assert!(m.contains("record the draw first"), "{m}");
        let draw = LedgerInput::Draw {
            lot_id: "L1".into(),
            ml: 1.0,
            session_id: id.clone(),
        };
        assert!(matches!(
            r.ledger_append(
                LedgerInput::Draw {
                    lot_id: "L1".into(),
                    ml: 11.0,
                    session_id: id.clone()
                },
                "rn",
                None,
                T0 + 11 * min
            ),
            Err(RecorderError::Conflict(m)) if m.contains("below zero")
        ));
        let short = LedgerInput::Draw {
            lot_id: "L1".into(),
            ml: 0.5,
            session_id: id.clone(),
        };
        assert!(matches!(
            r.ledger_append(short, "rn", None, T0 + 11 * min),
            Err(RecorderError::Conflict(m)) if m.contains("total dose is 35.0 mg") && m.contains("at least 0.70 mL")
        ));
        let d = r.ledger_append(draw, "rn", None, T0 + 11 * min).unwrap();
        assert_eq!(d.place, "room 1");
        r.add_event(&id, dose(DoseAction::Start, 52.5), T0 + 12 * min)
            .unwrap();
        r.add_event(&id, dose(DoseAction::Stop, 0.0), T0 + 52 * min)
            .unwrap();
        // The delivered dose: 52.5 mg/h for 40 min = 35 mg = 0.7 mL of 50 mg/mL.
        let given = r
            .ledger_append(
                LedgerInput::Administered {
                    session_id: id.clone(),
                },
                "rn",
                None,
                T0 + 53 * min,
            )
            .unwrap();
        assert!(
            matches!(given.kind, EntryKind::Administered { ul: 700, .. }),
            "{given:?}"
        );
        let m = refusal(&mut r, &id, go_home("rn", None), T0 + 54 * min);
        assert!(
            m.contains("0.30 mL unaccounted for") && m.contains("witnessed"),
            "{m}"
        );
        // A witnessed loss of the remainder (the syringe was dropped) accounts for it.
        r.ledger_append(
            LedgerInput::Loss {
                lot_id: "L1".into(),
                ml: 0.3,
                session_id: Some(id.clone()),
                kind: LossKind::Loss,
                reason: "syringe dropped before the waste".into(),
            },
            "rn",
            Some("dr-kim".into()),
            T0 + 55 * min,
        )
        .unwrap();
        let m = refusal(&mut r, &id, go_home("rn", None), T0 + 56 * min);
        assert!(
            !m.contains("ledger"),
            "only the clinical rules are left: {m}"
        );
        let entries = r.ledger_entries().unwrap();
        assert_eq!(
            vigil_shared::ledger::balances(&entries)["L1"],
            9_000,
            "the safe lost only the draw"
        );
        assert!(matches!(
            r.ledger_append(
                LedgerInput::Draw {
                    lot_id: "L1".into(),
                    ml: 1.0,
                    session_id: "no-such-session".into()
                },
                "rn",
                None,
                T0 + 57 * min
            ),
            Err(RecorderError::NotFound(_))
        ));
    }

    #[test]
    fn discharge_waits_for_the_stop_the_observation_a_fresh_pressure_and_a_low_cadss() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        seed_staff(&mut r);
        let min = 60 * 1_000_000;
        let id = start(&mut r, T0);
        let dose = |action, rate| SessionEvent::Dose {
            action,
            rate_mg_per_h: Some(rate),
            override_reason: None,
            by: "rn".into(),
        };
        r.add_event(&id, dose(DoseAction::Start, 52.5), T0 + min)
            .unwrap();

        // The pump running: refused, with everything else that is missing named too.
        let m = refusal(&mut r, &id, go_home("rn", None), T0 + 2 * min);
        for part in ["has not been stopped", "CADSS", "take a blood pressure"] {
            assert!(m.contains(part), "{m}");
        }
        r.add_event(&id, dose(DoseAction::Stop, 0.0), T0 + 41 * min)
            .unwrap();
        let cadss = SessionEvent::Score {
            instrument: "cadss".into(),
            phase: "post".into(),
            value: 6,
            by: "rn".into(),
        };
        r.add_event(&id, cadss, T0 + 44 * min).unwrap();
        r.add_event(
            &id,
            bp_checkpoint("before_discharge", 128, 82),
            T0 + 45 * min,
        )
        .unwrap();

        // 19 minutes after the stop, with a 15-minute-old pressure and a CADSS of 6.
        let m = refusal(&mut r, &id, go_home("rn", None), T0 + 60 * min);
        for part in [
            "observe 11 more min",
            "the last blood pressure is 15 min old",
            "CADSS 6 is over the site's limit of 4",
        ] {
            assert!(m.contains(part), "{m}");
        }
        // A checkpoint out of range is refused, naming the range.
        let m = refusal(
            &mut r,
            &id,
            bp_checkpoint("before_discharge", 80, 120),
            T0 + 70 * min,
        );
        assert!(m.contains("out of range"), "{m}");
        let m = refusal(
            &mut r,
            &id,
            bp_checkpoint("at_lunch", 128, 82),
            T0 + 70 * min,
        );
        assert!(m.contains("checkpoint"), "{m}");
        r.add_event(
            &id,
            bp_checkpoint("before_discharge", 132, 84),
            T0 + 72 * min,
        )
        .unwrap();
        // Only the CADSS remains; the nurse's reason does not pass it, the clinician's does.
        let m = refusal(
            &mut r,
            &id,
            go_home("rn", Some("calm, oriented")),
            T0 + 75 * min,
        );
        assert!(m.contains("only a clinician"), "{m}");
        let m = refusal(&mut r, &id, go_home("rn", None), T0 + 75 * min);
        assert_eq!(
            m,
            "discharge refused: CADSS 6 is over the site's limit of 4; a clinician may override with a reason"
        );
        let meta = r
            .add_event(
                &id,
                go_home("dr-kim", Some("calm, oriented, walking")),
                T0 + 75 * min,
            )
            .unwrap();
        assert_eq!(meta.discharge.as_ref().map(|d| d.aldrete), Some(9));
        let doc = store::load_typed::<SessionDoc>(&r.conn, &id)
            .unwrap()
            .unwrap();
        let care = doc.care().unwrap();
        let home = care.disposition.unwrap();
        assert_eq!(
            (
                home.code.as_str(),
                home.escort_phone.as_str(),
                home.aldrete_items
            ),
            ("home", "+1 512 555 0100", vec![2, 2, 2, 2, 1])
        );
        assert_eq!(care.overrides.len(), 1);
        assert_eq!(care.overrides[0].by, "dr-kim");
        assert!(care.overrides[0].subject.contains("CADSS 6"));
        assert_eq!(
            care.checkpoints.len(),
            2,
            "the refused ones are not recorded"
        );
        // Once home, there is no second discharge.
        let m = refusal(&mut r, &id, go_home("rn", None), T0 + 80 * min);
        assert!(m.contains("already ended"), "{m}");
    }

    #[test]
    fn adverse_events_are_checked_and_reviewed_only_by_a_clinician() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        seed_staff(&mut r);
        let min = 60 * 1_000_000;
        let id = start(&mut r, T0);
        let event =
            |seriousness: Option<&str>, outcome: &str, onset_us| SessionEvent::AdverseEvent {
                event: "laryngospasm".into(),
                onset_us: Some(onset_us),
                end_us: None,
                severity: "severe".into(),
                seriousness: seriousness.map(str::to_owned),
                interventions: vec![InterventionInput {
                    rescue: "oxygen".into(),
                    dose: "4 L/min".into(),
                    route: "face mask".into(),
                    at_us: None,
                }],
                outcome: outcome.into(),
                by: "rn".into(),
            };
        // Each refusal names what is wrong; nothing is recorded.
        for (e, says) in [
            (event(Some("death"), "resolved", T0 + min), "fatal"),
            (event(None, "better", T0 + min), "unknown outcome"),
            (
                event(Some("bad"), "resolved", T0 + min),
                "unknown seriousness",
            ),
            (event(None, "resolved", T0 + 90 * min), "not in the future"),
            (event(None, "resolved", T0 - 90 * min), "within the session"),
        ] {
            let m = refusal(&mut r, &id, e, T0 + 10 * min);
            assert!(m.contains(says), "{says}: {m}");
        }
        let meta = r
            .add_event(
                &id,
                event(Some("life_threatening"), "resolved", T0 + 5 * min),
                T0 + 10 * min,
            )
            .unwrap();
        let doc = store::load_typed::<SessionDoc>(&r.conn, &meta.id)
            .unwrap()
            .unwrap();
        let recorded = doc.care().unwrap().adverse_events;
        assert_eq!(recorded.len(), 1);
        assert_eq!(
            recorded[0].interventions[0].at_us,
            T0 + 5 * min,
            "given at onset"
        );
        assert_eq!(doc.care().unwrap().attention()[0].kind, "serious_event");
        let review = |by: &str| SessionEvent::ReviewAdverse {
            event_id: recorded[0].id.clone(),
            by: by.into(),
        };
        let m = refusal(&mut r, &id, review("rn"), T0 + 20 * min);
        assert!(m.contains("only a clinician"), "{m}");
        r.add_event(&id, review("dr-kim"), T0 + 20 * min).unwrap();
        let doc = store::load_typed::<SessionDoc>(&r.conn, &id)
            .unwrap()
            .unwrap();
        let care = doc.care().unwrap();
        assert_eq!(
            care.adverse_events[0].reviewed_by.as_deref(),
            Some("dr-kim")
        );
        assert!(care.attention().is_empty(), "reviewed: off the list");
        let missing = SessionEvent::ReviewAdverse {
            event_id: "nope".into(),
            by: "dr-kim".into(),
        };
        assert!(matches!(
            r.add_event(&id, missing, T0 + 21 * min),
            Err(RecorderError::NotFound(_))
        ));
    }

    #[test]
    fn an_ems_transfer_ends_the_session_without_the_discharge_criteria() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        let id = start(&mut r, T0);
        let stop = |disposition: &str, note: &str| StopSession {
            by: "dr-kim".into(),
            aborted: false,
            disposition: Some(disposition.into()),
            note: note.into(),
        };
        // Refused, and the session still runs: a disposition needs what happened, and going
        // home is a discharge, not a disposition that skips the criteria.
        for (code, note) in [("ems_transfer", " "), ("home", "left with her sister")] {
            let err = r
                .stop_session(&id, stop(code, note), T0 + 60_000_000)
                .unwrap_err();
            assert!(matches!(err, RecorderError::Invalid(_)), "{code}: {err}");
        }
        assert!(r.status().session.is_some());
        let meta = r
            .stop_session(
                &id,
                stop("ems_transfer", "chest pain at 20 min; EMS called 14:05"),
                T0 + 25 * 60_000_000,
            )
            .unwrap();
        assert_eq!(meta.state, SessionState::Aborted);
        assert!(r.status().session.is_none());
        let (_, doc) = store::load_document(&r.conn, &id).unwrap().unwrap();
        let care = SessionDoc::from_automerge(doc).unwrap().care().unwrap();
        let d = care.disposition.expect("disposition recorded");
        assert_eq!((d.code.as_str(), d.by.as_str()), ("ems_transfer", "dr-kim"));
        assert_eq!(d.note, "chest pain at 20 min; EMS called 14:05");
    }

    /// Marks a document confirmed by the cloud at its current version.
    fn confirm(r: &mut Recorder, id: &str) {
        let version: i64 = r
            .conn
            .query_row("SELECT version FROM documents WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .unwrap();
        let tx = store::write_tx(&mut r.conn).unwrap();
        store::save_sync_record(&tx, id, &[], &[], Some(version), T0).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn retention_deletes_only_old_sessions_the_cloud_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        let confirmed = session(&mut r, T0);
        let unconfirmed = session(&mut r, T0 + DAY_US);
        let changed_after = session(&mut r, T0 + 2 * DAY_US);
        confirm(&mut r, &confirmed);
        confirm(&mut r, &changed_after);
        // A late note after the cloud confirmed: that change is not in the cloud yet.
        r.add_event(
            &changed_after,
            SessionEvent::Note {
                text: "late".into(),
                by: "n".into(),
            },
            T0 + 3 * DAY_US,
        )
        .unwrap();

        let retention = 30 * DAY_US;
        assert!(
            r.purge(T0 + 29 * DAY_US, retention).unwrap().is_empty(),
            "too recent"
        );
        let purged = r.purge(T0 + 90 * DAY_US, retention).unwrap();
        assert_eq!(purged, vec![confirmed.clone()]);
        assert!(store::load_document(&r.conn, &confirmed).unwrap().is_none());
        for kept in [&unconfirmed, &changed_after] {
            assert!(
                store::load_document(&r.conn, kept).unwrap().is_some(),
                "{kept} kept"
            );
        }
        let rows: i64 = r
            .conn
            .query_row(
                "SELECT count(*) FROM doc_changes WHERE doc_id = ?1",
                [&confirmed],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
        // Once the cloud confirms the rest, they go too.
        confirm(&mut r, &unconfirmed);
        confirm(&mut r, &changed_after);
        let mut purged = r.purge(T0 + 90 * DAY_US, retention).unwrap();
        purged.sort();
        let mut expected = vec![unconfirmed, changed_after];
        expected.sort();
        assert_eq!(purged, expected);
    }

    #[test]
    fn a_sample_older_than_its_channel_is_refused_and_recording_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        start(&mut r, T0);
        let hr = |t: i64| Sample::scalar(T0 + t, 70);
        r.ingest(vec![SourceEvent::Samples(SampleBatch {
            channel: Channel::Hr,
            samples: vec![hr(10), hr(5), hr(12)],
        })]);
        r.ingest(vec![SourceEvent::Samples(SampleBatch {
            channel: Channel::Hr,
            samples: vec![hr(11), hr(12), hr(20)],
        })]);
        r.commit(T0 + 1_000_000).expect("the commit goes through");
        // 10, 12, then 12 (a tie is allowed) and 20; 5 and 11 went backwards.
        assert_eq!(r.samples_committed(), 4);
    }

    #[test]
    fn the_session_being_recorded_is_never_purged() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        let old = session(&mut r, T0);
        confirm(&mut r, &old);
        let patient = store::document_ids(&r.conn, DocKind::Patient.as_str())
            .unwrap()
            .remove(0);
        let protocol = vigil_shared::fixtures::protocol();
        let running = r
            .start_session(
                NewSession {
                    patient_id: patient,
                    protocol,
                    by: "n".into(),
                    scenario: None,
                    order: order(),
                    risk_screen: no_risk(),
                    screening: ScreeningAnswerInput::all_no(),
                    flag_overrides: vec![],
                },
                T0 + DAY_US,
            )
            .unwrap()
            .id;
        confirm(&mut r, &running);
        assert_eq!(r.purge(T0 + 900 * DAY_US, 0).unwrap(), vec![old]);
        assert_eq!(r.active_session(), Some(running.as_str()));
        assert!(store::load_document(&r.conn, &running).unwrap().is_some());
    }

    /// `n` samples of 250 Hz ECG from `start_us`.
    fn ecg(start_us: i64, n: i64) -> SourceEvent {
        let samples = (0..n)
            .map(|i| {
                // Values that don't compress (a hash of the index), so sizes are honest.
                let mut h = (i as u64 ^ start_us as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
                h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                h ^= h >> 31;
                Sample::scalar(start_us + i * 4_000, ((h >> 40) % 2_000) as i32 - 1_000)
            })
            .collect();
        SourceEvent::Samples(SampleBatch {
            channel: Channel::Ecg,
            samples,
        })
    }

    fn db_bytes(r: &Recorder) -> u64 {
        let pages: i64 = r
            .conn
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        let size: i64 = r
            .conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        (pages * size) as u64
    }

    #[test]
    fn a_full_disk_raises_an_advisory_loses_nothing_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        // An earlier session with ten minutes of ECG fills most of the space.
        let old = session(&mut r, T0);
        r.active = None;
        let patient = store::document_ids(&r.conn, DocKind::Patient.as_str())
            .unwrap()
            .remove(0);
        let protocol = vigil_shared::fixtures::protocol();
        let start = |r: &mut Recorder, at| {
            r.start_session(
                NewSession {
                    patient_id: patient.clone(),
                    protocol: protocol.clone(),
                    by: "n".into(),
                    scenario: None,
                    order: order(),
                    risk_screen: no_risk(),
                    screening: ScreeningAnswerInput::all_no(),
                    flag_overrides: vec![],
                },
                at,
            )
            .unwrap()
            .id
        };
        let filler = start(&mut r, T0 + DAY_US);
        // Sixteen minutes of ECG, four times what the session below will need.
        for k in 0..4 {
            r.ingest(vec![ecg(T0 + DAY_US + k * 240_000_000, 60_000)]);
            r.commit(T0 + DAY_US + (k + 1) * 240_000_000 + 10_000_000)
                .unwrap();
        }
        r.stop_session(
            &filler,
            StopSession {
                by: "n".into(),
                aborted: false,
                disposition: None,
                note: String::new(),
            },
            T0 + DAY_US + 700_000_000,
        )
        .unwrap();
        // The disk has 16 KiB left (and no free pages inside the file): far less than the
        // next four minutes of ECG need.
        r.conn.execute_batch("VACUUM").unwrap();
        store::limit_size(&r.conn, db_bytes(&r) + 16 * 1024).unwrap();

        let t1 = T0 + 2 * DAY_US;
        let running = start(&mut r, t1);
        // Four minutes of ECG, under MAX_PENDING_SAMPLES: all of it can wait in memory.
        r.ingest(vec![ecg(t1, 60_000)]);
        let err = r.commit(t1 + 700_000_000).unwrap_err();
        assert!(
            matches!(&err, RecorderError::Store(e) if e.is_full()),
            "{err}"
        );
        let status = r.status();
        assert!(status.disk_full);
        let advisories = status.session.expect("still recording").active_advisories;
        assert!(
            advisories.iter().any(|a| a.kind == STORAGE_FULL),
            "{advisories:?}"
        );
        // Nothing the cloud lacks may go: with no session confirmed, the disk stays full.
        assert!(r.commit(t1 + 701_000_000).is_err());

        // The cloud confirms the filler session; the next commit makes room and succeeds.
        confirm(&mut r, &filler);
        r.commit(t1 + 702_000_000).unwrap();
        assert!(!r.status().disk_full);
        assert!(
            store::load_document(&r.conn, &filler).unwrap().is_none(),
            "the confirmed session made room"
        );
        assert!(
            store::load_document(&r.conn, &old).unwrap().is_some(),
            "an unconfirmed session stays"
        );
        r.stop_session(
            &running,
            StopSession {
                by: "n".into(),
                aborted: false,
                disposition: None,
                note: String::new(),
            },
            t1 + 703_000_000,
        )
        .unwrap();

        let check: String = r
            .conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let view = crate::reads::session_view(&r.conn, &running)
            .unwrap()
            .unwrap();
        assert_eq!(
            view.channels[&Channel::Ecg].samples,
            60_000,
            "every sample held in memory was kept"
        );
        let storage: Vec<_> = view
            .meta
            .advisories
            .iter()
            .filter(|a| a.kind == STORAGE_FULL)
            .collect();
        assert_eq!(storage.len(), 1);
        assert!(
            storage[0].cleared_us.is_some(),
            "cleared when space returned: {storage:?}"
        );
    }

    #[test]
    fn pending_samples_are_bounded_and_the_excess_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        start(&mut r, T0);
        // More samples than the buffer holds arrive before any commit (a commit that keeps
        // failing): memory stays bounded, and the status says how many were dropped.
        let excess = 1_000;
        let samples: Vec<Sample> = (0..(MAX_PENDING_SAMPLES + excess) as i64)
            .map(|i| Sample::scalar(T0 + i * 4_000, 70))
            .collect();
        let dropped = r.ingest(vec![SourceEvent::Samples(SampleBatch {
            channel: Channel::Ecg,
            samples,
        })]);
        assert_eq!(dropped, excess);
        assert_eq!(r.status().samples_dropped, excess as u64);
        let pending = r.active.as_ref().unwrap().open[&Channel::Ecg].pending.len();
        assert_eq!(pending, MAX_PENDING_SAMPLES);
        // Once committed, the buffer takes samples again.
        r.commit(T0 + 300_000_000).unwrap();
        let more = r.ingest(vec![SourceEvent::Samples(SampleBatch {
            channel: Channel::Ecg,
            samples: vec![Sample::scalar(T0 + 300_000_000, 70)],
        })]);
        assert_eq!(more, 0);
        assert_eq!(r.status().samples_dropped, excess as u64);
    }
}
