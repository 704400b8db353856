//! The read side of [`CloudStore`] for the API: the session list, session summaries, vitals
//! pages, patients and appliance presence.
//!
//! Every read runs on a pooled read-only connection inside one read transaction, so a
//! summary's document and its channel rows come from the same commit. Nothing here writes.
//! Summaries and vitals pages have the same JSON shape as the appliance's
//! (`vigil_edge::reads`), so the two can be compared field by field.

use std::collections::BTreeMap;

use automerge::{AutoCommit, ReadDoc};
use serde::Serialize;
use vigil_shared::chunk::peek_header;
use vigil_shared::doc::{PatientDoc, PatientRecord, SessionDoc, SessionMeta};
use vigil_shared::vitals::{Channel, Sample};
use vigil_shared::wire::DocKind;

use super::db::{Arg, Row, Sql, ToArg, args};
use super::projection::{self, ChannelDigest};
use super::{CloudStore, StoreError, load_in_scope, scope_clause};
use crate::auth::Scope;

/// Most samples one vitals page carries; a longer range is paged with `next_from_us`.
/// 250,000 samples is about 17 minutes of 250 Hz ECG and a few megabytes of JSON; the
/// appliance pages at the same size.
pub const MAX_VITALS_PER_PAGE: usize = 250_000;

/// Most sessions one list page carries. A page of 500 rows is about 200 KB of JSON, more than
/// a dashboard table shows; past that, page with `offset`.
pub const MAX_SESSION_PAGE: u32 = 500;

/// Which sessions to list, within the reader's [`Scope`] (given beside it, never part of it:
/// a filter has no default and no field that could widen what a reader sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFilter {
    /// Only this site.
    pub site: Option<String>,
    /// Only this room.
    pub room: Option<String>,
    /// Only this state (`planned`, `in_progress`, `completed`, `aborted`).
    pub state: Option<String>,
    /// Only this patient's sessions.
    pub patient_id: Option<String>,
    /// Started at or after, µs.
    pub from_us: Option<i64>,
    /// Started before, µs.
    pub to_us: Option<i64>,
    /// Only sessions with (`true`) or without (`false`) an advisory.
    pub has_advisory: Option<bool>,
    /// Rows wanted, at most [`MAX_SESSION_PAGE`].
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
}

/// One row of the session list (the `sessions` projection).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    /// Session id.
    pub id: String,
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// Patient id.
    pub patient_id: String,
    /// `planned`, `in_progress`, `completed` or `aborted`.
    pub state: String,
    /// Drug.
    pub drug: String,
    /// Route.
    pub route: String,
    /// Created, µs.
    pub created_us: i64,
    /// Started, µs.
    pub started_us: Option<i64>,
    /// Ended, µs.
    pub ended_us: Option<i64>,
    /// Planned infusion minutes.
    pub planned_minutes: u64,
    /// Dose, mg/kg.
    pub dose_mg_per_kg: f64,
    /// Weight, kg.
    pub weight_kg: f64,
    /// Advisories raised.
    pub n_advisories: u64,
    /// Whether any advisory was raised.
    pub has_advisory: bool,
    /// The most urgent advisory priority raised (`high`, `medium`, `low`).
    pub max_advisory_priority: Option<String>,
    /// Observations (side effects) recorded.
    pub n_observations: u64,
    /// Discharged, µs.
    pub discharge_us: Option<i64>,
    /// Modified Aldrete score at discharge.
    pub discharge_aldrete: Option<i64>,
    /// When the cloud last committed a change of this session, µs.
    pub updated_us: i64,
}

/// A page of the session list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionPage {
    /// Sessions matching the filter, over all pages.
    pub total: u64,
    /// The page size used.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
    /// This page, newest start first (sessions not started yet last).
    pub sessions: Vec<SessionRow>,
}

/// Per-channel facts in a session summary; the appliance's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelSummary {
    /// Samples in readable chunks.
    pub samples: u64,
    /// Time of the first sample, µs.
    pub first_us: Option<i64>,
    /// Time of the last sample, µs.
    pub last_us: Option<i64>,
    /// Chunks in the document.
    pub chunks: u64,
    /// Chunks that could not be decoded (their samples are not counted).
    pub corrupt_chunks: u64,
    /// Unit of the values (UCUM).
    pub unit: &'static str,
    /// Order-independent checksum of the samples ([`vigil_shared::vitals::checksum`]), 16
    /// hex digits.
    pub checksum: String,
}

impl ChannelSummary {
    fn new(channel: Channel, s: ChannelDigest) -> ChannelSummary {
        ChannelSummary {
            samples: s.samples,
            first_us: s.first_us,
            last_us: s.last_us,
            chunks: s.chunks,
            corrupt_chunks: s.corrupt_chunks,
            unit: channel.unit(),
            checksum: format!("{:016x}", s.checksum),
        }
    }
}

/// A session summary: the appliance's shape, plus when the cloud last received a change.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// Typed metadata: protocol, state, times, events, advisories, scores, discharge.
    #[serde(flatten)]
    pub meta: SessionMeta,
    /// Notes.
    pub notes: String,
    /// Every channel's counts, time range and checksum.
    pub channels: BTreeMap<Channel, ChannelSummary>,
    /// When the cloud last committed a change of this session, µs.
    pub updated_us: i64,
}

/// One page of a channel's samples; the appliance's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VitalsPage {
    /// The channel.
    pub channel: Channel,
    /// Unit of the values.
    pub unit: &'static str,
    /// Samples as `[t_us, value…]` (three values for blood pressure), in time order.
    pub samples: Vec<Vec<i64>>,
    /// Where the next page starts when this one was cut at [`MAX_VITALS_PER_PAGE`].
    pub next_from_us: Option<i64>,
    /// Chunks of the channel skipped because they are corrupt (over the whole session).
    pub corrupt_chunks: u64,
}

/// An appliance's presence as the sync server last recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplianceRow {
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// Whether a connection is open (as last recorded).
    pub connected: bool,
    /// The appliance's software, from its Hello.
    pub software: String,
    /// First connection, µs.
    pub first_seen_us: i64,
    /// Last sign of life, µs.
    pub last_seen_us: i64,
    /// Last completed sync round, µs.
    pub last_sync_us: Option<i64>,
    /// Documents the appliance still had to send.
    pub backlog_docs: u64,
    /// Bytes the appliance still had to send.
    pub backlog_bytes: u64,
    /// The cloud instance its connection is (or last was) held by.
    pub instance: String,
    /// The sync protocol version of its last connection.
    pub protocol: u16,
    /// The serial of the certificate it last connected with, hex.
    pub cert_serial: String,
    /// That certificate's end of validity, µs.
    pub cert_not_after_us: Option<i64>,
    /// Its clock minus the cloud's at its last report, µs.
    pub clock_skew_us: Option<i64>,
    /// Its last health report (protocol 2).
    pub report: Option<vigil_shared::fleet::ApplianceReport>,
}

const SESSION_COLUMNS: &str = "id, site, room, patient_id, state, drug, route, created_us,
    started_us, ended_us, planned_minutes, dose_mg_per_kg, weight_kg, n_advisories,
    has_advisory, max_advisory_priority, n_observations, discharge_us, discharge_aldrete,
    updated_us";

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn session_row(r: &Row) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: r.get(0)?,
        site: r.get(1)?,
        room: r.get(2)?,
        patient_id: r.get(3)?,
        state: r.get(4)?,
        drug: r.get(5)?,
        route: r.get(6)?,
        created_us: r.get(7)?,
        started_us: r.get(8)?,
        ended_us: r.get(9)?,
        planned_minutes: count(r.get(10)?),
        dose_mg_per_kg: r.get(11)?,
        weight_kg: r.get(12)?,
        n_advisories: count(r.get(13)?),
        has_advisory: r.get(14)?,
        max_advisory_priority: r.get(15)?,
        n_observations: count(r.get(16)?),
        discharge_us: r.get(17)?,
        discharge_aldrete: r.get(18)?,
        updated_us: r.get(19)?,
    })
}

impl CloudStore {
    /// A page of the session list: the sessions of the sites in `scope` that match `filter`.
    pub fn sessions(
        &self,
        scope: &Scope,
        filter: &SessionFilter,
    ) -> Result<SessionPage, StoreError> {
        let mut args: Vec<Arg<'_>> = Vec::new();
        let in_scope = scope_clause("site", scope, &mut args);
        let mut clauses: Vec<&str> = Vec::new();
        let mut add = |clause: &'static str, value: Arg<'static>| {
            clauses.push(clause);
            args.push(value);
        };
        if let Some(site) = &filter.site {
            add("site = ?", Arg::Text(site.clone().into()));
        }
        if let Some(room) = &filter.room {
            add("room = ?", Arg::Text(room.clone().into()));
        }
        if let Some(state) = &filter.state {
            add("state = ?", Arg::Text(state.clone().into()));
        }
        if let Some(from) = filter.from_us {
            add("started_us >= ?", Arg::Int(from));
        }
        if let Some(to) = filter.to_us {
            add("started_us < ?", Arg::Int(to));
        }
        if let Some(patient) = &filter.patient_id {
            add("patient_id = ?", Arg::Text(patient.clone().into()));
        }
        if let Some(has) = filter.has_advisory {
            add("has_advisory = ?", Arg::Int(i64::from(has)));
        }
        let where_clause: String = std::iter::once(format!("WHERE TRUE{in_scope}"))
            .chain(clauses.iter().map(|c| format!(" AND {c}")))
            .collect();
        let limit = filter.limit.min(MAX_SESSION_PAGE);
        self.read(|db| {
            let total: i64 = db
                .one(
                    &format!("SELECT count(*) FROM sessions {where_clause}"),
                    &args,
                )?
                .get(0)?;
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions {where_clause}
                 ORDER BY started_us IS NULL, started_us DESC, id LIMIT ? OFFSET ?"
            );
            let mut page_args = args.clone();
            page_args.push(Arg::Int(i64::from(limit)));
            page_args.push(Arg::Int(i64::from(filter.offset)));
            let sessions = db
                .rows(&sql, &page_args)?
                .iter()
                .map(session_row)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SessionPage {
                total: count(total),
                limit,
                offset: filter.offset,
                sessions,
            })
        })
    }

    /// One session's list row, or `None` (no such session, or out of scope).
    pub fn session_row(&self, scope: &Scope, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let mut args = vec![id.to_arg()];
        let in_scope = scope_clause("site", scope, &mut args);
        self.read(|db| {
            db.row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 {in_scope}"),
                &args,
            )?
            .as_ref()
            .map(session_row)
            .transpose()
        })
    }

    /// A session's summary, or `None` (no such session, or out of scope).
    pub fn session_summary(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Option<SessionSummary>, StoreError> {
        self.read(|db| {
            let Some(doc) = load_session(db, scope, id)? else {
                return Ok(None);
            };
            let corrupt = |e: vigil_shared::doc::DocError| StoreError::CorruptDocument {
                id: id.to_owned(),
                reason: e.to_string(),
            };
            // Decoded here, not projected: the checksum needs every sample, and the
            // projection reads only the chunks' headers (see `projection`).
            let channels = Channel::ALL
                .into_iter()
                .map(|c| {
                    (
                        c,
                        ChannelSummary::new(c, projection::digest_channel(&doc, c)),
                    )
                })
                .collect();
            let session = SessionDoc::from_automerge(doc).map_err(corrupt)?;
            let meta = session.meta().map_err(corrupt)?;
            let notes = session.notes().map_err(corrupt)?;
            let updated_us: i64 = db
                .one("SELECT updated_us FROM documents WHERE id = ?1", args![id])?
                .get(0)?;
            Ok(Some(SessionSummary {
                meta,
                notes,
                channels,
                updated_us,
            }))
        })
    }

    /// Samples of one channel with `from_us <= t < to_us`, at most [`MAX_VITALS_PER_PAGE`]
    /// of them; `None` if there is no such session or it is out of scope.
    pub fn vitals(
        &self,
        scope: &Scope,
        id: &str,
        channel: Channel,
        from_us: Option<i64>,
        to_us: Option<i64>,
    ) -> Result<Option<VitalsPage>, StoreError> {
        self.read(|db| {
            let Some(doc) = load_session(db, scope, id)? else {
                return Ok(None);
            };
            let corrupt_chunks = projection::read_channels(db, id)?
                .get(&channel)
                .map_or(0, |s| s.corrupt_chunks);
            Ok(Some(vitals_page(
                &doc,
                channel,
                from_us,
                to_us,
                corrupt_chunks,
                MAX_VITALS_PER_PAGE,
            )))
        })
    }

    /// A patient's record, or `None` (no such patient, or out of scope).
    pub fn patient(&self, scope: &Scope, id: &str) -> Result<Option<PatientRecord>, StoreError> {
        self.read(|db| {
            let Some(stored) = load_in_scope(db, scope, id, DocKind::Patient)? else {
                return Ok(None);
            };
            let corrupt = |e: vigil_shared::doc::DocError| StoreError::CorruptDocument {
                id: id.to_owned(),
                reason: e.to_string(),
            };
            let patient = PatientDoc::from_automerge(stored.doc).map_err(corrupt)?;
            let record = patient.record().map_err(corrupt)?;
            Ok(Some(record))
        })
    }

    /// Every appliance ever seen, by site and room.
    pub fn appliances(&self) -> Result<Vec<ApplianceRow>, StoreError> {
        self.read(|db| {
            let rows = db.rows(
                "SELECT site, room, connected, software, first_seen_us, last_seen_us,
                        last_sync_us, backlog_docs, backlog_bytes, instance, protocol,
                        cert_serial, cert_not_after_us, clock_skew_us, report
                 FROM appliances ORDER BY site, room",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(ApplianceRow {
                        site: r.get(0)?,
                        room: r.get(1)?,
                        connected: r.get(2)?,
                        software: r.get(3)?,
                        first_seen_us: r.get(4)?,
                        last_seen_us: r.get(5)?,
                        last_sync_us: r.get(6)?,
                        backlog_docs: count(r.get(7)?),
                        backlog_bytes: count(r.get(8)?),
                        instance: r.get(9)?,
                        protocol: u16::try_from(r.get::<i64>(10)?).unwrap_or(0),
                        cert_serial: r.get(11)?,
                        cert_not_after_us: r.get(12)?,
                        clock_skew_us: r.get(13)?,
                        // A report that no longer parses (an older or newer shape) shows as
                        // none rather than failing the whole fleet.
                        report: r
                            .get::<Option<String>>(14)?
                            .and_then(|j| serde_json::from_str(&j).ok()),
                    })
                })
                .collect()
        })
    }
}

fn load_session(
    db: &mut dyn Sql,
    scope: &Scope,
    id: &str,
) -> Result<Option<AutoCommit>, StoreError> {
    Ok(load_in_scope(db, scope, id, DocKind::Session)?.map(|s| s.doc))
}

/// The samples of one channel in `[from_us, to_us)`, sorted by time, cut after `max_samples`.
///
/// Chunks whose header shows they lie outside the range are not decoded; chunks are visited in
/// start-time order and the walk stops once the page is full and the next chunk starts after
/// everything collected, so memory stays near one page whatever the session's length. A page
/// never ends in the middle of samples sharing one timestamp, so that `next_from_us` neither
/// repeats nor skips a sample.
pub(super) fn vitals_page(
    doc: &AutoCommit,
    channel: Channel,
    from_us: Option<i64>,
    to_us: Option<i64>,
    corrupt_chunks: u64,
    max_samples: usize,
) -> VitalsPage {
    let from = from_us.unwrap_or(i64::MIN);
    let to = to_us.unwrap_or(i64::MAX);
    let mut out: Vec<Sample> = Vec::new();
    if let Some(list) = projection::channel_list(doc, channel) {
        let len = doc
            .length(&list)
            .min(vigil_shared::doc::MAX_CHUNKS_PER_CHANNEL);
        let mut chunks: Vec<(i64, Option<&[u8]>)> = Vec::new();
        let items: Vec<_> = doc.list_range(&list, ..len).collect();
        for item in &items {
            let bytes = projection::item_bytes(&item.value);
            // An unreadable header means a corrupt chunk: counted by the projection, skipped.
            let Some(header) = bytes.and_then(|b| peek_header(b).ok()) else {
                continue;
            };
            if header.start_us >= to || header.end_us().is_some_and(|end| end < from) {
                continue;
            }
            chunks.push((header.start_us, bytes));
        }
        chunks.sort_by_key(|(start, _)| *start);
        let mut latest = i64::MIN;
        for (start, bytes) in chunks {
            if out.len() > max_samples && start > latest {
                break;
            }
            let Some(chunk) = projection::decode_item(channel, bytes) else {
                continue;
            };
            for s in chunk.samples {
                if s.t_us >= from && s.t_us < to {
                    latest = latest.max(s.t_us);
                    out.push(s);
                }
            }
        }
    }
    out.sort_by_key(|s| s.t_us);
    let mut next_from_us = None;
    if out.len() > max_samples {
        // Indexes below stay in bounds: `cut` never exceeds `max_samples`, which is below
        // `out.len()`, and `cut - 1` is only read while `cut > 0`.
        let next = out[max_samples].t_us;
        let mut cut = max_samples;
        while cut > 0 && out[cut - 1].t_us == next {
            cut -= 1;
        }
        if cut == 0 {
            // Over a page of samples at one instant: impossible from a real monitor; cut at
            // the limit rather than return nothing.
            cut = max_samples;
        }
        next_from_us = Some(out[cut].t_us);
        out.truncate(cut);
    }
    let dims = channel.dims();
    let samples = out
        .iter()
        .map(|s| {
            std::iter::once(s.t_us)
                .chain(s.v[..dims].iter().map(|&v| i64::from(v)))
                .collect()
        })
        .collect();
    VitalsPage {
        channel,
        unit: channel.unit(),
        samples,
        next_from_us,
        corrupt_chunks,
    }
}

/// One entry of the attention list, with where it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttentionRow {
    /// The session.
    pub session_id: String,
    /// Its site.
    pub site: String,
    /// Its room.
    pub room: String,
    /// Why it is on the list (`care::ATTENTION_KINDS`).
    pub kind: String,
    /// When, µs.
    pub at_us: i64,
    /// In the record's words.
    pub detail: String,
}

/// Most entries the attention list shows.
pub const MAX_ATTENTION: u32 = 500;

impl CloudStore {
    /// The attention list of the sites in `scope`, newest first, at most [`MAX_ATTENTION`].
    pub fn attention(&self, scope: &Scope) -> Result<Vec<AttentionRow>, StoreError> {
        let mut args: Vec<Arg<'_>> = Vec::new();
        let in_scope = scope_clause("s.site", scope, &mut args);
        args.push(Arg::Int(i64::from(MAX_ATTENTION)));
        self.read(|db| {
            let rows = db.rows(
                &format!(
                    "SELECT a.session_id, s.site, s.room, a.kind, a.at_us, a.detail
                     FROM attention a JOIN sessions s ON s.id = a.session_id
                     WHERE TRUE{in_scope}
                     ORDER BY a.at_us DESC, a.session_id, a.n LIMIT ?"
                ),
                &args,
            )?;
            rows.iter()
                .map(|r| {
                    Ok(AttentionRow {
                        session_id: r.get(0)?,
                        site: r.get(1)?,
                        room: r.get(2)?,
                        kind: r.get(3)?,
                        at_us: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })
                .collect()
        })
    }
}
