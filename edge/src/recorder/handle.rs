//! The recorder thread's front door: typed async methods that queue a [`Command`] and wait for
//! the answer, as mini-redis's client fronts its connection task. The JSON API, the room
//! screen and the demo all hold a [`Handle`]; only the recorder loop (`app.rs`) sees
//! commands.
//!
//! The queue is bounded ([`crate::app::COMMAND_QUEUE`]): a full queue is answered at once with
//! [`RecorderError::Busy`] instead of making a browser wait behind a stuck disk.

use std::sync::mpsc::{SyncSender, TrySendError};

use tokio::sync::oneshot;
use vigil_shared::doc::{CheckIn, PatientRecord, SessionMeta};

use vigil_shared::care::{RiskScreenEntry, ScreeningEntry};

use super::{
    LedgerInput, NewPatient, NewSession, PatientUpdate, RecorderError, RiskAssessmentInput,
    RiskScreenInput, ScreeningAnswerInput, SessionEvent, StopSession,
};

/// A request to the recorder thread, with where to answer.
#[derive(Debug)]
pub enum Command {
    /// Register a patient.
    CreatePatient(NewPatient, Reply<PatientRecord>),
    /// Change a patient's record.
    UpdatePatient(String, PatientUpdate, Reply<PatientRecord>),
    /// Record this visit's suicide-risk screen for a patient, asked by the named staff member.
    RecordRiskScreen(String, RiskScreenInput, String, Reply<RiskScreenEntry>),
    /// Record a check-in's screening answers for a patient, asked by the named staff member.
    RecordScreening(
        String,
        Vec<ScreeningAnswerInput>,
        String,
        Reply<Vec<ScreeningEntry>>,
    ),
    /// Record a clinician's assessment of a patient's risk screen.
    AssessRisk(String, RiskAssessmentInput, Reply<RiskScreenEntry>),
    /// Start a session (`Some` check-in: the room screen's record of it).
    StartSession(NewSession, Option<CheckIn>, Reply<SessionMeta>),
    /// Record an event.
    AddEvent(String, SessionEvent, Reply<SessionMeta>),
    /// Stop a session.
    StopSession(String, StopSession, Reply<SessionMeta>),
    /// Append an entry to the site's ledger, by the named staff member, witnessed by the
    /// second (whose PIN the caller checked).
    LedgerAppend(
        LedgerInput,
        String,
        Option<String>,
        Reply<vigil_shared::ledger::Entry>,
    ),
    /// Commit and stop the recorder thread.
    Shutdown,
}

/// Where the recorder answers.
pub type Reply<T> = oneshot::Sender<Result<T, RecorderError>>;

/// A cheap, cloneable way to ask the recorder thread for something.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: SyncSender<Command>,
}

impl Handle {
    /// A handle over the recorder loop's command queue.
    pub fn new(commands: SyncSender<Command>) -> Handle {
        Handle { commands }
    }

    /// Registers a patient.
    pub async fn create_patient(&self, input: NewPatient) -> Result<PatientRecord, RecorderError> {
        self.call(|r| Command::CreatePatient(input, r)).await
    }

    /// Changes a patient's record.
    pub async fn update_patient(
        &self,
        id: String,
        update: PatientUpdate,
    ) -> Result<PatientRecord, RecorderError> {
        self.call(|r| Command::UpdatePatient(id, update, r)).await
    }

    /// Records this visit's suicide-risk screen for a patient, asked by `by`.
    pub async fn record_risk_screen(
        &self,
        patient: String,
        input: RiskScreenInput,
        by: String,
    ) -> Result<RiskScreenEntry, RecorderError> {
        self.call(|r| Command::RecordRiskScreen(patient, input, by, r))
            .await
    }

    /// Records a check-in's screening answers for a patient, asked by `by`.
    pub async fn record_screening(
        &self,
        patient: String,
        answers: Vec<ScreeningAnswerInput>,
        by: String,
    ) -> Result<Vec<ScreeningEntry>, RecorderError> {
        self.call(|r| Command::RecordScreening(patient, answers, by, r))
            .await
    }

    /// Records a clinician's assessment of a patient's risk screen.
    pub async fn assess_risk(
        &self,
        patient: String,
        input: RiskAssessmentInput,
    ) -> Result<RiskScreenEntry, RecorderError> {
        self.call(|r| Command::AssessRisk(patient, input, r)).await
    }

    /// Starts a session; `checkin` is the room screen's check-in record, when there is one.
    pub async fn start_session(
        &self,
        input: NewSession,
        checkin: Option<CheckIn>,
    ) -> Result<SessionMeta, RecorderError> {
        self.call(|r| Command::StartSession(input, checkin, r))
            .await
    }

    /// Records an event in a session.
    pub async fn add_event(
        &self,
        session: String,
        event: SessionEvent,
    ) -> Result<SessionMeta, RecorderError> {
        self.call(|r| Command::AddEvent(session, event, r)).await
    }

    /// Stops a session.
    pub async fn stop_session(
        &self,
        session: String,
        input: StopSession,
    ) -> Result<SessionMeta, RecorderError> {
        self.call(|r| Command::StopSession(session, input, r)).await
    }

    /// Appends an entry to the site's ledger, by `by`, witnessed by `witness`.
    pub async fn ledger_append(
        &self,
        input: LedgerInput,
        by: String,
        witness: Option<String>,
    ) -> Result<vigil_shared::ledger::Entry, RecorderError> {
        self.call(|r| Command::LedgerAppend(input, by, witness, r))
            .await
    }

    /// Asks the recorder to commit and stop, waiting for room in the queue (shutdown must not
    /// be lost to a busy queue).
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, RecorderError> {
        let (tx, rx) = oneshot::channel();
        self.commands.try_send(make(tx)).map_err(|e| match e {
            TrySendError::Full(_) => RecorderError::Busy,
            TrySendError::Disconnected(_) => RecorderError::Stopped,
        })?;
        rx.await.map_err(|_| RecorderError::Stopped)?
    }

    /// Queues a raw command, for tests that fill or stop the queue.
    #[cfg(test)]
    pub(crate) fn try_send(&self, cmd: Command) -> bool {
        self.commands.try_send(cmd).is_ok()
    }
}
