//! Projections: the rows the API queries, derived from a document. [`project`] reads a
//! document into a [`Projection`] (no I/O, so it can run outside the writer lock) and
//! [`write`] replaces the document's rows inside the caller's transaction.
//!
//! Per-channel vitals statistics (samples, time span, chunks, unreadable chunks) come from the
//! chunks' headers ([`peek_header`]): decoding every chunk of a 56-minute ECG session takes
//! tens of milliseconds, most of the cloud's work per session, while its headers say the count
//! and the span. Only a chunk whose times are per-sample deltas (its header holds the first
//! time, not the last) is decoded for its span; those are the low-rate channels. So the
//! projection's "readable" means a readable header of the right channel; a chunk whose header
//! reads but whose body does not is found by the reads that decode, which skip it. The
//! order-independent checksum of the samples needs every sample, so it is not projected:
//! [`digest_channel`] decodes a channel on read, as the appliance's API does.
//!
//! Counting is incremental too: each channel's row remembers how many list items it counted
//! and a hash of those items' Automerge op ids. Vitals lists are append-only in practice; when
//! the counted prefix is unchanged only the new items are read, and anything else (a shorter
//! list, an item inserted before the end, an item overwritten) falls back to a full recount.
//! This module does not decide when to project; the store does.

use std::collections::BTreeMap;

use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValueRef, Value, ValueRef};
use vigil_shared::audit::{AuditDoc, AuditEntry};
use vigil_shared::chunk::{Chunk, peek_header};
use vigil_shared::doc::{
    MAX_CHUNKS_PER_CHANNEL, PatientDoc, PatientRecord, SessionDoc, SessionMeta,
};
use vigil_shared::ledger::doc::LedgerDoc;
use vigil_shared::vitals::{Channel, Sample, checksum};
use vigil_shared::wire::DocKind;

use super::StoreError;
use super::db::{Sql, args};

/// FNV-1a's 64-bit offset basis: the hash of an empty prefix.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a's 64-bit prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// Advisory priorities from most to least urgent (IEC 60601-1-8).
const PRIORITIES: [&str; 3] = ["high", "medium", "low"];

/// What one document contributes to the projection tables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Projection {
    /// A session: its metadata and per-channel statistics.
    Session(SessionProjection),
    /// A patient.
    Patient(PatientRecord),
    /// A site config: registered, nothing projected yet.
    SiteConfig,
    /// An appliance's audit document: its entries go to the audit log.
    Audit(AuditProjection),
    /// A site's ledger: its entries, each recorded once with when the cloud received it.
    Ledger(Vec<vigil_shared::ledger::Entry>),
}

/// An audit document's projection: every entry, written to the audit log at most once each.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AuditProjection {
    /// The appliance's room.
    pub room: String,
    /// The entries, in list order.
    pub entries: Vec<AuditEntry>,
}

/// A session's projection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionProjection {
    /// The typed metadata.
    pub meta: SessionMeta,
    /// Statistics of every channel, including empty ones.
    pub channels: BTreeMap<Channel, ChannelStats>,
    /// What of it is on the attention list (`care::SessionCare::attention`).
    pub attention: Vec<vigil_shared::care::Attention>,
}

/// Counts over one channel's chunk list from the chunks' headers, plus what incremental
/// counting needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelStats {
    /// Samples in chunks with a readable header of this channel.
    pub samples: u64,
    /// Earliest sample, µs.
    pub first_us: Option<i64>,
    /// Latest sample, µs.
    pub last_us: Option<i64>,
    /// List items counted (readable or not).
    pub chunks: u64,
    /// Items that are not a chunk of this channel with a readable header (nor, for per-sample
    /// times, a readable body).
    pub corrupt_chunks: u64,
    /// FNV-1a over the op ids of the `chunks` items counted, in list order.
    pub prefix_hash: u64,
}

impl Default for ChannelStats {
    fn default() -> Self {
        ChannelStats {
            samples: 0,
            first_us: None,
            last_us: None,
            chunks: 0,
            corrupt_chunks: 0,
            prefix_hash: FNV_OFFSET,
        }
    }
}

impl ChannelStats {
    /// Adds a chunk of `n` samples spanning `first_us..=last_us`.
    fn add_span(&mut self, n: usize, first_us: i64, last_us: i64) {
        self.first_us = Some(self.first_us.map_or(first_us, |f| f.min(first_us)));
        self.last_us = Some(self.last_us.map_or(last_us, |l| l.max(last_us)));
        self.samples += n as u64;
    }
}

/// A channel read by decoding every chunk: exact counts of what decodes, and the checksum of
/// the samples. What the session summary shows, as the appliance's API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChannelDigest {
    /// Samples in readable chunks.
    pub samples: u64,
    /// Earliest sample, µs.
    pub first_us: Option<i64>,
    /// Latest sample, µs.
    pub last_us: Option<i64>,
    /// List items (readable or not).
    pub chunks: u64,
    /// Items that are not a readable chunk of this channel.
    pub corrupt_chunks: u64,
    /// [`vigil_shared::vitals::checksum`] of the samples.
    pub checksum: u64,
}

impl ChannelDigest {
    fn add(&mut self, samples: &[Sample]) {
        for s in samples {
            self.first_us = Some(self.first_us.map_or(s.t_us, |f| f.min(s.t_us)));
            self.last_us = Some(self.last_us.map_or(s.t_us, |l| l.max(s.t_us)));
        }
        self.samples += samples.len() as u64;
        self.checksum = self.checksum.wrapping_add(checksum(samples));
    }
}

/// Reads a document into its projection. `prior` holds the channel rows stored for this
/// session so far (empty for a new document or a full recount).
pub(crate) fn project(
    id: &str,
    kind: DocKind,
    doc: &AutoCommit,
    prior: &BTreeMap<Channel, ChannelStats>,
) -> Result<Projection, StoreError> {
    let invalid = |e: vigil_shared::doc::DocError| StoreError::InvalidDocument {
        id: id.to_owned(),
        reason: e.to_string(),
    };
    match kind {
        DocKind::Session => {
            // A clone of an Automerge document shares nothing but costs well under a
            // millisecond even with ECG (measured ~0.1 ms); SessionDoc owns its document.
            let session = SessionDoc::from_automerge(doc.clone()).map_err(invalid)?;
            let meta = session.meta().map_err(invalid)?;
            let channels = Channel::ALL
                .into_iter()
                .map(|c| (c, count_channel(id, doc, c, prior.get(&c))))
                .collect();
            let attention = session.care().map_err(invalid)?.attention();
            Ok(Projection::Session(SessionProjection {
                meta,
                channels,
                attention,
            }))
        }
        DocKind::Patient => {
            let patient = PatientDoc::from_automerge(doc.clone()).map_err(invalid)?;
            let record = patient.record().map_err(invalid)?;
            Ok(Projection::Patient(record))
        }
        DocKind::SiteConfig => Ok(Projection::SiteConfig),
        DocKind::Audit => {
            let audit = AuditDoc::from_automerge(doc.clone()).map_err(invalid)?;
            Ok(Projection::Audit(AuditProjection {
                room: audit.room().map_err(invalid)?,
                entries: audit.entries().map_err(invalid)?,
            }))
        }
        DocKind::Ledger => {
            let ledger = LedgerDoc::from_automerge(doc.clone()).map_err(invalid)?;
            Ok(Projection::Ledger(ledger.entries().map_err(invalid)?))
        }
    }
}

/// The object id of a channel's chunk list, if the document has one.
pub(super) fn channel_list(doc: &AutoCommit, channel: Channel) -> Option<ObjId> {
    let vitals = match doc.get(automerge::ROOT, "vitals").ok()?? {
        (Value::Object(ObjType::Map), id) => id,
        _ => return None,
    };
    match doc.get(&vitals, channel.name()).ok()?? {
        (Value::Object(ObjType::List), id) => Some(id),
        _ => None,
    }
}

/// The bytes of a list item, if it is a bytes value.
pub(super) fn item_bytes<'a>(value: &'a ValueRef<'_>) -> Option<&'a [u8]> {
    match value {
        ValueRef::Scalar(ScalarValueRef::Bytes(b)) => Some(b),
        _ => None,
    }
}

/// Decodes a list item as a chunk of `channel`, as [`SessionDoc::chunks`] does.
pub(super) fn decode_item(channel: Channel, bytes: Option<&[u8]>) -> Option<Chunk> {
    match Chunk::decode(bytes?) {
        Ok(c) if c.channel == channel => Some(c),
        _ => None,
    }
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Extends a prefix hash with one list item's op id. Only the op's counter and actor go in:
/// they are stable across save and load, unlike the actor's index in the document.
fn hash_item(h: u64, id: &ObjId) -> u64 {
    match id {
        ObjId::Root => fnv(h, &[0]),
        ObjId::Id(counter, actor, _) => fnv(fnv(h, &counter.to_le_bytes()), actor.to_bytes()),
    }
}

/// Count and span of a list item from its chunk header; `None` when it is not a chunk of
/// `channel` with a readable header. A chunk with per-sample times is decoded for its span.
fn chunk_span(channel: Channel, bytes: Option<&[u8]>) -> Option<(usize, i64, i64)> {
    let header = peek_header(bytes?).ok().filter(|h| h.channel == channel)?;
    if let Some(end_us) = header.end_us() {
        // Fixed-rate times only grow from the first sample's, which is the header's start.
        return Some((header.n_samples, header.start_us, end_us));
    }
    let chunk = decode_item(channel, bytes)?;
    let first_us = chunk.samples.iter().map(|s| s.t_us).min()?;
    let last_us = chunk.samples.iter().map(|s| s.t_us).max()?;
    Some((chunk.samples.len(), first_us, last_us))
}

/// Counts a channel's chunk list from the chunks' headers, reading only the items past an
/// unchanged counted prefix.
pub(crate) fn count_channel(
    id: &str,
    doc: &AutoCommit,
    channel: Channel,
    prior: Option<&ChannelStats>,
) -> ChannelStats {
    let Some(list) = channel_list(doc, channel) else {
        return ChannelStats::default();
    };
    let len = doc.length(&list).min(MAX_CHUNKS_PER_CHANNEL);
    let mut stats = ChannelStats::default();
    if let Some(p) = prior {
        let counted = usize::try_from(p.chunks).unwrap_or(usize::MAX);
        if counted > 0 && counted <= len {
            let h = doc
                .list_range(&list, ..counted)
                .fold(FNV_OFFSET, |h, item| hash_item(h, &item.id()));
            if h == p.prefix_hash {
                stats = p.clone();
            }
        }
    }
    let start = usize::try_from(stats.chunks).unwrap_or(len).min(len);
    for item in doc.list_range(&list, start..len) {
        stats.prefix_hash = hash_item(stats.prefix_hash, &item.id());
        stats.chunks += 1;
        match chunk_span(channel, item_bytes(&item.value)) {
            Some((n, first_us, last_us)) => stats.add_span(n, first_us, last_us),
            None => {
                stats.corrupt_chunks += 1;
                tracing::warn!(session = %id, %channel, index = item.index, "skipping a corrupt chunk");
            }
        }
    }
    stats
}

/// Decodes every chunk of a channel: exact counts and the samples' checksum.
pub(crate) fn digest_channel(doc: &AutoCommit, channel: Channel) -> ChannelDigest {
    let mut digest = ChannelDigest::default();
    let Some(list) = channel_list(doc, channel) else {
        return digest;
    };
    let len = doc.length(&list).min(MAX_CHUNKS_PER_CHANNEL);
    for item in doc.list_range(&list, ..len) {
        digest.chunks += 1;
        match decode_item(channel, item_bytes(&item.value)) {
            Some(chunk) => digest.add(&chunk.samples),
            None => digest.corrupt_chunks += 1,
        }
    }
    digest
}

/// The channel rows stored for a session.
pub(crate) fn read_channels(
    db: &mut dyn Sql,
    session_id: &str,
) -> Result<BTreeMap<Channel, ChannelStats>, StoreError> {
    let rows = db.rows(
        "SELECT channel, samples, first_us, last_us, chunks, corrupt_chunks, prefix_hash
         FROM session_channels WHERE session_id = ?1",
        args![session_id],
    )?;
    let mut out = BTreeMap::new();
    for r in rows {
        let Some(channel) = Channel::from_name(&r.get::<String>(0)?) else {
            continue;
        };
        out.insert(
            channel,
            ChannelStats {
                samples: from_db(r.get(1)?),
                first_us: r.get(2)?,
                last_us: r.get(3)?,
                chunks: from_db(r.get(4)?),
                corrupt_chunks: from_db(r.get(5)?),
                prefix_hash: bits_from_db(r.get(6)?),
            },
        );
    }
    Ok(out)
}

/// A count for an INTEGER column (SQLite integers are signed 64-bit).
fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A 64-bit hash or checksum stored as the same bits in a signed INTEGER column.
fn bits_to_db(n: u64) -> i64 {
    i64::from_ne_bytes(n.to_ne_bytes())
}

fn bits_from_db(n: i64) -> u64 {
    u64::from_ne_bytes(n.to_ne_bytes())
}

/// Replaces a document's projection rows. `site` is the registry's site. Returns how many
/// audit entries were new to the audit log (0 for every other kind).
pub(crate) fn write(
    db: &mut dyn Sql,
    id: &str,
    site: &str,
    projection: &Projection,
    now_us: i64,
) -> Result<usize, StoreError> {
    match projection {
        Projection::Session(s) => write_session(db, id, site, s, now_us).map(|()| 0),
        Projection::Patient(p) => {
            let course = to_json(id, &p.course)?;
            let outcome_scores = to_json(id, &p.outcome_scores)?;
            db.exec("DELETE FROM patients WHERE id = ?1", args![id])?;
            db.exec(
                "INSERT INTO patients (id, site, given_name, family_name, birth_date, course,
                                       outcome_scores)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args![
                    id,
                    site,
                    p.given_name,
                    p.family_name,
                    p.birth_date,
                    course,
                    outcome_scores
                ],
            )?;
            Ok(0)
        }
        Projection::SiteConfig => Ok(0),
        // Insert-or-ignore on (site, room, entry id): an entry is written once whatever the
        // number of commits, syncs or reindexes that project it, and never changed after.
        // The audit log is not a derived table, so a reindex does not clear it first.
        Projection::Audit(a) => {
            super::users::insert_appliance_entries(db, site, &a.room, &a.entries)
        }
        // The same for the ledger: an entry is recorded once, with the time the cloud first
        // received it, which a reindex keeps.
        Projection::Ledger(entries) => {
            super::ledger::insert_entries(db, site, entries, now_us).map(|_| 0)
        }
    }
}

fn write_session(
    db: &mut dyn Sql,
    id: &str,
    site: &str,
    s: &SessionProjection,
    now_us: i64,
) -> Result<(), StoreError> {
    let m = &s.meta;
    let max_priority = PRIORITIES
        .into_iter()
        .find(|p| m.advisories.iter().any(|a| a.priority == *p));
    let n_advisories = m.advisories.len() as u64;
    db.exec("DELETE FROM sessions WHERE id = ?1", args![id])?;
    for table in ["advisories", "events", "attention", "session_channels"] {
        db.exec(
            &format!("DELETE FROM {table} WHERE session_id = ?1"),
            args![id],
        )?;
    }
    db.exec(
        "INSERT INTO sessions (
             id, site, room, patient_id, state, drug, route, created_us, started_us, ended_us,
             planned_minutes, dose_mg_per_kg, weight_kg, n_advisories, has_advisory,
             max_advisory_priority, n_observations, discharge_us, discharge_aldrete, updated_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19, ?20)",
        args![
            id,
            site,
            m.room,
            m.patient_id,
            state_name(m),
            m.protocol.drug,
            m.protocol.route,
            m.created_us,
            m.started_us,
            m.ended_us,
            to_db(m.protocol.planned_minutes),
            m.protocol.dose_mg_per_kg,
            m.protocol.weight_kg,
            to_db(n_advisories),
            n_advisories > 0,
            max_priority,
            to_db(m.observations.len() as u64),
            m.discharge.as_ref().map(|d| d.at_us),
            m.discharge.as_ref().map(|d| d.aldrete),
            now_us,
        ],
    )?;
    for (n, a) in s.attention.iter().enumerate() {
        db.exec(
            "INSERT INTO attention (session_id, n, kind, at_us, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            args![id, to_db(n as u64), a.kind, a.at_us, a.detail],
        )?;
    }
    // A document may hold an id twice (two rooms' concurrent edits); the last one counts,
    // as it did when these were written with SQLite's INSERT OR REPLACE.
    for a in &m.advisories {
        db.exec(
            "INSERT INTO advisories (session_id, id, kind, subject, priority, detail,
                 raised_us, acknowledged_us, acknowledged_by, cleared_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (session_id, id) DO UPDATE SET
                 kind = excluded.kind, subject = excluded.subject, priority = excluded.priority,
                 detail = excluded.detail, raised_us = excluded.raised_us,
                 acknowledged_us = excluded.acknowledged_us,
                 acknowledged_by = excluded.acknowledged_by, cleared_us = excluded.cleared_us",
            args![
                id,
                a.id,
                a.kind,
                a.subject,
                a.priority,
                a.detail,
                a.raised_us,
                a.acknowledged_us,
                a.acknowledged_by,
                a.cleared_us
            ],
        )?;
    }
    let insert_event = "INSERT INTO events (session_id, id, type, at_us, detail, \"by\")
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (session_id, type, id) DO UPDATE SET
             at_us = excluded.at_us, detail = excluded.detail, \"by\" = excluded.\"by\"";
    for e in &m.dose_events {
        db.exec(
            insert_event,
            args![id, e.id, "dose", e.at_us, to_json(id, e)?, e.by],
        )?;
    }
    for o in &m.observations {
        db.exec(
            insert_event,
            args![id, o.id, "observation", o.at_us, to_json(id, o)?, o.by],
        )?;
    }
    for sc in &m.scores {
        db.exec(
            insert_event,
            args![id, sc.id, "score", sc.at_us, to_json(id, sc)?, sc.by],
        )?;
    }
    for (channel, c) in &s.channels {
        // `checksum` stays in the table for databases written before it moved to the read
        // (`digest_channel`); nothing reads it, and 0 is the checksum of no samples.
        db.exec(
            "INSERT INTO session_channels (session_id, channel, samples, first_us, last_us,
                 chunks, corrupt_chunks, checksum, prefix_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            args![
                id,
                channel.name(),
                to_db(c.samples),
                c.first_us,
                c.last_us,
                to_db(c.chunks),
                to_db(c.corrupt_chunks),
                0_i64,
                bits_to_db(c.prefix_hash),
            ],
        )?;
    }
    Ok(())
}

/// The state's stable name, as the document and the API spell it.
fn state_name(m: &SessionMeta) -> String {
    serde_json::to_value(m.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn to_json(id: &str, value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::InvalidDocument {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

/// Empties every projection table (not the documents, not the appliance registry).
pub(crate) fn clear_all(db: &mut dyn Sql) -> Result<(), StoreError> {
    db.batch(
        "DELETE FROM sessions;
         DELETE FROM session_channels;
         DELETE FROM advisories;
         DELETE FROM events;
         DELETE FROM attention;
         DELETE FROM patients;",
    )
}
