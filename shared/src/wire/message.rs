//! The messages of the sync protocol and their hand-written binary encoding (the payload of a
//! frame, before compression). Framing and compression live in `frame.rs`.
//!
//! Layout: one type byte, then the fields in declaration order. Integers are big-endian;
//! strings (UTF-8) and byte strings carry a `u32` length prefix; lists a `u32` item count.
//! Every length is checked against its limit on encode and on decode, so what one side refuses
//! to send the other refuses to accept.

use serde::{Deserialize, Serialize};

use super::WireError;

/// The longest document id, in bytes. Ids are UUIDs (36 characters) with a short kind prefix;
/// 128 leaves room for that and refuses junk early.
pub const MAX_DOC_ID_BYTES: usize = 128;

/// The longest software description in a Hello, in bytes: a name and a version with a git hash.
pub const MAX_SOFTWARE_BYTES: usize = 128;

/// The longest human-readable reason in a Reject, in bytes: one sentence for a log line;
/// [`Message::reject`] truncates longer ones.
pub const MAX_REASON_BYTES: usize = 1024;

/// The most heads in one Durable message. A document has one head per concurrent, not yet
/// merged line of edits — in practice one to a handful (a room, the front desk, the cloud);
/// 1024 is far beyond any real document and still a small message (32 KiB).
pub const MAX_HEADS: usize = 1024;

/// The length of one head: an Automerge change hash (SHA-256).
pub const HEAD_BYTES: usize = 32;

/// The longest enrolment code in an Enrol, in bytes (a code is about 20 characters).
pub const MAX_CODE_BYTES: usize = 64;

/// The longest certificate signing request, in bytes (a P-256 request is about 300).
pub const MAX_CSR_BYTES: usize = 4096;

/// The longest certificate chain in a Certificate message, in bytes (PEM; two certificates
/// are about 1.5 KB).
pub const MAX_CHAIN_BYTES: usize = 16 * 1024;

/// The longest appliance report, in bytes (JSON; a room's report is well under 2 KB).
pub const MAX_REPORT_BYTES: usize = 8 * 1024;

/// The longest site or room name in a Certificate message.
pub const MAX_NAME_BYTES: usize = 64;

const TYPE_HELLO: u8 = 1;
const TYPE_WELCOME: u8 = 2;
const TYPE_SYNC: u8 = 3;
const TYPE_DURABLE: u8 = 4;
const TYPE_REJECT: u8 = 5;
const TYPE_BYE: u8 = 6;
const TYPE_BACKLOG: u8 = 7;
const TYPE_ENROL: u8 = 8;
const TYPE_CERTIFICATE: u8 = 9;
const TYPE_RENEW: u8 = 10;
const TYPE_REPORT: u8 = 11;

/// One message of the sync protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Appliance → cloud, first on a connection: the protocol versions it speaks. Who the
    /// appliance is comes from its client certificate, never from here.
    Hello {
        /// The oldest protocol version the appliance speaks.
        min_version: u16,
        /// The newest protocol version the appliance speaks.
        max_version: u16,
        /// The appliance's software name and version, for logs.
        software: String,
    },
    /// Cloud → appliance: the protocol version of this connection.
    Welcome {
        /// The highest version both sides speak.
        version: u16,
        /// The cloud's clock, microseconds since the Unix epoch, so the appliance can notice a
        /// clock that is off.
        server_time_us: i64,
    },
    /// Either way: one Automerge sync message for one document.
    Sync {
        /// Strictly increasing per connection; see the module docs on replay.
        seq: u64,
        /// The document's id.
        doc_id: String,
        /// What kind of document it is.
        kind: DocKind,
        /// One encoded `automerge::sync::Message`, opaque here.
        message: Vec<u8>,
    },
    /// Cloud → appliance: these heads of the document are on the cloud's disk (fsynced); the
    /// appliance may count every change they include as delivered.
    Durable {
        /// The document's id.
        doc_id: String,
        /// The persisted heads (Automerge change hashes).
        heads: Vec<[u8; HEAD_BYTES]>,
    },
    /// Either way: the sender refuses something and says why; usually the last message before
    /// it closes the stream or the connection.
    Reject {
        /// What kind of refusal, for programs.
        code: RejectCode,
        /// Why, for people, at most [`MAX_REASON_BYTES`].
        reason: String,
    },
    /// Either way: the sender is done with this stream and will close it cleanly.
    Bye,
    /// Appliance → cloud, on the control stream, every few seconds: what is waiting to sync.
    /// Doubles as a heartbeat, so the cloud can tell an idle room from a lost one.
    Backlog {
        /// Documents with changes the cloud has not confirmed.
        docs: u64,
        /// Their approximate size in bytes.
        bytes: u64,
    },
    /// Appliance → cloud, the only message on an enrolment connection (ALPN
    /// [`ENROL_ALPN`](super::ENROL_ALPN), no client certificate): a one-time code and a
    /// certificate request for a key made on the appliance.
    Enrol {
        /// The code's secret part, as `vigil-cloud enrol` printed it.
        code: String,
        /// A PKCS#10 certificate signing request (DER); its subject is ignored.
        csr: Vec<u8>,
        /// The appliance's software name and version, for the audit log.
        software: String,
    },
    /// Cloud → appliance, the answer to Enrol or Renew: the appliance's new certificate.
    Certificate {
        /// The site the certificate names.
        site: String,
        /// The room the certificate names.
        room: String,
        /// The certificate, then the CA's (PEM).
        chain_pem: String,
    },
    /// Appliance → cloud, protocol 2, on a stream of its own: a certificate request for a new
    /// key, to replace the certificate this connection was made with.
    Renew {
        /// A PKCS#10 certificate signing request (DER); its subject is ignored.
        csr: Vec<u8>,
    },
    /// Appliance → cloud, protocol 2, on the control stream: the appliance's health for the
    /// fleet page, as JSON ([`ApplianceReport`](crate::fleet::ApplianceReport)).
    Report {
        /// The report, JSON, at most [`MAX_REPORT_BYTES`].
        json: String,
    },
}

impl Message {
    /// A Reject whose reason is cut (at a character boundary) to [`MAX_REASON_BYTES`], so it
    /// always encodes.
    pub fn reject(code: RejectCode, reason: impl Into<String>) -> Message {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Message::Reject { code, reason }
    }

    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Sync { .. } => "sync",
            Message::Durable { .. } => "durable",
            Message::Reject { .. } => "reject",
            Message::Bye => "bye",
            Message::Backlog { .. } => "backlog",
            Message::Enrol { .. } => "enrol",
            Message::Certificate { .. } => "certificate",
            Message::Renew { .. } => "renew",
            Message::Report { .. } => "report",
        }
    }

    /// Checks every field against its limit; called before encoding and after decoding.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Message::Hello {
                min_version,
                max_version,
                software,
            } => {
                if min_version > max_version {
                    return Err(WireError::Malformed(
                        "hello's min_version is above its max_version",
                    ));
                }
                check_len("software", software.len(), MAX_SOFTWARE_BYTES)
            }
            Message::Welcome { .. } | Message::Bye | Message::Backlog { .. } => Ok(()),
            Message::Sync { doc_id, .. } => check_doc_id(doc_id),
            Message::Durable { doc_id, heads } => {
                check_doc_id(doc_id)?;
                check_len("heads", heads.len(), MAX_HEADS)
            }
            Message::Reject { reason, .. } => check_len("reason", reason.len(), MAX_REASON_BYTES),
            Message::Enrol {
                code,
                csr,
                software,
            } => {
                check_len("code", code.len(), MAX_CODE_BYTES)?;
                check_len("csr", csr.len(), MAX_CSR_BYTES)?;
                check_len("software", software.len(), MAX_SOFTWARE_BYTES)
            }
            Message::Certificate {
                site,
                room,
                chain_pem,
            } => {
                check_len("site", site.len(), MAX_NAME_BYTES)?;
                check_len("room", room.len(), MAX_NAME_BYTES)?;
                check_len("chain_pem", chain_pem.len(), MAX_CHAIN_BYTES)
            }
            Message::Renew { csr } => check_len("csr", csr.len(), MAX_CSR_BYTES),
            Message::Report { json } => check_len("json", json.len(), MAX_REPORT_BYTES),
        }
    }

    /// Appends the payload (type byte and fields) to `out`. Sync's `message` is bounded only by
    /// the frame limit, which the caller checks.
    pub(super) fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.validate()?;
        match self {
            Message::Hello {
                min_version,
                max_version,
                software,
            } => {
                out.push(TYPE_HELLO);
                out.extend_from_slice(&min_version.to_be_bytes());
                out.extend_from_slice(&max_version.to_be_bytes());
                put_bytes(out, software.as_bytes())?;
            }
            Message::Welcome {
                version,
                server_time_us,
            } => {
                out.push(TYPE_WELCOME);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&server_time_us.to_be_bytes());
            }
            Message::Sync {
                seq,
                doc_id,
                kind,
                message,
            } => {
                out.push(TYPE_SYNC);
                out.extend_from_slice(&seq.to_be_bytes());
                put_bytes(out, doc_id.as_bytes())?;
                out.push(kind.code());
                put_bytes(out, message)?;
            }
            Message::Durable { doc_id, heads } => {
                out.push(TYPE_DURABLE);
                put_bytes(out, doc_id.as_bytes())?;
                put_count(out, heads.len())?;
                for head in heads {
                    out.extend_from_slice(head);
                }
            }
            Message::Reject { code, reason } => {
                out.push(TYPE_REJECT);
                out.push(code.code());
                put_bytes(out, reason.as_bytes())?;
            }
            Message::Bye => out.push(TYPE_BYE),
            Message::Backlog { docs, bytes } => {
                out.push(TYPE_BACKLOG);
                out.extend_from_slice(&docs.to_be_bytes());
                out.extend_from_slice(&bytes.to_be_bytes());
            }
            Message::Enrol {
                code,
                csr,
                software,
            } => {
                out.push(TYPE_ENROL);
                put_bytes(out, code.as_bytes())?;
                put_bytes(out, csr)?;
                put_bytes(out, software.as_bytes())?;
            }
            Message::Certificate {
                site,
                room,
                chain_pem,
            } => {
                out.push(TYPE_CERTIFICATE);
                put_bytes(out, site.as_bytes())?;
                put_bytes(out, room.as_bytes())?;
                put_bytes(out, chain_pem.as_bytes())?;
            }
            Message::Renew { csr } => {
                out.push(TYPE_RENEW);
                put_bytes(out, csr)?;
            }
            Message::Report { json } => {
                out.push(TYPE_REPORT);
                put_bytes(out, json.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Decodes one whole payload; trailing bytes are an error.
    pub(super) fn decode_payload(payload: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { rest: payload };
        let message = match r.u8()? {
            TYPE_HELLO => Message::Hello {
                min_version: r.u16()?,
                max_version: r.u16()?,
                software: r.string("software", MAX_SOFTWARE_BYTES)?,
            },
            TYPE_WELCOME => Message::Welcome {
                version: r.u16()?,
                server_time_us: r.i64()?,
            },
            TYPE_SYNC => Message::Sync {
                seq: r.u64()?,
                doc_id: r.string("doc_id", MAX_DOC_ID_BYTES)?,
                kind: DocKind::from_code(r.u8()?)
                    .ok_or(WireError::Malformed("unknown document kind"))?,
                // Bounded by the payload, which the frame layer bounded already.
                message: r.bytes("message", usize::MAX)?.to_vec(),
            },
            TYPE_DURABLE => {
                let doc_id = r.string("doc_id", MAX_DOC_ID_BYTES)?;
                let n_heads = r.count("heads", MAX_HEADS)?;
                let mut heads = Vec::with_capacity(n_heads.min(r.rest.len() / HEAD_BYTES));
                for _ in 0..n_heads {
                    heads.push(r.array::<HEAD_BYTES>()?);
                }
                Message::Durable { doc_id, heads }
            }
            TYPE_REJECT => Message::Reject {
                code: RejectCode::from_code(r.u8()?)
                    .ok_or(WireError::Malformed("unknown reject code"))?,
                reason: r.string("reason", MAX_REASON_BYTES)?,
            },
            TYPE_BYE => Message::Bye,
            TYPE_BACKLOG => Message::Backlog {
                docs: r.u64()?,
                bytes: r.u64()?,
            },
            TYPE_ENROL => Message::Enrol {
                code: r.string("code", MAX_CODE_BYTES)?,
                csr: r.bytes("csr", MAX_CSR_BYTES)?.to_vec(),
                software: r.string("software", MAX_SOFTWARE_BYTES)?,
            },
            TYPE_CERTIFICATE => Message::Certificate {
                site: r.string("site", MAX_NAME_BYTES)?,
                room: r.string("room", MAX_NAME_BYTES)?,
                chain_pem: r.string("chain_pem", MAX_CHAIN_BYTES)?,
            },
            TYPE_RENEW => Message::Renew {
                csr: r.bytes("csr", MAX_CSR_BYTES)?.to_vec(),
            },
            TYPE_REPORT => Message::Report {
                json: r.string("json", MAX_REPORT_BYTES)?,
            },
            other => return Err(WireError::UnknownMessage(other)),
        };
        if !r.rest.is_empty() {
            return Err(WireError::Malformed("trailing bytes after the message"));
        }
        message.validate()?;
        Ok(message)
    }
}

/// The kind of an Automerge document, with a stable one-byte code for the wire and a stable name
/// for storage and APIs. Codes are never reused; a new kind comes with a new protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// One infusion session.
    Session,
    /// One patient.
    Patient,
    /// One site's configuration.
    SiteConfig,
    /// One appliance's audit log (a run of entries; see `crate::audit`).
    Audit,
    /// One site's controlled-substance ledger (see `crate::ledger::doc`); protocol 2.
    Ledger,
}

impl DocKind {
    /// Every kind, in code order.
    pub const ALL: [DocKind; 5] = [
        DocKind::Session,
        DocKind::Patient,
        DocKind::SiteConfig,
        DocKind::Audit,
        DocKind::Ledger,
    ];

    /// The stable wire code.
    pub fn code(self) -> u8 {
        match self {
            DocKind::Session => 1,
            DocKind::Patient => 2,
            DocKind::SiteConfig => 3,
            DocKind::Audit => 4,
            DocKind::Ledger => 5,
        }
    }

    /// The kind with this wire code, if any.
    pub fn from_code(code: u8) -> Option<DocKind> {
        DocKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The stable name: `session`, `patient`, `site_config`, `audit` or `ledger`.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Session => "session",
            DocKind::Patient => "patient",
            DocKind::SiteConfig => "site_config",
            DocKind::Audit => "audit",
            DocKind::Ledger => "ledger",
        }
    }

    /// The kind with this stable name, if any.
    pub fn from_name(name: &str) -> Option<DocKind> {
        DocKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for DocKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a Reject was sent, with a stable one-byte code. Codes are never reused; a new code comes
/// with a new protocol version, so a peer never receives one it doesn't know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// No protocol version in common.
    UnsupportedVersion,
    /// A frame or payload above the limits.
    FrameTooLarge,
    /// Bytes that don't follow the protocol.
    Malformed,
    /// A message type this side doesn't know.
    UnknownMessage,
    /// A document the appliance may not touch (another site's).
    Forbidden,
    /// A change that would break the document's schema; rejected whole.
    SchemaInvalid,
    /// A Sync frame whose seq did not increase.
    Replay,
    /// Too much, too fast; retry later with backoff.
    RateLimited,
    /// The sender failed on its own side (e.g. its disk); retry later.
    Internal,
}

impl RejectCode {
    /// Every code, in code order.
    pub const ALL: [RejectCode; 9] = [
        RejectCode::UnsupportedVersion,
        RejectCode::FrameTooLarge,
        RejectCode::Malformed,
        RejectCode::UnknownMessage,
        RejectCode::Forbidden,
        RejectCode::SchemaInvalid,
        RejectCode::Replay,
        RejectCode::RateLimited,
        RejectCode::Internal,
    ];

    /// The stable wire code.
    pub fn code(self) -> u8 {
        match self {
            RejectCode::UnsupportedVersion => 1,
            RejectCode::FrameTooLarge => 2,
            RejectCode::Malformed => 3,
            RejectCode::UnknownMessage => 4,
            RejectCode::Forbidden => 5,
            RejectCode::SchemaInvalid => 6,
            RejectCode::Replay => 7,
            RejectCode::RateLimited => 8,
            RejectCode::Internal => 9,
        }
    }

    /// The code with this wire value, if any.
    pub fn from_code(code: u8) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::UnsupportedVersion => "unsupported_version",
            RejectCode::FrameTooLarge => "frame_too_large",
            RejectCode::Malformed => "malformed",
            RejectCode::UnknownMessage => "unknown_message",
            RejectCode::Forbidden => "forbidden",
            RejectCode::SchemaInvalid => "schema_invalid",
            RejectCode::Replay => "replay",
            RejectCode::RateLimited => "rate_limited",
            RejectCode::Internal => "internal",
        }
    }

    /// Whether the refused thing may succeed if retried later unchanged (on a new connection,
    /// with backoff); the others need a fix on the sender's side.
    pub fn is_retryable(self) -> bool {
        matches!(self, RejectCode::RateLimited | RejectCode::Internal)
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::FieldTooLong { field, len, max });
    }
    Ok(())
}

fn check_doc_id(doc_id: &str) -> Result<(), WireError> {
    if doc_id.is_empty() {
        return Err(WireError::Malformed("empty doc_id"));
    }
    check_len("doc_id", doc_id.len(), MAX_DOC_ID_BYTES)
}

fn put_count(out: &mut Vec<u8>, n: usize) -> Result<(), WireError> {
    let n = u32::try_from(n).map_err(|_| WireError::Malformed("length does not fit in u32"))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), WireError> {
    put_count(out, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// A cursor over a payload; every read checks there are enough bytes left.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Malformed("message ends inside a field"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn count(&mut self, field: &'static str, max: usize) -> Result<usize, WireError> {
        let n = u32::from_be_bytes(self.array()?);
        // A u32 always fits in usize on the 32- and 64-bit targets we build for; saturating
        // keeps the limit check correct even if it didn't.
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        check_len(field, n, max)?;
        Ok(n)
    }

    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let n = self.count(field, max)?;
        self.take(n)
    }

    fn string(&mut self, field: &'static str, max: usize) -> Result<String, WireError> {
        let bytes = self.bytes(field, max)?;
        let s =
            std::str::from_utf8(bytes).map_err(|_| WireError::Malformed("string is not utf-8"))?;
        Ok(s.to_owned())
    }
}
