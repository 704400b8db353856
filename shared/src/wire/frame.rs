//! Frames on a sync stream: `[u32 BE length][u8 flags][payload]`, zstd compression of large
//! payloads, and the streaming [`FrameDecoder`] with its memory bound.
//!
//! Not here: the message layout (`message.rs`) and reading from sockets (the callers).

use super::{Message, SeqGuard, WireError};

/// The bytes before a frame's body: the big-endian `u32` length.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The largest value of a frame's length field (flags byte + payload), 8 MiB. A peer missing
/// more than about a third of a document's changes receives the whole document in one Automerge
/// sync message: about 0.5 MB for a 56-minute session with ECG, uncompressed. 8 MiB holds a
/// session several times that long, while a hostile peer can make a stream's decoder hold at
/// most this much.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// The largest payload, before compression on send and after decompression on receive: what
/// fits in a frame next to the flags byte. Capping the decompressed size by the same number
/// means a compressed frame can't make the receiver hold more than an uncompressed one
/// (a "zstd bomb" is refused).
pub const MAX_PAYLOAD_BYTES: usize = MAX_FRAME_BYTES - FLAGS_BYTES;

/// Payloads shorter than this are sent uncompressed: Hello, Welcome, Durable and the small
/// Automerge messages that only exchange heads, where a zstd frame header (about 10 bytes) and
/// the CPU buy nothing.
pub const COMPRESS_MIN_BYTES: usize = 256;

/// zstd level for payloads: level 3 (zstd's default) compresses incremental Automerge sync
/// messages about 3× at a small CPU cost; higher levels gain little on this data.
pub const ZSTD_LEVEL: i32 = 3;

/// Flag bit 0: the payload is one zstd frame that declares its content size.
pub const FLAG_ZSTD: u8 = 0b0000_0001;

/// The buffer capacity an idle decoder keeps, 64 KiB: enough for the usual small frames without
/// reallocating, while a cloud with hundreds of appliances' streams doesn't keep each stream's
/// 8 MiB high-water mark after one whole-document sync.
pub const RETAINED_BUFFER_BYTES: usize = 64 * 1024;

/// The flags field's length.
const FLAGS_BYTES: usize = 1;

/// Encodes one message as a whole frame (header included), compressing it when that helps.
///
/// Fails if a field is over its limit or the payload is over [`MAX_PAYLOAD_BYTES`]; the receiver
/// checks the same limits, so what encodes here also decodes there.
pub fn encode_message(message: &Message) -> Result<Vec<u8>, WireError> {
    let mut payload = Vec::new();
    message.encode_payload(&mut payload)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(WireError::PayloadTooLarge {
            len: payload.len() as u64,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let (flags, body) = if payload.len() >= COMPRESS_MIN_BYTES {
        // The bulk compressor writes the content size into the zstd frame header, which the
        // receiver requires. Should compression fail (it only can for lack of memory), sending
        // the payload as it is is still correct.
        match zstd::bulk::compress(&payload, ZSTD_LEVEL) {
            Ok(compressed) if compressed.len() < payload.len() => (FLAG_ZSTD, compressed),
            _ => (0, payload),
        }
    } else {
        (0, payload)
    };
    let frame_len = FLAGS_BYTES + body.len();
    // Holds because body.len() <= payload.len() <= MAX_PAYLOAD_BYTES; checked anyway so a future
    // change to the limits fails here and not at the receiver.
    let len_field = u32::try_from(frame_len)
        .ok()
        .filter(|_| frame_len <= MAX_FRAME_BYTES)
        .ok_or(WireError::FrameTooLarge {
            len: frame_len,
            max: MAX_FRAME_BYTES,
        })?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + frame_len);
    frame.extend_from_slice(&len_field.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes a frame's body (flags + payload) into a message.
fn decode_body(body: &[u8]) -> Result<Message, WireError> {
    let (&flags, rest) = body
        .split_first()
        .ok_or(WireError::Malformed("frame has no flags byte"))?;
    if flags & !FLAG_ZSTD != 0 {
        return Err(WireError::Malformed("unknown frame flag bits"));
    }
    if flags & FLAG_ZSTD != 0 {
        let payload = decompress(rest)?;
        Message::decode_payload(&payload)
    } else {
        Message::decode_payload(rest)
    }
}

/// Decompresses a payload whose zstd frame declares a content size of at most
/// [`MAX_PAYLOAD_BYTES`], into a buffer of exactly that size: a frame that declares more is
/// refused before anything is allocated, and one that produces more than it declared fails
/// inside zstd for lack of room.
fn decompress(compressed: &[u8]) -> Result<Vec<u8>, WireError> {
    let declared = zstd::zstd_safe::get_frame_content_size(compressed)
        .map_err(|_| WireError::Decompress("invalid zstd frame header".to_owned()))?
        .ok_or(WireError::Malformed(
            "compressed payload does not declare its size",
        ))?;
    if declared > MAX_PAYLOAD_BYTES as u64 {
        return Err(WireError::PayloadTooLarge {
            len: declared,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    // Fits: declared <= MAX_PAYLOAD_BYTES, a usize.
    let declared = declared as usize;
    let payload = zstd::bulk::decompress(compressed, declared)
        .map_err(|e| WireError::Decompress(e.to_string()))?;
    if payload.len() != declared {
        return Err(WireError::Malformed(
            "compressed payload is shorter than it declares",
        ));
    }
    Ok(payload)
}

/// Turns the bytes of one stream, pushed in pieces of any size, back into messages.
///
/// Memory stays bounded: a frame's length is checked against [`MAX_FRAME_BYTES`] as soon as its
/// four header bytes are in, before its body is buffered, so the decoder holds at most one
/// frame plus whatever the caller pushed since it last drained [`FrameDecoder::next_message`].
/// Callers drain it until `Ok(None)` after every push; [`FrameDecoder::bytes_needed`] tells how
/// much to read next so that a read never runs far past the current frame.
///
/// Sync frames must carry strictly increasing `seq` numbers (see the module docs on replay).
/// After an error the decoder is spent: it drops its buffer, ignores further bytes and returns
/// the same error again, because the stream is out of step and the connection should be
/// rejected.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet consumed in `buf`.
    pos: usize,
    seq: SeqGuard,
    failed: Option<WireError>,
}

impl FrameDecoder {
    /// An empty decoder for a new stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received on the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.pos > 0 {
            // Consumed frames are dropped here rather than in `next_message`, so a push of many
            // small frames moves the unconsumed tail once, not once per frame.
            self.buf.drain(..self.pos);
            self.pos = 0;
            if self.buf.capacity() > RETAINED_BUFFER_BYTES
                && self.buf.len() <= RETAINED_BUFFER_BYTES
            {
                self.buf.shrink_to(RETAINED_BUFFER_BYTES);
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or the error that ends the
    /// stream.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.decode_next() {
            Ok(message) => Ok(message),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.pos = 0;
                Err(e)
            }
        }
    }

    fn decode_next(&mut self) -> Result<Option<Message>, WireError> {
        let avail = &self.buf[self.pos..];
        let Some(header) = avail.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Ok(None);
        };
        let frame_len = frame_len(*header)?;
        let Some(body) = avail.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + frame_len) else {
            return Ok(None);
        };
        let message = decode_body(body)?;
        self.pos += FRAME_HEADER_BYTES + frame_len;
        if let Message::Sync { seq, .. } = &message {
            self.seq.check(*seq)?;
        }
        Ok(Some(message))
    }

    /// How many more bytes the decoder needs before the next message can be complete: the rest
    /// of the header, or the rest of the frame once the header is in (0 if a whole frame is
    /// buffered or the decoder failed).
    pub fn bytes_needed(&self) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        let avail = &self.buf[self.pos..];
        match avail.first_chunk::<FRAME_HEADER_BYTES>() {
            None => FRAME_HEADER_BYTES - avail.len(),
            Some(header) => match frame_len(*header) {
                Ok(len) => (FRAME_HEADER_BYTES + len).saturating_sub(avail.len()),
                Err(_) => 0,
            },
        }
    }

    /// Bytes pushed and not yet consumed by a returned message.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The memory the decoder's buffer holds, in bytes, for metrics and tests.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Call when the stream ended: an error if it ended inside a frame (or the decoder failed).
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buffered_bytes() > 0 {
            return Err(WireError::Malformed("stream ended inside a frame"));
        }
        Ok(())
    }
}

/// The frame length a header announces, if within the limits.
fn frame_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, WireError> {
    // u32 → usize is lossless on every target we build for; saturating keeps the check correct.
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    if len < FLAGS_BYTES {
        return Err(WireError::Malformed("frame has no flags byte"));
    }
    Ok(len)
}
