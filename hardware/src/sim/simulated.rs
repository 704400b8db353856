//! [`SimulatedSource`]: a [`VitalsSource`] that serves an attached [`VirtualPatient`].
//!
//! It remembers how far it has handed samples out and, on each poll, returns what the patient's
//! monitors measured since then, interleaved with the scenario's device events so that samples
//! before an event come before it. With no patient attached the monitors are idle and it returns
//! nothing. It has no clock: the caller's `now_us` (already scaled by any time factor) drives it.

use vigil_shared::vitals::Channel;

use super::{PatientParams, SimError, US_PER_S, VirtualPatient};
use crate::source::{SourceEvent, VitalsSource};

/// The most simulated time one poll hands out. Bounds one poll's memory (10 minutes of 250 Hz
/// ECG is 150,000 samples, about 3.6 MB) when the caller's clock jumps; the rest comes out on
/// the following polls.
pub const MAX_POLL_SPAN_US: i64 = 10 * 60 * US_PER_S;

/// An attached patient and how far it has been handed out.
#[derive(Debug, Clone)]
struct Attached {
    patient: VirtualPatient,
    /// Everything before this instant has been handed out.
    next_us: i64,
    /// Whether the devices have been announced (done on the first poll).
    announced: bool,
    /// Where handing out started: the devices are announced as they stand at this instant.
    start_us: i64,
}

/// The simulator as a source of vital signs: zero or one virtual patient in the room.
#[derive(Debug, Clone, Default)]
pub struct SimulatedSource {
    attached: Option<Attached>,
}

impl SimulatedSource {
    /// A source with no patient attached (monitors idle).
    pub fn new() -> SimulatedSource {
        SimulatedSource::default()
    }

    /// Attaches a patient (replacing any other). Polls hand out its samples from
    /// `max(params.origin_us, from_us)`: pass the session's start for a new session, or the
    /// restart time when an appliance resumes a session mid-way.
    pub fn attach(&mut self, params: PatientParams, from_us: i64) -> Result<(), SimError> {
        let patient = VirtualPatient::new(params)?;
        let start_us = from_us.max(params.origin_us);
        self.attached = Some(Attached {
            patient,
            next_us: start_us,
            announced: false,
            start_us,
        });
        Ok(())
    }

    /// Detaches the patient, if any, and returns its parameters; the monitors go idle.
    pub fn detach(&mut self) -> Option<PatientParams> {
        self.attached.take().map(|a| *a.patient.params())
    }

    /// The attached patient's parameters.
    pub fn params(&self) -> Option<&PatientParams> {
        self.attached.as_ref().map(|a| a.patient.params())
    }

    /// Everything before this instant has been handed out (`None` when idle).
    pub fn handed_out_until_us(&self) -> Option<i64> {
        self.attached.as_ref().map(|a| a.next_us)
    }
}

impl VitalsSource for SimulatedSource {
    fn describe(&self) -> String {
        match self.params() {
            Some(p) => format!(
                "simulator seed={} scenario={} ecg={} nibp={}s",
                p.seed, p.scenario, p.ecg_hz, p.nibp_interval_s
            ),
            None => "simulator idle (no patient attached)".to_owned(),
        }
    }

    /// The samples with `t_us` in [last poll, `now_us`) (at most [`MAX_POLL_SPAN_US`] of time),
    /// and the device events in that range; on the first poll, first the devices' status at the
    /// start.
    fn poll(&mut self, now_us: i64) -> Vec<SourceEvent> {
        let Some(attached) = self.attached.as_mut() else {
            return Vec::new();
        };
        if now_us < attached.next_us {
            return Vec::new();
        }
        let mut out = Vec::new();
        if !attached.announced {
            out.extend(attached.patient.device_announcements(attached.start_us));
            attached.announced = true;
        }
        let to_us = now_us.min(attached.next_us.saturating_add(MAX_POLL_SPAN_US));
        let mut cursor_us = attached.next_us;
        // The announcements include changes at exactly the start: events come from after it.
        let events_from_us = cursor_us.max(attached.start_us.saturating_add(1));
        for event in attached
            .patient
            .device_events_between(events_from_us, to_us)
        {
            if let SourceEvent::Device { at_us, .. } = event {
                push_samples(&mut out, &mut attached.patient, cursor_us, at_us);
                cursor_us = at_us;
            }
            out.push(event);
        }
        push_samples(&mut out, &mut attached.patient, cursor_us, to_us);
        attached.next_us = to_us;
        out
    }

    fn channels(&self) -> Vec<Channel> {
        match &self.attached {
            Some(attached) => attached.patient.channels(),
            None => Vec::new(),
        }
    }
}

fn push_samples(
    out: &mut Vec<SourceEvent>,
    patient: &mut VirtualPatient,
    from_us: i64,
    to_us: i64,
) {
    out.extend(
        patient
            .samples_between(from_us, to_us)
            .into_iter()
            .map(SourceEvent::Samples),
    );
}
