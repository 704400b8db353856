//! Read-side views of the appliance database for the local API: session summaries with
//! per-channel counts, vitals in a time range, patients and the session list.
//!
//! Everything here reads what is committed (documents plus staged runs) through a read-only
//! connection, so the API shows exactly what would survive a kill at this moment. Nothing here
//! writes.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::Serialize;
use vigil_shared::doc::{PatientDoc, PatientRecord, SessionDoc, SessionMeta, SiteConfigDoc};
use vigil_shared::vitals::{Channel, Sample};

use crate::recorder::RecorderError;
use crate::store::{self, SessionRow};

/// Most samples one vitals response carries; a longer range is paged with `next_from_us`.
/// 250,000 samples is about 17 minutes of 250 Hz ECG and a few megabytes of JSON.
pub const MAX_VITALS_PER_PAGE: usize = 250_000;

/// Per-channel facts in a session summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelSummary {
    /// Samples recorded (closed chunks and staged runs).
    pub samples: u64,
    /// Time of the first sample, µs.
    pub first_us: Option<i64>,
    /// Time of the last sample, µs.
    pub last_us: Option<i64>,
    /// Closed chunks in the document.
    pub chunks: u64,
    /// Chunks that could not be decoded (their samples are not counted).
    pub corrupt_chunks: u64,
    /// Samples in the open chunk (staged, not yet in the document).
    pub staged_samples: u64,
    /// Unit of the values.
    pub unit: &'static str,
    /// Order-independent checksum of the samples ([`vigil_shared::vitals::checksum`]), as a
    /// hex string, to compare with the cloud's.
    pub checksum: String,
    #[serde(skip)]
    sum: u64,
}

impl ChannelSummary {
    fn add(&mut self, samples: &[Sample]) {
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return;
        };
        self.sum = self
            .sum
            .wrapping_add(vigil_shared::vitals::checksum(samples));
        self.checksum = format!("{:016x}", self.sum);
        self.samples += samples.len() as u64;
        self.first_us = Some(self.first_us.map_or(first.t_us, |f| f.min(first.t_us)));
        self.last_us = Some(self.last_us.map_or(last.t_us, |l| l.max(last.t_us)));
    }
}

/// A session summary.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// Typed metadata: protocol, state, events, advisories, scores, discharge.
    #[serde(flatten)]
    pub meta: SessionMeta,
    /// Notes.
    pub notes: String,
    /// The care record: the prescriber's order, overrides, checkpoints, adverse events, the
    /// disposition, ….
    pub care: vigil_shared::care::SessionCare,
    /// Per-channel counts and time ranges.
    pub channels: BTreeMap<Channel, ChannelSummary>,
}

fn load_session(conn: &Connection, id: &str) -> Result<Option<SessionDoc>, RecorderError> {
    Ok(store::load_typed(conn, id)?)
}

/// Reads every sample of a channel: closed chunks in order, then the session's staged runs
/// (`staged`, read once per request by the caller). Corrupt chunks are counted in `summary`
/// and skipped.
fn channel_samples(
    staged: &[store::StagedRun],
    doc: &SessionDoc,
    id: &str,
    channel: Channel,
    summary: &mut ChannelSummary,
) -> Vec<Sample> {
    let mut out = Vec::new();
    for chunk in doc.chunks(channel) {
        summary.chunks += 1;
        match chunk {
            Ok(c) => {
                summary.add(&c.samples);
                out.extend(c.samples);
            }
            Err(e) => {
                summary.corrupt_chunks += 1;
                tracing::warn!(session = %id, %channel, error = %e, "skipping a corrupt chunk");
            }
        }
    }
    for run in staged.iter().filter(|r| r.channel == channel) {
        if let Ok(samples) = &run.samples {
            summary.add(samples);
            summary.staged_samples += samples.len() as u64;
            out.extend_from_slice(samples);
        }
    }
    out
}

/// The summary of a session, or `None` if there is no such session.
pub fn session_view(conn: &Connection, id: &str) -> Result<Option<SessionView>, RecorderError> {
    let Some(doc) = load_session(conn, id)? else {
        return Ok(None);
    };
    let meta = doc.meta()?;
    let notes = doc.notes()?;
    let staged = store::staged(conn, id)?;
    let mut channels = BTreeMap::new();
    for channel in Channel::ALL {
        let mut summary = ChannelSummary {
            unit: channel.unit(),
            checksum: format!("{:016x}", 0),
            ..ChannelSummary::default()
        };
        channel_samples(&staged, &doc, id, channel, &mut summary);
        channels.insert(channel, summary);
    }
    Ok(Some(SessionView {
        meta,
        notes,
        care: doc.care()?,
        channels,
    }))
}

/// One page of a channel's samples.
#[derive(Debug, Clone, Serialize)]
pub struct VitalsPage {
    /// The channel.
    pub channel: Channel,
    /// Unit of the values.
    pub unit: &'static str,
    /// Samples as `[t_us, value…]` (three values for blood pressure).
    pub samples: Vec<Vec<i64>>,
    /// Where the next page starts when this one was cut at [`MAX_VITALS_PER_PAGE`].
    pub next_from_us: Option<i64>,
    /// Chunks skipped because they are corrupt.
    pub corrupt_chunks: u64,
}

/// Samples of one channel with `from_us <= t < to_us`, or `None` if there is no such session.
pub fn vitals(
    conn: &Connection,
    id: &str,
    channel: Channel,
    from_us: Option<i64>,
    to_us: Option<i64>,
) -> Result<Option<VitalsPage>, RecorderError> {
    let Some(doc) = load_session(conn, id)? else {
        return Ok(None);
    };
    let mut summary = ChannelSummary::default();
    let staged = store::staged(conn, id)?;
    let all = channel_samples(&staged, &doc, id, channel, &mut summary);
    let from = from_us.unwrap_or(i64::MIN);
    let to = to_us.unwrap_or(i64::MAX);
    let mut samples = Vec::new();
    let mut next_from_us = None;
    for s in all.iter().filter(|s| s.t_us >= from && s.t_us < to) {
        if samples.len() == MAX_VITALS_PER_PAGE {
            next_from_us = Some(s.t_us);
            break;
        }
        let mut row = Vec::with_capacity(1 + channel.dims());
        row.push(s.t_us);
        row.extend(s.v[..channel.dims()].iter().map(|&v| i64::from(v)));
        samples.push(row);
    }
    Ok(Some(VitalsPage {
        channel,
        unit: channel.unit(),
        samples,
        next_from_us,
        corrupt_chunks: summary.corrupt_chunks,
    }))
}

/// A patient's record, or `None`.
pub fn patient(conn: &Connection, id: &str) -> Result<Option<PatientRecord>, RecorderError> {
    match store::load_typed::<PatientDoc>(conn, id)? {
        Some(doc) => Ok(Some(doc.record()?)),
        None => Ok(None),
    }
}

/// The site configuration document as the cloud last sent it, or `None` before the first sync.
pub fn site_config_doc(
    conn: &Connection,
    site: &str,
) -> Result<Option<SiteConfigDoc>, RecorderError> {
    Ok(store::load_typed(conn, site)?)
}

/// A setting of the site's configuration, or its default when the site sets none (or sets one
/// that doesn't make sense, which is logged with `what`).
fn site_setting<T: Default>(
    conn: &Connection,
    site: &str,
    what: &str,
    read: impl FnOnce(&SiteConfigDoc) -> Result<Option<T>, vigil_shared::doc::DocError>,
    valid: impl FnOnce(&T) -> bool,
) -> T {
    let stored = site_config_doc(conn, site).and_then(|d| match d {
        Some(d) => Ok(read(&d)?),
        None => Ok(None),
    });
    match stored {
        Ok(Some(v)) if valid(&v) => v,
        Ok(None) => T::default(),
        Ok(Some(_)) | Err(_) => {
            tracing::warn!(%site, "the site's {what} are unreadable or out of range; using the defaults");
            T::default()
        }
    }
}

/// The site's discharge rules from its configuration, or the defaults.
pub fn discharge_rules(
    conn: &Connection,
    site: &str,
) -> vigil_shared::clinical::discharge::DischargeRules {
    site_setting(
        conn,
        site,
        "discharge rules",
        SiteConfigDoc::discharge_rules,
        |r| r.validate().is_ok(),
    )
}

/// The site's infusion limits from its configuration, or the defaults.
pub fn infusion_limits(conn: &Connection, site: &str) -> vigil_shared::clinical::InfusionLimits {
    site_setting(
        conn,
        site,
        "infusion limits",
        SiteConfigDoc::infusion_limits,
        |l| l.validate().is_ok(),
    )
}

/// The site configuration the cloud sent down, or `None` before the first sync.
pub fn site_config(conn: &Connection, site: &str) -> Result<Option<SiteConfigView>, RecorderError> {
    let Some(doc) = site_config_doc(conn, site)? else {
        return Ok(None);
    };
    let c = doc.config()?;
    Ok(Some(SiteConfigView {
        site: c.site,
        name: c.name,
        region: c.region,
        rooms: c.rooms.into_iter().map(|r| r.id).collect(),
        thresholds: c.thresholds,
        staff: c.staff.len(),
    }))
}

/// What the appliance shows of its site's configuration (staff PIN hashes stay inside).
#[derive(Debug, Clone, Serialize)]
pub struct SiteConfigView {
    /// Site id.
    pub site: String,
    /// Display name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Room ids.
    pub rooms: Vec<String>,
    /// Advisory thresholds in force for the site.
    pub thresholds: vigil_shared::advisory::Thresholds,
    /// Staff members who may sign in.
    pub staff: usize,
}

/// The local session index, newest first.
pub fn sessions(conn: &Connection) -> Result<Vec<SessionRow>, RecorderError> {
    Ok(store::sessions(conn)?)
}

/// One lot in the safe, for the ledger view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LotView {
    /// The lot as received.
    #[serde(flatten)]
    pub lot: vigil_shared::ledger::Lot,
    /// What the entries leave in the safe, µL.
    pub balance_ul: i64,
    /// The same in mg.
    pub balance_mg: f64,
}

/// A loss or theft and when its DEA Form 106 is due.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LossReport {
    /// The loss entry.
    pub entry_id: String,
    /// The end of the next business day after it, µs.
    pub due_us: i64,
}

/// The site's ledger as this room holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerView {
    /// Lots received, with their derived balances.
    pub lots: Vec<LotView>,
    /// Counts that disagree with the derived balance, not yet resolved.
    pub open_discrepancies: Vec<DiscrepancyView>,
    /// Losses and thefts, each with its Form 106 deadline.
    pub loss_reports: Vec<LossReport>,
    /// When the next biennial inventory is due, µs.
    pub biennial_inventory_due_us: i64,
    /// Every entry, in ledger order.
    pub entries: Vec<vigil_shared::ledger::Entry>,
}

/// A count's discrepancy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiscrepancyView {
    /// The count entry.
    pub count_id: String,
    /// The lot.
    pub lot_id: String,
    /// What the entries say, µL.
    pub expected_ul: i64,
    /// What was counted, µL.
    pub counted_ul: i64,
}

/// The site's ledger view at `now_us` (an empty ledger before anything was received).
pub fn ledger(conn: &Connection, site: &str, now_us: i64) -> Result<LedgerView, RecorderError> {
    use vigil_shared::ledger::{
        self, EntryKind, balances, biennial_inventory_due, effective, form_106_due, lots,
        open_discrepancies,
    };
    let id = vigil_shared::ledger::doc::ledger_id(site);
    let entries = match store::load_typed::<vigil_shared::ledger::doc::LedgerDoc>(conn, &id)? {
        Some(doc) => doc.entries()?,
        None => Vec::new(),
    };
    let zone = site_config_doc(conn, site)
        .ok()
        .flatten()
        .map_or_else(vigil_shared::zone::SiteZone::utc, |d| d.zone());
    let balance = balances(&entries);
    let lots: Vec<LotView> = lots(&entries)
        .into_values()
        .map(|lot| {
            let ul = balance.get(&lot.id).copied().unwrap_or(0);
            LotView {
                lot: lot.clone(),
                balance_ul: ul,
                balance_mg: ul as f64 / ledger::UL_PER_ML as f64 * lot.mg_per_ml,
            }
        })
        .collect();
    let loss_reports = effective(&entries)
        .into_iter()
        .filter(|e| matches!(e.kind, EntryKind::Loss { .. }))
        .map(|e| LossReport {
            entry_id: e.id.clone(),
            due_us: form_106_due(&zone, e.at_us),
        })
        .collect();
    let open_discrepancies = open_discrepancies(&entries)
        .into_iter()
        .map(|d| DiscrepancyView {
            count_id: d.count_id,
            lot_id: d.lot_id,
            expected_ul: d.expected_ul,
            counted_ul: d.counted_ul,
        })
        .collect();
    Ok(LedgerView {
        lots,
        open_discrepancies,
        loss_reports,
        biennial_inventory_due_us: biennial_inventory_due(&entries, now_us),
        entries,
    })
}
