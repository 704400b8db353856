//! One document's sync exchange on one stream, as an I/O-free state machine.
//!
//! Either side may open a stream for a document; the opener is the *initiator*, the other
//! side the *responder*. They take turns: the initiator sends a [`Message::Sync`] (with an
//! Automerge sync message, or empty when it has nothing to say), the responder applies it,
//! persists what changed, may send [`Message::Durable`] with its heads, and answers with a
//! `Sync` of its own. The exchange ends when, in one round, both sides had nothing to say; the
//! initiator then finishes the stream. Every round is bounded ([`MAX_ROUNDS`]) so two confused
//! peers can't ping-pong forever.
//!
//! This module does not read sockets or clocks and does not persist anything: the caller feeds
//! it decoded [`Message`]s, persists when [`Incoming::Changed`] says so, and writes what
//! [`DocSync::outgoing`] returns. `vigil-edge` and `vigil-cloud` drive it over QUIC streams.

use automerge::AutoCommit;
use automerge::sync::{self, SyncDoc};

use crate::wire::{DocKind, HEAD_BYTES, MAX_HEADS, Message, RejectCode, SeqCounter};

/// Most rounds on one document stream. Automerge converges in a handful of round trips
/// (typically 2–4); a hundred more means the peers disagree about something and should stop.
pub const MAX_ROUNDS: u32 = 128;

/// Why a document exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The bytes inside a Sync frame are not an Automerge sync message.
    #[error("malformed automerge sync message: {0}")]
    Malformed(String),
    /// Automerge refused to apply the message (e.g. a change whose dependencies are broken).
    #[error("cannot apply sync message: {0}")]
    Apply(String),
    /// The exchange went on for more than [`MAX_ROUNDS`] rounds.
    #[error("document exchange exceeded {MAX_ROUNDS} rounds")]
    TooManyRounds,
    /// A frame for another document arrived on this document's stream.
    #[error("frame for document {got:?} on the stream of {expected:?}")]
    WrongDocument {
        /// The stream's document.
        expected: String,
        /// The frame's document.
        got: String,
    },
    /// A message that makes no sense at this point of the exchange.
    #[error("unexpected {0} frame on a document stream")]
    Unexpected(&'static str),
    /// The peer rejected the exchange.
    #[error("peer rejected: {code}: {reason}")]
    Rejected {
        /// The reject code.
        code: RejectCode,
        /// The peer's reason.
        reason: String,
    },
}

impl SyncError {
    /// The reject code to send the peer for this error.
    pub fn reject_code(&self) -> RejectCode {
        match self {
            SyncError::Malformed(_)
            | SyncError::WrongDocument { .. }
            | SyncError::Unexpected(_) => RejectCode::Malformed,
            SyncError::Apply(_) => RejectCode::SchemaInvalid,
            SyncError::TooManyRounds => RejectCode::RateLimited,
            SyncError::Rejected { code, .. } => *code,
        }
    }
}

/// Which end of the stream this side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the stream; decides when the exchange is over.
    Initiator,
    /// Accepted the stream; answers every message.
    Responder,
}

/// What a received frame meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A sync message was applied; `true` if the document gained changes (persist them before
    /// answering, and validate first where the peer is not trusted).
    Changed(bool),
    /// The peer has made these heads durable.
    Durable(Vec<automerge::ChangeHash>),
}

/// One document's exchange on one stream.
#[derive(Debug)]
pub struct DocSync {
    doc_id: String,
    kind: DocKind,
    role: Role,
    state: sync::State,
    rounds: u32,
    /// Our last Sync carried nothing.
    sent_empty: bool,
    /// The peer's last Sync carried nothing.
    received_empty: bool,
    /// A Sync from the peer has arrived since we last sent one.
    answered: bool,
}

impl DocSync {
    /// A new exchange with the given (possibly persisted) sync state.
    pub fn new(
        role: Role,
        doc_id: impl Into<String>,
        kind: DocKind,
        state: sync::State,
    ) -> DocSync {
        DocSync {
            doc_id: doc_id.into(),
            kind,
            role,
            state,
            rounds: 0,
            sent_empty: false,
            received_empty: false,
            // The initiator speaks first; the responder waits for a message.
            answered: role == Role::Initiator,
        }
    }

    /// The document's id.
    pub fn doc_id(&self) -> &str {
        &self.doc_id
    }

    /// The document's kind.
    pub fn kind(&self) -> DocKind {
        self.kind
    }

    /// The sync state, to persist between connections.
    pub fn state(&self) -> &sync::State {
        &self.state
    }

    /// The next frame to send, or `None` when the exchange is over (initiator) or it is not our
    /// turn yet.
    pub fn outgoing(
        &mut self,
        doc: &mut AutoCommit,
        seq: &mut SeqCounter,
    ) -> Result<Option<Message>, SyncError> {
        if !self.answered {
            return Ok(None);
        }
        if self.role == Role::Initiator && self.rounds > 0 && self.sent_empty && self.received_empty
        {
            return Ok(None);
        }
        self.rounds += 1;
        if self.rounds > MAX_ROUNDS {
            return Err(SyncError::TooManyRounds);
        }
        let message = doc.sync().generate_sync_message(&mut self.state);
        self.sent_empty = message.is_none();
        self.answered = false;
        Ok(Some(Message::Sync {
            seq: seq.next_seq(),
            doc_id: self.doc_id.clone(),
            kind: self.kind,
            message: message.map(sync::Message::encode).unwrap_or_default(),
        }))
    }

    /// Whether the initiator has finished (both sides had nothing to say in one round).
    pub fn is_done(&self) -> bool {
        self.role == Role::Initiator
            && self.answered
            && self.rounds > 0
            && self.sent_empty
            && self.received_empty
    }

    /// Applies a received frame to `doc`.
    pub fn incoming(
        &mut self,
        doc: &mut AutoCommit,
        message: Message,
    ) -> Result<Incoming, SyncError> {
        match message {
            Message::Sync {
                doc_id, message, ..
            } => {
                if doc_id != self.doc_id {
                    return Err(SyncError::WrongDocument {
                        expected: self.doc_id.clone(),
                        got: doc_id,
                    });
                }
                if self.answered && self.role == Role::Initiator {
                    return Err(SyncError::Unexpected("second Sync"));
                }
                self.answered = true;
                self.received_empty = message.is_empty();
                if message.is_empty() {
                    return Ok(Incoming::Changed(false));
                }
                let decoded = sync::Message::decode(&message)
                    .map_err(|e| SyncError::Malformed(e.to_string()))?;
                let before = doc.get_heads();
                doc.sync()
                    .receive_sync_message(&mut self.state, decoded)
                    .map_err(|e| SyncError::Apply(e.to_string()))?;
                Ok(Incoming::Changed(doc.get_heads() != before))
            }
            Message::Durable { doc_id, heads } => {
                if doc_id != self.doc_id {
                    return Err(SyncError::WrongDocument {
                        expected: self.doc_id.clone(),
                        got: doc_id,
                    });
                }
                Ok(Incoming::Durable(
                    heads.into_iter().map(automerge::ChangeHash).collect(),
                ))
            }
            Message::Reject { code, reason } => Err(SyncError::Rejected { code, reason }),
            other => Err(SyncError::Unexpected(other.name())),
        }
    }
}

/// A [`Message::Durable`] for a document's current heads (at most [`MAX_HEADS`] of them; a
/// document with more concurrent heads than that is reported by its first ones, which is
/// conservative: the peer then counts fewer changes as delivered).
pub fn durable(doc_id: &str, heads: &[automerge::ChangeHash]) -> Message {
    Message::Durable {
        doc_id: doc_id.to_owned(),
        heads: heads
            .iter()
            .take(MAX_HEADS)
            .map(|h| h.0)
            .collect::<Vec<[u8; HEAD_BYTES]>>(),
    }
}

/// Whether every change in `doc` is covered by `confirmed` heads, i.e. the peer that made
/// those heads durable has everything this document has.
pub fn all_delivered(doc: &mut AutoCommit, confirmed: &[automerge::ChangeHash]) -> bool {
    let heads = doc.get_heads();
    if heads.iter().all(|h| confirmed.contains(h)) {
        return true;
    }
    // Confirmed heads we don't know can't vouch for anything of ours.
    if !doc.get_missing_deps(confirmed).is_empty() {
        return false;
    }
    doc.get_changes(confirmed).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn doc_with(key: &str, value: i64) -> AutoCommit {
        let mut d = AutoCommit::new();
        d.put(automerge::ROOT, key, value).unwrap();
        d
    }

    /// Runs an exchange to completion, the way the two ends do over a stream.
    fn exchange(a: &mut AutoCommit, b: &mut AutoCommit) -> u32 {
        let mut seq_a = SeqCounter::new();
        let mut seq_b = SeqCounter::new();
        let mut init = DocSync::new(Role::Initiator, "d", DocKind::Patient, sync::State::new());
        let mut resp = DocSync::new(Role::Responder, "d", DocKind::Patient, sync::State::new());
        let mut rounds = 0;
        while let Some(m) = init.outgoing(a, &mut seq_a).unwrap() {
            rounds += 1;
            resp.incoming(b, m).unwrap();
            let reply = resp
                .outgoing(b, &mut seq_b)
                .unwrap()
                .expect("responder always answers");
            init.incoming(a, reply).unwrap();
        }
        assert!(init.is_done());
        rounds
    }

    #[test]
    fn exchange_converges_both_ways_and_ends() {
        let mut a = doc_with("x", 1);
        let mut b = a.fork();
        b.put(automerge::ROOT, "y", 2).unwrap();
        a.put(automerge::ROOT, "z", 3).unwrap();
        let rounds = exchange(&mut a, &mut b);
        assert!(rounds <= 4, "{rounds}");
        assert_eq!(a.get_heads(), b.get_heads());
        // Nothing new: one round of two empty messages.
        assert_eq!(exchange(&mut a, &mut b), 2);
    }

    #[test]
    fn garbage_and_wrong_document_are_errors() {
        let mut a = doc_with("x", 1);
        let mut s = DocSync::new(Role::Responder, "d", DocKind::Session, sync::State::new());
        let bad = Message::Sync {
            seq: 1,
            doc_id: "d".into(),
            kind: DocKind::Session,
            message: vec![0x42, 1, 2],
        };
        assert!(matches!(
            s.incoming(&mut a, bad),
            Err(SyncError::Malformed(_))
        ));
        let other = Message::Sync {
            seq: 2,
            doc_id: "e".into(),
            kind: DocKind::Session,
            message: vec![],
        };
        assert!(matches!(
            s.incoming(&mut a, other),
            Err(SyncError::WrongDocument { .. })
        ));
        assert!(matches!(
            s.incoming(&mut a, Message::Bye),
            Err(SyncError::Unexpected(_))
        ));
    }

    #[test]
    fn delivered_only_when_confirmed_heads_cover_everything() {
        let mut a = doc_with("x", 1);
        let confirmed = a.get_heads();
        assert!(all_delivered(&mut a, &confirmed));
        a.put(automerge::ROOT, "x", 2).unwrap();
        assert!(!all_delivered(&mut a, &confirmed));
        assert!(!all_delivered(&mut a, &[]));
        let unknown = [automerge::ChangeHash([7; 32])];
        assert!(!all_delivered(&mut a, &unknown));
        let now = a.get_heads();
        assert!(all_delivered(&mut a, &now));
    }

    #[test]
    fn rounds_are_bounded() {
        let mut a = doc_with("x", 1);
        let mut seq = SeqCounter::new();
        let mut s = DocSync::new(Role::Responder, "d", DocKind::Session, sync::State::new());
        let empty = |n| Message::Sync {
            seq: n,
            doc_id: "d".into(),
            kind: DocKind::Session,
            message: vec![],
        };
        let mut result = Ok(None);
        for n in 0..=u64::from(MAX_ROUNDS) {
            s.incoming(&mut a, empty(n)).unwrap();
            result = s.outgoing(&mut a, &mut seq);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SyncError::TooManyRounds));
    }
}
