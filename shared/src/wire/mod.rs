//! The sync wire protocol between a room appliance and the cloud aggregator: framing, messages,
//! version negotiation and a per-stream replay guard.
//!
//! This module is I/O-free, like the rest of `vigil-shared`: it turns [`Message`]s into bytes
//! ([`encode_message`]) and bytes into messages ([`FrameDecoder`]). It does not open QUIC
//! streams, read clocks or talk TLS; `vigil-edge` and `vigil-cloud` do that and feed bytes in.
//! It does not interpret Automerge sync messages either: [`Message::Sync`] carries them as opaque
//! bytes.
//!
//! # Frames
//!
//! ```text
//! [u32 big-endian length][u8 flags][payload ...]
//!  \_ counts flags + payload, at most MAX_FRAME_BYTES
//! ```
//!
//! Flag bit 0 means the payload is zstd-compressed (one zstd frame that declares its content
//! size); every other bit must be zero. A payload is compressed when it is at least
//! [`COMPRESS_MIN_BYTES`] long and compression makes it smaller. The decoded payload — after
//! decompression — is never longer than [`MAX_PAYLOAD_BYTES`], so a small frame that inflates
//! past that (a "zstd bomb") is rejected before any output buffer is allocated.
//!
//! # Messages
//!
//! The payload starts with a message type byte followed by the fields in order, big-endian,
//! strings and byte strings prefixed by a `u32` length. There is no serde format underneath:
//! the encoding is written out by hand in `message.rs`, so it can't change under us with a
//! library upgrade.
//!
//! # Conversation
//!
//! The appliance opens a connection (ALPN [`ALPN`]) and sends [`Message::Hello`] with the range of
//! protocol versions it speaks; the cloud answers [`Message::Welcome`] with the highest version
//! both speak (see [`answer_hello`]) or [`Message::Reject`]. Then both sides exchange
//! [`Message::Sync`] frames per document; the cloud sends [`Message::Durable`] once a document's
//! changes are on its disk. Who the appliance is (site and room) comes from its TLS client
//! certificate, never from a message field.
//!
//! # Replay
//!
//! TLS 1.3 inside QUIC already stops anyone on the network from replaying or reordering records
//! within a connection, and a new connection has new keys; 0-RTT (whose data *can* be replayed by
//! the network) is off. So the `seq` on [`Message::Sync`] is defence in depth at the application
//! layer: a frame delivered twice within a stream — by a buggy retry loop on our side, or by a
//! misbehaving peer — is refused loudly ([`WireError::Replay`]) instead of being silently
//! re-applied. Automerge would merge a duplicate harmlessly, but the sender's bookkeeping of what
//! was delivered would then be wrong, and we want to know.
//!
//! The sender numbers Sync frames with one [`SeqCounter`] per connection (strictly increasing
//! across all its streams); each receiving [`FrameDecoder`] (one per stream) checks that the
//! numbers it sees strictly increase. Gaps are normal — other streams took those numbers — so
//! the guard checks order, not contiguity.

mod frame;
mod message;

#[cfg(test)]
mod tests;

pub use frame::{
    COMPRESS_MIN_BYTES, FLAG_ZSTD, FRAME_HEADER_BYTES, FrameDecoder, MAX_FRAME_BYTES,
    MAX_PAYLOAD_BYTES, RETAINED_BUFFER_BYTES, ZSTD_LEVEL, encode_message,
};
pub use message::{
    DocKind, HEAD_BYTES, MAX_CHAIN_BYTES, MAX_CODE_BYTES, MAX_CSR_BYTES, MAX_DOC_ID_BYTES,
    MAX_HEADS, MAX_NAME_BYTES, MAX_REASON_BYTES, MAX_REPORT_BYTES, MAX_SOFTWARE_BYTES, Message,
    RejectCode,
};

/// The ALPN protocol id the appliance and the cloud agree on during the TLS handshake.
pub const ALPN: &[u8] = b"vigil-sync/1";

/// The ALPN protocol id of an enrolment: an appliance without a certificate yet sends one
/// [`Message::Enrol`] and gets a [`Message::Certificate`] or a [`Message::Reject`]. The cloud
/// serves nothing else on such a connection.
pub const ENROL_ALPN: &[u8] = b"vigil-enrol/1";

/// Every protocol version this build speaks, oldest first. A new version is added at the end and
/// an old one removed only once no appliance in the field still needs it.
///
/// - 1: Hello/Welcome, Sync, Durable, Reject, Bye, Backlog.
/// - 2: adds Report (the appliance's health, on the control stream) and Renew (a new
///   certificate over the sync connection). A version-1 appliance syncs as before; the fleet
///   page shows it as behind.
pub const PROTOCOL_VERSIONS: &[u16] = &[1, 2];

/// The oldest protocol version this build speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The newest protocol version this build speaks.
pub const MAX_PROTOCOL_VERSION: u16 = 2;

/// The first protocol version with [`Message::Report`] and [`Message::Renew`].
pub const REPORT_VERSION: u16 = 2;

/// Something wrong with the bytes or the conversation on a sync stream.
///
/// Every variant maps to the [`RejectCode`] the receiver sends back ([`WireError::reject_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame's length field is larger than the protocol allows; rejected before its body is
    /// buffered.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The length the frame header announced (or the encoder would have written).
        len: usize,
        /// The limit, [`MAX_FRAME_BYTES`].
        max: usize,
    },
    /// A payload is, or would decompress to, more than the protocol allows.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's length, or the content size a compressed payload declares.
        len: u64,
        /// The limit, [`MAX_PAYLOAD_BYTES`].
        max: usize,
    },
    /// A compressed payload could not be decompressed.
    #[error("cannot decompress payload: {0}")]
    Decompress(String),
    /// The bytes don't follow the frame or message layout.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A string or list field is longer than its limit.
    #[error("field {field} is {len} long, more than the limit of {max}")]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes (strings) or items (lists).
        len: usize,
        /// Its limit.
        max: usize,
    },
    /// The message type byte names no message this version knows.
    #[error("unknown message type {0}")]
    UnknownMessage(u8),
    /// The peer's version range and ours don't overlap.
    #[error("no common protocol version: peer speaks {peer_min}..={peer_max}, we speak {ours:?}")]
    UnsupportedVersion {
        /// The oldest version the peer speaks.
        peer_min: u16,
        /// The newest version the peer speaks.
        peer_max: u16,
        /// The versions we speak.
        ours: &'static [u16],
    },
    /// A Sync frame's sequence number did not increase.
    #[error("replayed or reordered sync frame: seq {got}, expected above {expected_above}")]
    Replay {
        /// The sequence number received.
        got: u64,
        /// The last sequence number accepted on this stream (0 before the first).
        expected_above: u64,
    },
}

impl WireError {
    /// The code to send back to the peer in a [`Message::Reject`] when this error ends a stream.
    pub fn reject_code(&self) -> RejectCode {
        match self {
            WireError::FrameTooLarge { .. } | WireError::PayloadTooLarge { .. } => {
                RejectCode::FrameTooLarge
            }
            WireError::Decompress(_) | WireError::Malformed(_) | WireError::FieldTooLong { .. } => {
                RejectCode::Malformed
            }
            WireError::UnknownMessage(_) => RejectCode::UnknownMessage,
            WireError::UnsupportedVersion { .. } => RejectCode::UnsupportedVersion,
            WireError::Replay { .. } => RejectCode::Replay,
        }
    }

    /// The [`Message::Reject`] that tells the peer about this error.
    pub fn to_reject(&self) -> Message {
        Message::reject(self.reject_code(), self.to_string())
    }
}

/// The highest protocol version in `ours` within the peer's range `peer_min..=peer_max`.
pub fn negotiate_version(
    peer_min: u16,
    peer_max: u16,
    ours: &'static [u16],
) -> Result<u16, WireError> {
    if peer_min > peer_max {
        return Err(WireError::Malformed(
            "hello's min_version is above its max_version",
        ));
    }
    ours.iter()
        .copied()
        .filter(|v| (peer_min..=peer_max).contains(v))
        .max()
        .ok_or(WireError::UnsupportedVersion {
            peer_min,
            peer_max,
            ours,
        })
}

/// The Hello an appliance of this build sends first.
pub fn hello(software: impl Into<String>) -> Message {
    Message::Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: MAX_PROTOCOL_VERSION,
        software: software.into(),
    }
}

/// The cloud's answer to a Hello: Welcome with the negotiated version, or Reject.
///
/// `now_us` is the cloud's clock (microseconds since the Unix epoch), passed in because this
/// module reads no clock; the appliance uses it to notice its own clock is off.
pub fn answer_hello(hello: &Message, now_us: i64) -> Message {
    answer_hello_from(hello, now_us, MIN_PROTOCOL_VERSION)
}

/// [`answer_hello`] from a cloud that no longer accepts versions below `oldest` (its operator
/// retired them): an appliance that speaks nothing newer is told to update.
pub fn answer_hello_from(hello: &Message, now_us: i64, oldest: u16) -> Message {
    if let Message::Hello {
        min_version,
        max_version,
        ..
    } = hello
        && *max_version < oldest
        && min_version <= max_version
    {
        return Message::reject(
            RejectCode::UnsupportedVersion,
            format!(
                "this appliance is too old: it speaks sync protocol {min_version} to {max_version} \
                 and this cloud needs {oldest} or newer; update vigil-edge"
            ),
        );
    }
    match hello {
        Message::Hello {
            min_version,
            max_version,
            ..
        } => match negotiate_version(*min_version, *max_version, PROTOCOL_VERSIONS) {
            Ok(version) => Message::Welcome {
                version,
                server_time_us: now_us,
            },
            Err(e) => e.to_reject(),
        },
        _ => Message::reject(
            RejectCode::Malformed,
            "the first message on a connection must be hello",
        ),
    }
}

/// Hands out the `seq` numbers of outgoing Sync frames: 1, 2, 3, … One per connection, shared by
/// all its streams.
#[derive(Debug, Clone, Default)]
pub struct SeqCounter {
    last: u64,
}

impl SeqCounter {
    /// A counter whose first number is 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next sequence number.
    ///
    /// Saturates at `u64::MAX`; at one frame per nanosecond that is 584 years away, so a
    /// connection never gets there, and if it did the receiver would refuse the repeat.
    pub fn next_seq(&mut self) -> u64 {
        self.last = self.last.saturating_add(1);
        self.last
    }
}

/// Checks that the `seq` of received Sync frames strictly increases (gaps allowed); see the
/// module docs for why. One per receiving stream.
#[derive(Debug, Clone, Default)]
pub struct SeqGuard {
    last: u64,
}

impl SeqGuard {
    /// A guard that accepts any first seq above 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `seq` if it is above every seq accepted before, else [`WireError::Replay`].
    pub fn check(&mut self, seq: u64) -> Result<(), WireError> {
        if seq <= self.last {
            return Err(WireError::Replay {
                got: seq,
                expected_above: self.last,
            });
        }
        self.last = seq;
        Ok(())
    }

    /// The last seq accepted (0 before the first).
    pub fn last(&self) -> u64 {
        self.last
    }
}
