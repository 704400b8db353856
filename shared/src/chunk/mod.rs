//! The vitals chunk codec: an immutable, self-describing byte string that holds the samples of
//! one channel over a short span (the recorder closes one every 10 s by default).
//!
//! A session document stores each channel as an append-only list of these chunks (DESIGN.md,
//! "Documents"), so this format is what every appliance and the cloud must read for as long as
//! recordings are kept: the first byte is [`CODEC_VERSION`], and a decoder rejects versions it
//! does not know. This module only turns samples into bytes and back. It does not decide when a
//! chunk closes (the recorder in `vigil-edge` does), and it does no I/O.
//!
//! Decoding treats its input as hostile: every malformed byte string is a [`ChunkError`], never
//! a panic, and memory is bounded: at most [`MAX_CHUNK_SAMPLES`] samples (a version-2 chunk of a
//! constant signal holds thousands of samples in a few bytes, so the count is the bound) and
//! [`MAX_CHUNK_BYTES`] bytes of body.
//!
//! # Layout, codec version 1
//!
//! ```text
//! u8      codec version (1)
//! u8      channel code (Channel::code)
//! u8      layout: bits 0-1 time layout (0 period, 1 rate, 2 deltas),
//!                 bit 2 body is one zstd frame, bits 3-7 zero
//! varint  n_samples, 1..=MAX_CHUNK_SAMPLES
//! i64 LE  start time: the first sample's t_us
//! time parameters, by time layout:
//!   period  varint period_us             t_k = start + k * period_us
//!   rate    varint num, den, phase       t_k = start + floor((k * num + phase) / den)
//!   deltas  varint base_us               per-sample deltas follow in the body
//! if compressed: varint length of the uncompressed body
//! body (raw, or one zstd frame), up to the last byte:
//!   deltas layout only: n_samples - 1 zigzag varints of (t_k - t_(k-1) - base_us)
//!   then, column by column for each of the channel's dims: n_samples zigzag varints,
//!   the first value and then the differences v_k - v_(k-1)
//! ```
//!
//! Varints are unsigned LEB128 in their shortest form; zigzag maps small signed numbers to
//! small unsigned ones. Fixed-rate channels cost O(1) bytes of time: exact periods (250 Hz ECG:
//! 4 000 µs) use `period`, and rates whose period is not a whole number of microseconds (Polar's
//! 130 Hz ECG, timed `t0 + floor(k * 1e6 / 130)`) use `rate`. Jittered times (1 Hz readings
//! stamped on arrival) store each delta's distance from the median delta. Values are grouped by
//! dimension because a column of similar small differences compresses better than interleaved
//! ones. The version-1 encoder stores bodies raw (see [`Chunk::encode_v1`]); the decoder also
//! reads bodies compressed with zstd.
//!
//! # Layout, codec version 2
//!
//! The header is version 1's with version byte 2 and the compressed bit (bit 2) always zero:
//! entropy-coded columns leave nothing for zstd. The body is the same columns in the same order
//! (the time residuals for the `deltas` layout, then one column per dimension), each starting
//! with a column byte that says how it is coded: version 1's varints, or a common factor taken
//! out, a fixed polynomial predictor of order 0 to 4 and the residuals Rice-coded or range-coded
//! (see `column`). The encoder keeps the smallest per column, so a version-2 chunk is never
//! more than a byte per column larger than version 1's. [`Chunk::encode`] writes version 2;
//! [`Chunk::decode`] and [`peek_header`] read both, and always will.
//!
//! [`encode_raw_delta_varint`] is the plain sample-by-sample baseline the benches compare
//! against; it is not a chunk and has no header.

mod column;
mod range;
mod rice;

use crate::vitals::{Channel, MAX_DIMS, Sample};
use column::ColumnKind;

/// The codec version this build writes. It reads every version from 1 up to this one. Bump it
/// for any change to the layout; decoders must keep reading every version ever written.
pub const CODEC_VERSION: u8 = 2;

/// The first codec version: plain delta-varint columns, optionally one zstd frame.
pub const CODEC_VERSION_1: u8 = 1;

/// Most samples one chunk may hold. A 10 s chunk of 250 Hz ECG holds 2 500 samples and of the
/// fastest source we expect (500 Hz) 5 000; 65 536 leaves room for longer chunk periods while
/// bounding what a decoder allocates for a hostile count (65 536 samples of 24 bytes = 1.5 MiB).
pub const MAX_CHUNK_SAMPLES: usize = 65_536;

/// Largest encoded chunk, and largest declared uncompressed body, in bytes. A 10 s chunk of
/// 250 Hz ECG is about 2 KB; a chunk is one Automerge bytes value and travels whole in one
/// sync message, so it must stay far below the sync frame limit. 1 MiB still holds
/// [`MAX_CHUNK_SAMPLES`] samples of a three-value channel at realistic deltas; anything bigger
/// is corrupt or hostile.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Longest LEB128 encoding of a u64: ceil(64 / 7) bytes.
pub const MAX_VARINT_BYTES: usize = 10;

/// Longest varint of a zigzagged value difference: differences of two i32 lie within ±2^32, so
/// their zigzag is below 2^33 and fits in ceil(33 / 7) bytes. Bounds the uncompressed body.
const MAX_VALUE_VARINT_BYTES: usize = 5;

/// zstd level for chunk bodies. On 10 s of synthetic 250 Hz ECG, levels 3 to 19 differ by under
/// 1 % in size, and level 3 costs microseconds per chunk.
const ZSTD_LEVEL: i32 = 3;

/// Bodies shorter than this are stored raw without trying zstd: a zstd frame costs about a dozen
/// bytes of framing, and the short bodies of 1 Hz channels never win that back.
const MIN_COMPRESS_BODY_BYTES: usize = 128;

/// Numerators tried for the `rate` time layout, in µs: a period of 1e6 / rate_hz µs or of
/// 1e9 / rate_mhz µs. Sources derive sample times from a nominal rate (Polar's 130 Hz ECG:
/// `t0 + floor(k * 1e6 / 130)`), so these two cover every whole-Hz and whole-mHz rate.
const RATE_NUMERATORS_US: [u64; 2] = [1_000_000, 1_000_000_000];

/// Most denominators tried per numerator for the `rate` layout. Over a 10 s chunk the
/// observed span pins a whole-Hz rate to one candidate; a handful of samples of a fast source
/// leaves a few, and 32 covers 5 kHz from eight samples on while bounding the encoder's work.
const MAX_RATE_CANDIDATES: u128 = 32;

/// Bits 0-1 of the layout byte: how sample times are stored.
const LAYOUT_TIME_BITS: u8 = 0b0000_0011;
/// Bit 2 of the layout byte: the body is one zstd frame.
const LAYOUT_COMPRESSED: u8 = 0b0000_0100;
/// Time layout code for [`TimeLayout::Period`].
const TIME_PERIOD: u8 = 0;
/// Time layout code for [`TimeLayout::Rate`].
const TIME_RATE: u8 = 1;
/// Time layout code for [`TimeLayout::Deltas`].
const TIME_DELTAS: u8 = 2;

/// Why samples could not be encoded into a chunk, or bytes could not be decoded as one.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// There are no samples; the recorder never closes an empty chunk.
    #[error("chunk has no samples")]
    Empty,
    /// More samples than [`MAX_CHUNK_SAMPLES`] (encoding), or a header claiming so (decoding).
    #[error("chunk has {n_samples} samples, more than the limit of {MAX_CHUNK_SAMPLES}")]
    TooManySamples {
        /// How many samples there are or are claimed.
        n_samples: u64,
    },
    /// The chunk, or its declared uncompressed body, is larger than [`MAX_CHUNK_BYTES`].
    #[error("chunk needs {n_bytes} bytes, more than the limit of {MAX_CHUNK_BYTES}")]
    TooLarge {
        /// The size in bytes.
        n_bytes: u64,
    },
    /// A sample is earlier than the one before it; a chunk's times never go backwards.
    #[error("sample {index} at {t_us} us is earlier than the sample before it at {prev_us} us")]
    TimeWentBackwards {
        /// Index of the offending sample.
        index: usize,
        /// Its time.
        t_us: i64,
        /// The previous sample's time.
        prev_us: i64,
    },
    /// A sample has a non-zero value in a dimension its channel does not use.
    #[error(
        "sample {index} has value {value} in dimension {dim}, which channel {channel} does not use"
    )]
    UnusedDimension {
        /// Index of the offending sample.
        index: usize,
        /// The unused dimension (0-based).
        dim: usize,
        /// The value found there.
        value: i32,
        /// The chunk's channel.
        channel: Channel,
    },
    /// The bytes end before the chunk does.
    #[error("chunk is truncated at byte {offset}")]
    Truncated {
        /// Where more bytes were needed (within the uncompressed body for compressed chunks).
        offset: usize,
    },
    /// The first byte names a codec version this build cannot read.
    #[error(
        "unknown chunk codec version {version}; this build reads versions 1 to {CODEC_VERSION}"
    )]
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },
    /// The channel code matches no [`Channel`].
    #[error("unknown channel code {code} in chunk header")]
    UnknownChannel {
        /// The code found.
        code: u8,
    },
    /// The layout byte has an unknown time layout or reserved bits set.
    #[error("unknown chunk layout byte {layout:#04x}")]
    UnknownLayout {
        /// The layout byte found.
        layout: u8,
    },
    /// A varint is longer than ten bytes, overflows a u64 or is not in its shortest form.
    #[error("malformed varint at byte {offset}")]
    BadVarint {
        /// Where the varint starts.
        offset: usize,
    },
    /// A `rate` time layout has a zero denominator or a phase not below it.
    #[error("chunk rate time layout is invalid (denominator {den}, phase {phase})")]
    BadRate {
        /// The denominator found.
        den: u64,
        /// The phase found.
        phase: u64,
    },
    /// The header claims more samples than the remaining bytes could hold.
    #[error("chunk header claims {n_samples} samples but its body has only {n_bytes} bytes")]
    CountExceedsBytes {
        /// The claimed count.
        n_samples: usize,
        /// The bytes available for the body.
        n_bytes: usize,
    },
    /// The compressed body is not one valid zstd frame of exactly the declared length.
    #[error("compressed chunk body is corrupt or not the declared {n_bytes} bytes long")]
    BadCompressedBody {
        /// The declared uncompressed length.
        n_bytes: usize,
    },
    /// Accumulating a time or value left its type's range.
    #[error("{what} of sample {index} overflows")]
    Overflow {
        /// `"time"` or `"value"`.
        what: &'static str,
        /// Index of the sample.
        index: usize,
    },
    /// A version-2 column is malformed: an unknown coding, a factor of zero, a residual
    /// stream that is not what its length says.
    #[error("malformed chunk column: {reason}")]
    BadColumn {
        /// What is wrong.
        reason: &'static str,
    },
    /// Bytes remain after the last value.
    #[error("{n_bytes} unexpected bytes after the end of the chunk")]
    TrailingBytes {
        /// How many bytes remain.
        n_bytes: usize,
    },
}

/// How a chunk stores its sample times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeLayout {
    /// Sample k is at `start + k * period_us` (0 when every sample has the same time).
    Period {
        /// Time between consecutive samples, µs.
        period_us: u64,
    },
    /// Sample k is at `start + floor((k * num + phase) / den)`: a fixed rate whose period,
    /// `num / den` µs, is not a whole number of microseconds.
    Rate {
        /// Numerator of the period, µs.
        num: u64,
        /// Denominator of the period, at least 1.
        den: u64,
        /// Offset of the first sample within the microsecond, below `den`.
        phase: u64,
    },
    /// The body holds each delta as its zigzagged difference from `base_us`.
    Deltas {
        /// The typical delta (the median when encoding), µs.
        base_us: u64,
    },
}

/// What a chunk's header says, read without decoding its times or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The codec version byte.
    pub codec_version: u8,
    /// Whose samples the chunk holds.
    pub channel: Channel,
    /// How many samples, 1..=[`MAX_CHUNK_SAMPLES`].
    pub n_samples: usize,
    /// Time of the first sample, µs since the Unix epoch.
    pub start_us: i64,
    /// How the sample times are stored.
    pub time_layout: TimeLayout,
    /// Whether the body is zstd-compressed.
    pub compressed: bool,
}

impl ChunkHeader {
    /// Time of the last sample when the header alone determines it (the `period` and `rate`
    /// layouts); `None` for per-sample deltas or a time that overflows.
    pub fn end_us(&self) -> Option<i64> {
        let last = self.n_samples.checked_sub(1)?;
        let offset_us = fixed_offset_us(self.time_layout, last)?;
        self.start_us.checked_add_unsigned(offset_us)
    }
}

/// The samples of one channel over one span: the unit the recorder closes and a session
/// document stores as one bytes value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Whose samples these are.
    pub channel: Channel,
    /// The samples, times non-decreasing; values beyond `channel.dims()` are zero.
    pub samples: Vec<Sample>,
}

impl Chunk {
    /// Encodes the chunk in the current codec version, [`CODEC_VERSION`].
    ///
    /// Fails if there are no samples or more than [`MAX_CHUNK_SAMPLES`], if times go backwards,
    /// if an unused dimension holds a non-zero value, or if the result would exceed
    /// [`MAX_CHUNK_BYTES`]. Time and value arithmetic cannot overflow here: deltas of
    /// non-decreasing i64 times fit a u64, and differences of i32 values fit an i64.
    pub fn encode(&self) -> Result<Vec<u8>, ChunkError> {
        self.validate()?;
        let time_layout = choose_time_layout(&self.samples);
        let mut out = Vec::with_capacity(32 + self.samples.len() * 2);
        self.write_header(&mut out, CODEC_VERSION, time_layout, false);
        if let TimeLayout::Deltas { base_us } = time_layout {
            let residuals: Vec<i64> = self
                .samples
                .windows(2)
                .map(|pair| time_residual(pair[0].t_us, pair[1].t_us, base_us))
                .collect();
            column::encode(&mut out, &residuals, ColumnKind::TimeResiduals);
        }
        for dim in 0..self.channel.dims() {
            let values: Vec<i64> = self.samples.iter().map(|s| i64::from(s.v[dim])).collect();
            column::encode(&mut out, &values, ColumnKind::Values);
        }
        if out.len() > MAX_CHUNK_BYTES {
            return Err(ChunkError::TooLarge {
                n_bytes: out.len() as u64,
            });
        }
        debug_assert_eq!(Chunk::decode(&out).as_ref(), Ok(self), "chunk round trip");
        Ok(out)
    }

    /// Encodes the chunk in codec version 1, whose columns are plain delta-varints: what
    /// appliances wrote before version 2, kept for comparisons and for tests of every reader.
    /// New chunks are written with [`Chunk::encode`].
    pub fn encode_v1(&self) -> Result<Vec<u8>, ChunkError> {
        // Version-1 bodies are stored raw: Automerge compresses saved documents (deflate) and
        // the sync protocol compresses frames (zstd), and both did better on raw delta-varints
        // than on bodies someone already compressed (measured: a 56-minute ECG session saved
        // as 720 KB raw vs 743 KB with zstd inside, and 14.5 KB vs 14.9 KB on the wire for one
        // more minute). Compressed bodies stay readable (layout flag bit 2).
        self.encode_inner(false)
    }

    /// Encodes in version 1 with the body zstd-compressed when that makes the chunk smaller:
    /// for tests of the decoder's compressed path.
    #[cfg(test)]
    fn encode_compressed(&self) -> Result<Vec<u8>, ChunkError> {
        self.encode_inner(true)
    }

    /// Writes the header fields every version shares, up to and including the time
    /// parameters. `validate()` must have passed (there is a first sample).
    fn write_header(
        &self,
        out: &mut Vec<u8>,
        version: u8,
        time_layout: TimeLayout,
        compressed: bool,
    ) {
        out.push(version);
        out.push(self.channel.code());
        let time_bits = match time_layout {
            TimeLayout::Period { .. } => TIME_PERIOD,
            TimeLayout::Rate { .. } => TIME_RATE,
            TimeLayout::Deltas { .. } => TIME_DELTAS,
        };
        let compressed_bit = if compressed { LAYOUT_COMPRESSED } else { 0 };
        out.push(time_bits | compressed_bit);
        encode_varint_u64(out, self.samples.len() as u64);
        let start_us = self.samples.first().map_or(0, |s| s.t_us);
        out.extend_from_slice(&start_us.to_le_bytes());
        match time_layout {
            TimeLayout::Period { period_us } => encode_varint_u64(out, period_us),
            TimeLayout::Rate { num, den, phase } => {
                encode_varint_u64(out, num);
                encode_varint_u64(out, den);
                encode_varint_u64(out, phase);
            }
            TimeLayout::Deltas { base_us } => encode_varint_u64(out, base_us),
        }
    }

    fn encode_inner(&self, compress: bool) -> Result<Vec<u8>, ChunkError> {
        self.validate()?;
        let dims = self.channel.dims();
        let n_samples = self.samples.len();
        let time_layout = choose_time_layout(&self.samples);

        let mut body = Vec::with_capacity(n_samples * (dims + 1) + 16);
        if let TimeLayout::Deltas { base_us } = time_layout {
            for pair in self.samples.windows(2) {
                let residual = time_residual(pair[0].t_us, pair[1].t_us, base_us);
                encode_varint_u64(&mut body, zigzag_encode(residual));
            }
        }
        for dim in 0..dims {
            let mut prev = 0_i64;
            for sample in &self.samples {
                let value = i64::from(sample.v[dim]);
                encode_varint_u64(&mut body, zigzag_encode(value - prev));
                prev = value;
            }
        }

        let compressed = if compress && body.len() >= MIN_COMPRESS_BODY_BYTES {
            // A compression failure only costs size, so the raw body is kept instead.
            zstd::bulk::compress(&body, ZSTD_LEVEL)
                .ok()
                .filter(|frame| frame.len() + varint_len(body.len() as u64) < body.len())
        } else {
            None
        };

        let mut out = Vec::with_capacity(32 + body.len());
        self.write_header(&mut out, CODEC_VERSION_1, time_layout, compressed.is_some());
        match compressed {
            Some(frame) => {
                encode_varint_u64(&mut out, body.len() as u64);
                out.extend_from_slice(&frame);
            }
            None => out.extend_from_slice(&body),
        }

        if out.len() > MAX_CHUNK_BYTES {
            return Err(ChunkError::TooLarge {
                n_bytes: out.len() as u64,
            });
        }
        debug_assert_eq!(Chunk::decode(&out).as_ref(), Ok(self), "chunk round trip");
        Ok(out)
    }

    /// Decodes a chunk of any codec version this build knows. Never panics; allocates at most
    /// what the bytes can hold; rejects trailing bytes and times or values that overflow.
    pub fn decode(bytes: &[u8]) -> Result<Chunk, ChunkError> {
        let parsed = parse_header(bytes)?;
        let chunk = match parsed.header.codec_version {
            CODEC_VERSION_1 => decode_v1_body(bytes, &parsed)?,
            _ => decode_v2_body(bytes, &parsed)?,
        };
        debug_assert_eq!(chunk.validate(), Ok(()), "decoded chunk is valid");
        Ok(chunk)
    }

    /// Time of the first sample.
    pub fn start_us(&self) -> Option<i64> {
        self.samples.first().map(|s| s.t_us)
    }

    /// Time of the last sample.
    pub fn end_us(&self) -> Option<i64> {
        self.samples.last().map(|s| s.t_us)
    }

    /// Checks what [`Chunk::encode`] requires of the samples.
    pub fn validate(&self) -> Result<(), ChunkError> {
        if self.samples.is_empty() {
            return Err(ChunkError::Empty);
        }
        if self.samples.len() > MAX_CHUNK_SAMPLES {
            return Err(ChunkError::TooManySamples {
                n_samples: self.samples.len() as u64,
            });
        }
        let dims = self.channel.dims();
        let mut prev_us = i64::MIN;
        for (index, sample) in self.samples.iter().enumerate() {
            if sample.t_us < prev_us {
                return Err(ChunkError::TimeWentBackwards {
                    index,
                    t_us: sample.t_us,
                    prev_us,
                });
            }
            prev_us = sample.t_us;
            for dim in dims..MAX_DIMS {
                if sample.v[dim] != 0 {
                    return Err(ChunkError::UnusedDimension {
                        index,
                        dim,
                        value: sample.v[dim],
                        channel: self.channel,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The body of a version-1 chunk: plain delta-varint columns, raw or as one zstd frame.
fn decode_v1_body(bytes: &[u8], parsed: &ParsedHeader) -> Result<Chunk, ChunkError> {
    let header = parsed.header;

    let n_samples = header.n_samples;
    let dims = header.channel.dims();
    let has_deltas = matches!(header.time_layout, TimeLayout::Deltas { .. });
    // Every varint takes at least one byte: one per delta and one per value.
    let min_body_bytes = (if has_deltas { n_samples - 1 } else { 0 }) + n_samples * dims;
    // A raw body is read in place so that error offsets count from the chunk's first byte;
    // a compressed one is read from its decompressed copy, offsets counting from its start.
    let decompressed;
    let (body, mut pos): (&[u8], usize) = match parsed.body_len {
        None => (bytes, parsed.body_offset),
        Some(n_bytes) => {
            let max_time_bytes = if has_deltas {
                (n_samples - 1) * MAX_VARINT_BYTES
            } else {
                0
            };
            let max_body_bytes = max_time_bytes + n_samples * dims * MAX_VALUE_VARINT_BYTES;
            if n_bytes < min_body_bytes {
                return Err(ChunkError::CountExceedsBytes { n_samples, n_bytes });
            }
            if n_bytes > max_body_bytes {
                return Err(ChunkError::BadCompressedBody { n_bytes });
            }
            let frame = bytes.get(parsed.body_offset..).unwrap_or_default();
            decompressed = decompress_body(frame, n_bytes)?;
            (&decompressed, 0)
        }
    };
    let body_bytes = body.len().saturating_sub(pos);
    if body_bytes < min_body_bytes {
        return Err(ChunkError::CountExceedsBytes {
            n_samples,
            n_bytes: body_bytes,
        });
    }

    let mut samples = Vec::with_capacity(n_samples);
    samples.push(Sample {
        t_us: header.start_us,
        v: [0; MAX_DIMS],
    });
    match header.time_layout {
        TimeLayout::Deltas { base_us } => {
            let mut prev_us = header.start_us;
            for index in 1..n_samples {
                let residual = zigzag_decode(decode_varint_u64(body, &mut pos)?);
                // Inverse of the encoder's wrapping subtraction.
                let delta_us = base_us.wrapping_add(residual as u64);
                let Some(t_us) = prev_us.checked_add_unsigned(delta_us) else {
                    return Err(ChunkError::Overflow {
                        what: "time",
                        index,
                    });
                };
                samples.push(Sample {
                    t_us,
                    v: [0; MAX_DIMS],
                });
                prev_us = t_us;
            }
        }
        fixed => {
            let times = FixedTimes::new(header.start_us, fixed).take(n_samples);
            for (index, t_us) in times.enumerate().skip(1) {
                let Some(t_us) = t_us else {
                    return Err(ChunkError::Overflow {
                        what: "time",
                        index,
                    });
                };
                samples.push(Sample {
                    t_us,
                    v: [0; MAX_DIMS],
                });
            }
        }
    }
    for dim in 0..dims {
        let mut prev = 0_i64;
        for (index, sample) in samples.iter_mut().enumerate() {
            let delta = zigzag_decode(decode_varint_u64(body, &mut pos)?);
            let Some(value) = prev.checked_add(delta).and_then(|v| i32::try_from(v).ok()) else {
                return Err(ChunkError::Overflow {
                    what: "value",
                    index,
                });
            };
            sample.v[dim] = value;
            prev = i64::from(value);
        }
    }
    if pos != body.len() {
        return Err(ChunkError::TrailingBytes {
            n_bytes: body.len() - pos,
        });
    }

    let chunk = Chunk {
        channel: header.channel,
        samples,
    };
    Ok(chunk)
}

/// The body of a version-2 chunk: one column per time residuals and per dimension, each
/// coded as its column byte says.
fn decode_v2_body(bytes: &[u8], parsed: &ParsedHeader) -> Result<Chunk, ChunkError> {
    let header = parsed.header;
    let n_samples = header.n_samples;
    let mut pos = parsed.body_offset;
    let mut samples = Vec::with_capacity(n_samples);
    match header.time_layout {
        TimeLayout::Deltas { base_us } => {
            let residuals =
                column::decode(bytes, &mut pos, n_samples - 1, ColumnKind::TimeResiduals)?;
            let mut prev_us = header.start_us;
            samples.push(Sample {
                t_us: prev_us,
                v: [0; MAX_DIMS],
            });
            for (index, &residual) in residuals.iter().enumerate() {
                let t_us =
                    time_from_residual(prev_us, residual, base_us).ok_or(ChunkError::Overflow {
                        what: "time",
                        index: index + 1,
                    })?;
                samples.push(Sample {
                    t_us,
                    v: [0; MAX_DIMS],
                });
                prev_us = t_us;
            }
        }
        fixed => {
            let times = FixedTimes::new(header.start_us, fixed).take(n_samples);
            for (index, t_us) in times.enumerate() {
                let t_us = t_us.ok_or(ChunkError::Overflow {
                    what: "time",
                    index,
                })?;
                samples.push(Sample {
                    t_us,
                    v: [0; MAX_DIMS],
                });
            }
        }
    }
    for dim in 0..header.channel.dims() {
        let values = column::decode(bytes, &mut pos, n_samples, ColumnKind::Values)?;
        for (sample, value) in samples.iter_mut().zip(values) {
            // column::decode checked that value columns stay within i32.
            sample.v[dim] = i32::try_from(value).map_err(|_| ChunkError::Overflow {
                what: "value",
                index: 0,
            })?;
        }
    }
    if pos != bytes.len() {
        return Err(ChunkError::TrailingBytes {
            n_bytes: bytes.len() - pos,
        });
    }
    Ok(Chunk {
        channel: header.channel,
        samples,
    })
}

/// Reads a chunk's header without touching its times or values: cheap enough to index many
/// chunks by channel and start time.
pub fn peek_header(bytes: &[u8]) -> Result<ChunkHeader, ChunkError> {
    parse_header(bytes).map(|parsed| parsed.header)
}

/// The plain baseline the benches compare chunks against: sample by sample, the zigzag varint
/// of the time delta (the first from 0) and then of each of the first `dims` value deltas (the
/// first from 0). No header, no fixed-period trick, no compression.
pub fn encode_raw_delta_varint(samples: &[Sample], dims: usize) -> Vec<u8> {
    let dims = dims.min(MAX_DIMS);
    let mut out = Vec::with_capacity(samples.len() * (dims + 3));
    let mut prev_us = 0_i64;
    let mut prev = [0_i64; MAX_DIMS];
    for sample in samples {
        encode_varint_u64(&mut out, zigzag_encode(sample.t_us.wrapping_sub(prev_us)));
        prev_us = sample.t_us;
        for (dim, prev_value) in prev.iter_mut().enumerate().take(dims) {
            let value = i64::from(sample.v[dim]);
            encode_varint_u64(&mut out, zigzag_encode(value - *prev_value));
            *prev_value = value;
        }
    }
    out
}

/// Appends `v` as an unsigned LEB128 varint (1 to [`MAX_VARINT_BYTES`] bytes).
pub fn encode_varint_u64(out: &mut Vec<u8>, v: u64) {
    let mut rest = v;
    while rest >= 0x80 {
        // Truncation to the low seven bits is the point.
        out.push((rest as u8) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads an unsigned LEB128 varint at `*pos` and advances `pos` past it. Rejects varints
/// longer than [`MAX_VARINT_BYTES`], values above `u64::MAX` and encodings that are not the
/// shortest, so every value has exactly one encoding. On error `pos` is unchanged.
pub fn decode_varint_u64(bytes: &[u8], pos: &mut usize) -> Result<u64, ChunkError> {
    let start = *pos;
    let mut value = 0_u64;
    for i in 0..MAX_VARINT_BYTES {
        let offset = start.saturating_add(i);
        let Some(&byte) = bytes.get(offset) else {
            return Err(ChunkError::Truncated { offset });
        };
        // The tenth byte holds only bit 63: anything else overflows or continues past ten.
        if i == MAX_VARINT_BYTES - 1 && byte > 1 {
            return Err(ChunkError::BadVarint { offset: start });
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(ChunkError::BadVarint { offset: start });
            }
            *pos = offset + 1;
            return Ok(value);
        }
    }
    Err(ChunkError::BadVarint { offset: start })
}

/// How many bytes [`encode_varint_u64`] writes for `v`.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros();
    bits.max(1).div_ceil(7) as usize
}

/// Maps signed to unsigned so that numbers near zero stay small: 0, -1, 1, -2 → 0, 1, 2, 3.
pub fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag_encode`].
pub fn zigzag_decode(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// What the `deltas` layout stores for two consecutive times: the delta's distance from
/// `base_us`, wrapped. Reinterpreting the wrapped difference as i64 is a bijection mod 2^64, and
/// the decoder applies the inverse ([`time_from_residual`]), so any pair of times round-trips.
fn time_residual(before_us: i64, after_us: i64, base_us: u64) -> i64 {
    time_delta_us(before_us, after_us).wrapping_sub(base_us) as i64
}

/// The time after `prev_us` that [`time_residual`] stored as `residual`, if it fits.
fn time_from_residual(prev_us: i64, residual: i64, base_us: u64) -> Option<i64> {
    prev_us.checked_add_unsigned(base_us.wrapping_add(residual as u64))
}

/// The delta between two non-decreasing times. Their true difference lies in 0..=u64::MAX, and
/// wrapping subtraction reinterpreted as u64 yields exactly it.
fn time_delta_us(before_us: i64, after_us: i64) -> u64 {
    after_us.wrapping_sub(before_us) as u64
}

/// Offset of sample `index` from the start for the `period` and `rate` layouts; `None` for
/// `deltas` or when the offset does not fit a u64.
fn fixed_offset_us(layout: TimeLayout, index: usize) -> Option<u64> {
    let (num, den, phase) = match layout {
        TimeLayout::Period { period_us } => (period_us, 1, 0),
        TimeLayout::Rate { num, den, phase } => (num, den, phase),
        TimeLayout::Deltas { .. } => return None,
    };
    // index < 2^16 and num < 2^64, so the product fits a u128 with room to spare.
    let scaled = (index as u128) * u128::from(num) + u128::from(phase);
    u64::try_from(scaled.checked_div(u128::from(den))?).ok()
}

/// Sample times of the `period` and `rate` layouts, from the first sample on: one addition per
/// sample instead of [`fixed_offset_us`]'s 128-bit division. Yields `None` from the first time
/// that overflows on; yields nothing for `deltas`.
struct FixedTimes {
    start_us: i64,
    /// Whole and fractional (in 1/den µs) part of the period.
    step_us: u64,
    step_frac: u128,
    den: u128,
    /// Offset of the next sample: whole µs (`None` once overflowed) and fraction.
    offset_us: Option<u64>,
    frac: u128,
    /// Whether any sample remains (false for `deltas`).
    live: bool,
}

impl FixedTimes {
    fn new(start_us: i64, layout: TimeLayout) -> FixedTimes {
        let (num, den, phase, live) = match layout {
            TimeLayout::Period { period_us } => (period_us, 1, 0, true),
            TimeLayout::Rate { num, den, phase } => (num, den, phase, true),
            TimeLayout::Deltas { .. } => (0, 1, 0, false),
        };
        // A zero denominator never passes the header parser; treating it as 1 keeps this total.
        let den = den.max(1);
        FixedTimes {
            start_us,
            step_us: num / den,
            step_frac: u128::from(num % den),
            den: u128::from(den),
            // The header parser guarantees phase < den, so the first offset is 0; the division
            // keeps this correct for any input.
            offset_us: Some(phase / den),
            frac: u128::from(phase % den),
            live,
        }
    }
}

impl Iterator for FixedTimes {
    type Item = Option<i64>;

    fn next(&mut self) -> Option<Option<i64>> {
        if !self.live {
            return None;
        }
        let t_us = self
            .offset_us
            .and_then(|offset| self.start_us.checked_add_unsigned(offset));
        // frac and step_frac are below den ≤ 2^64, so their sum fits a u128.
        self.frac += self.step_frac;
        let carry = u64::from(self.frac >= self.den);
        if carry == 1 {
            self.frac -= self.den;
        }
        self.offset_us = self
            .offset_us
            .and_then(|offset| offset.checked_add(self.step_us))
            .and_then(|offset| offset.checked_add(carry));
        Some(t_us)
    }
}

/// Picks the time layout that stores `samples`' times in the fewest bytes.
fn choose_time_layout(samples: &[Sample]) -> TimeLayout {
    let deltas: Vec<u64> = samples
        .windows(2)
        .map(|pair| time_delta_us(pair[0].t_us, pair[1].t_us))
        .collect();
    let (Some(&min_us), Some(&max_us)) = (deltas.iter().min(), deltas.iter().max()) else {
        return TimeLayout::Period { period_us: 0 };
    };
    if min_us == max_us {
        return TimeLayout::Period { period_us: min_us };
    }
    let mut sorted = deltas.clone();
    let mid = sorted.len() / 2;
    let base_us = *sorted.select_nth_unstable(mid).1;
    let deltas_layout = TimeLayout::Deltas { base_us };
    if max_us - min_us == 1
        && let Some(rate @ TimeLayout::Rate { num, den, phase }) = detect_rate(samples)
    {
        let rate_bytes = varint_len(num) + varint_len(den) + varint_len(phase);
        let deltas_bytes = varint_len(base_us)
            + deltas
                .iter()
                .map(|d| varint_len(zigzag_encode(d.wrapping_sub(base_us) as i64)))
                .sum::<usize>();
        if rate_bytes <= deltas_bytes {
            return rate;
        }
    }
    deltas_layout
}

/// Finds a `rate` layout that reproduces `samples`' times exactly, for one of the nominal
/// rates of [`RATE_NUMERATORS_US`].
fn detect_rate(samples: &[Sample]) -> Option<TimeLayout> {
    let start_us = samples.first()?.t_us;
    let span_us = u128::from(time_delta_us(start_us, samples.last()?.t_us));
    let n_intervals = u128::try_from(samples.len().checked_sub(1)?).ok()?;
    if span_us == 0 || n_intervals == 0 {
        return None;
    }
    for num in RATE_NUMERATORS_US {
        // With phase below den, span = floor((m * num + phase) / den) lies within one
        // microsecond of m * num / den, so den lies in (m * num / (span + 1), m * num /
        // (span - 1)); try at most MAX_RATE_CANDIDATES of them around the rounded estimate.
        let scaled = u128::from(num) * n_intervals;
        let estimate = (scaled + span_us / 2) / span_us;
        let low = (scaled / (span_us + 1)).max(1);
        let high = match span_us - 1 {
            0 => u128::MAX,
            below => scaled / below + 1,
        };
        let window = MAX_RATE_CANDIDATES / 2;
        let low = low.max(estimate.saturating_sub(window));
        let high = high.min(estimate.saturating_add(window));
        if let Some(layout) = (low..=high).find_map(|den| rate_with_den(samples, num, den)) {
            return Some(layout);
        }
    }
    None
}

/// The `rate` layout with period `num / den` that reproduces `samples`' times, if there is one.
/// Sample k constrains the phase to `den * offset_k - k * num <= phase < den * (offset_k + 1) -
/// k * num`; the intersection of these intervals with `0..den` holds the phases that work.
fn rate_with_den(samples: &[Sample], num: u64, den: u128) -> Option<TimeLayout> {
    let start_us = samples.first()?.t_us;
    // den < 2^47 and offsets < 2^64, so every product fits an i128.
    let den_i = i128::try_from(den).ok()?;
    let num_i = i128::from(num);
    let mut lo = 0_i128;
    let mut hi = den_i - 1;
    for (k, sample) in samples.iter().enumerate() {
        let offset_us = i128::from(time_delta_us(start_us, sample.t_us));
        let low = den_i * offset_us - i128::try_from(k).ok()? * num_i;
        lo = lo.max(low);
        hi = hi.min(low + den_i - 1);
        if lo > hi {
            return None;
        }
    }
    let layout = TimeLayout::Rate {
        num,
        den: u64::try_from(den).ok()?,
        phase: u64::try_from(lo).ok()?,
    };
    // The interval arithmetic above is exact, but this check is cheap and makes the choice
    // depend on nothing but the decoder's own arithmetic.
    let reproduces = FixedTimes::new(start_us, layout)
        .zip(samples)
        .all(|(t_us, sample)| t_us == Some(sample.t_us));
    reproduces.then_some(layout)
}

/// A header and where the body starts.
struct ParsedHeader {
    header: ChunkHeader,
    /// Offset of the first body byte (or of the zstd frame).
    body_offset: usize,
    /// Declared uncompressed body length, for compressed chunks.
    body_len: Option<usize>,
}

fn parse_header(bytes: &[u8]) -> Result<ParsedHeader, ChunkError> {
    if bytes.len() > MAX_CHUNK_BYTES {
        return Err(ChunkError::TooLarge {
            n_bytes: bytes.len() as u64,
        });
    }
    let mut pos = 0;
    let codec_version = read_u8(bytes, &mut pos)?;
    if !(CODEC_VERSION_1..=CODEC_VERSION).contains(&codec_version) {
        return Err(ChunkError::UnknownVersion {
            version: codec_version,
        });
    }
    let code = read_u8(bytes, &mut pos)?;
    let channel = Channel::from_code(code).ok_or(ChunkError::UnknownChannel { code })?;
    let layout = read_u8(bytes, &mut pos)?;
    // Version 2 never compresses its body: its columns are entropy-coded already.
    let known_bits = match codec_version {
        CODEC_VERSION_1 => LAYOUT_TIME_BITS | LAYOUT_COMPRESSED,
        _ => LAYOUT_TIME_BITS,
    };
    if layout & !known_bits != 0 {
        return Err(ChunkError::UnknownLayout { layout });
    }
    let n_samples_raw = decode_varint_u64(bytes, &mut pos)?;
    if n_samples_raw == 0 {
        return Err(ChunkError::Empty);
    }
    let n_samples = usize::try_from(n_samples_raw)
        .ok()
        .filter(|&n| n <= MAX_CHUNK_SAMPLES)
        .ok_or(ChunkError::TooManySamples {
            n_samples: n_samples_raw,
        })?;
    let start_bytes: [u8; 8] = bytes
        .get(pos..pos + 8)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(ChunkError::Truncated {
            offset: bytes.len(),
        })?;
    let start_us = i64::from_le_bytes(start_bytes);
    pos += 8;
    let time_layout = match layout & LAYOUT_TIME_BITS {
        TIME_PERIOD => TimeLayout::Period {
            period_us: decode_varint_u64(bytes, &mut pos)?,
        },
        TIME_RATE => {
            let num = decode_varint_u64(bytes, &mut pos)?;
            let den = decode_varint_u64(bytes, &mut pos)?;
            let phase = decode_varint_u64(bytes, &mut pos)?;
            if den == 0 || phase >= den {
                return Err(ChunkError::BadRate { den, phase });
            }
            TimeLayout::Rate { num, den, phase }
        }
        TIME_DELTAS => TimeLayout::Deltas {
            base_us: decode_varint_u64(bytes, &mut pos)?,
        },
        _ => return Err(ChunkError::UnknownLayout { layout }),
    };
    let compressed = layout & LAYOUT_COMPRESSED != 0;
    let body_len = if compressed {
        let declared = decode_varint_u64(bytes, &mut pos)?;
        let n_bytes = usize::try_from(declared)
            .ok()
            .filter(|&n| n <= MAX_CHUNK_BYTES)
            .ok_or(ChunkError::TooLarge { n_bytes: declared })?;
        Some(n_bytes)
    } else {
        None
    };
    Ok(ParsedHeader {
        header: ChunkHeader {
            codec_version,
            channel,
            n_samples,
            start_us,
            time_layout,
            compressed,
        },
        body_offset: pos,
        body_len,
    })
}

fn read_u8(bytes: &[u8], pos: &mut usize) -> Result<u8, ChunkError> {
    let byte = *bytes
        .get(*pos)
        .ok_or(ChunkError::Truncated { offset: *pos })?;
    *pos += 1;
    Ok(byte)
}

/// Decompresses `frame`, which must be exactly one zstd frame of exactly `n_bytes` content.
/// `n_bytes` is already bounded by [`MAX_CHUNK_BYTES`], which bounds the allocation.
fn decompress_body(frame: &[u8], n_bytes: usize) -> Result<Vec<u8>, ChunkError> {
    let bad = ChunkError::BadCompressedBody { n_bytes };
    // zstd would skip skippable frames and decode concatenated ones; a chunk has exactly one.
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(frame_len) if frame_len == frame.len() => {}
        _ => return Err(bad),
    }
    let body = zstd::bulk::decompress(frame, n_bytes).map_err(|_| bad.clone())?;
    if body.len() != n_bytes {
        return Err(bad);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ----- test data -----

    /// xorshift64: a tiny deterministic generator, so test data needs no seed plumbing.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
        }

        /// Roughly normal with mean 0 and standard deviation 1 (Irwin–Hall of 12 uniforms).
        fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
        }

        /// Uniform in -half_width..=half_width.
        fn jitter(&mut self, half_width: i64) -> i64 {
            (self.next_u64() % (2 * half_width as u64 + 1)) as i64 - half_width
        }
    }

    /// An afternoon in 2025, µs since the epoch.
    const T0_US: i64 = 1_750_000_000_000_000;

    /// A synthetic lead-II ECG in µV: P, Q, R, S and T waves as Gaussians at 72 bpm, 120 µV of
    /// 0.25 Hz baseline wander and 5 µV of noise.
    fn synthetic_ecg_uv(t_s: f64, rng: &mut Rng) -> i32 {
        let beat_s = 60.0 / 72.0;
        let phase = (t_s % beat_s) / beat_s;
        let wave = |center: f64, width: f64, amplitude_uv: f64| {
            amplitude_uv * (-(phase - center).powi(2) / (2.0 * width * width)).exp()
        };
        let uv = wave(0.20, 0.025, 150.0)
            + wave(0.33, 0.008, -120.0)
            + wave(0.35, 0.010, 1100.0)
            + wave(0.37, 0.008, -250.0)
            + wave(0.60, 0.040, 300.0)
            + 120.0 * (2.0 * std::f64::consts::PI * 0.25 * t_s).sin()
            + 5.0 * rng.normal();
        uv.round() as i32
    }

    /// `n` ECG samples timed like a source at `rate_hz`: t0 + floor(k * 1e6 / rate).
    fn ecg_samples(n: usize, rate_hz: i64, seed: u64) -> Vec<Sample> {
        let mut rng = Rng(seed);
        (0..n as i64)
            .map(|k| {
                let t_us = T0_US + k * 1_000_000 / rate_hz;
                let uv = synthetic_ecg_uv((t_us - T0_US) as f64 / 1e6, &mut rng);
                Sample::scalar(t_us, uv)
            })
            .collect()
    }

    /// 1 Hz heart rate stamped on arrival: ±`jitter_us` around each second, drifting values.
    fn hr_samples(n: usize, jitter_us: i64, seed: u64) -> Vec<Sample> {
        let mut rng = Rng(seed);
        let mut bpm = 72_i32;
        let mut t_us = T0_US;
        (0..n as i64)
            .map(|k| {
                bpm = (bpm + rng.jitter(1) as i32).clamp(55, 95);
                t_us = (T0_US + k * 1_000_000 + rng.jitter(jitter_us)).max(t_us);
                Sample::scalar(t_us, bpm)
            })
            .collect()
    }

    fn nibp(t_s: i64, systolic: i32, diastolic: i32, mean: i32) -> Sample {
        Sample {
            t_us: T0_US + t_s * 1_000_000,
            v: [systolic, diastolic, mean],
        }
    }

    fn layout_name(layout: TimeLayout) -> String {
        match layout {
            TimeLayout::Period { period_us } => format!("period {period_us}"),
            TimeLayout::Rate { num, den, .. } => format!("rate {num}/{den}"),
            TimeLayout::Deltas { .. } => "deltas".to_string(),
        }
    }

    // ----- varints and zigzag -----

    fn check_varint(value: u64, expected: &[u8]) {
        let mut out = Vec::new();
        encode_varint_u64(&mut out, value);
        assert_eq!(out, expected, "encoding {value}");
        assert_eq!(varint_len(value), expected.len(), "length of {value}");
        let mut pos = 0;
        assert_eq!(decode_varint_u64(&out, &mut pos), Ok(value));
        assert_eq!(pos, expected.len());
    }

    #[test]
    fn varints() {
        check_varint(0, &[0x00]);
        check_varint(1, &[0x01]);
        check_varint(127, &[0x7f]);
        check_varint(128, &[0x80, 0x01]);
        check_varint(300, &[0xac, 0x02]);
        check_varint(16_383, &[0xff, 0x7f]);
        check_varint(16_384, &[0x80, 0x80, 0x01]);
        check_varint(
            u64::MAX,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        );
    }

    fn check_bad_varint(bytes: &[u8], expected: ChunkError) {
        let mut pos = 0;
        assert_eq!(
            decode_varint_u64(bytes, &mut pos),
            Err(expected),
            "{bytes:02x?}"
        );
        assert_eq!(pos, 0, "pos unchanged on error");
    }

    #[test]
    fn malformed_varints() {
        check_bad_varint(&[], ChunkError::Truncated { offset: 0 });
        check_bad_varint(&[0x80], ChunkError::Truncated { offset: 1 });
        check_bad_varint(&[0xff, 0xff], ChunkError::Truncated { offset: 2 });
        // Not the shortest form of 0 and of 1.
        check_bad_varint(&[0x80, 0x00], ChunkError::BadVarint { offset: 0 });
        check_bad_varint(&[0x81, 0x80, 0x00], ChunkError::BadVarint { offset: 0 });
        // 2^64 needs bit 64.
        check_bad_varint(
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
            ChunkError::BadVarint { offset: 0 },
        );
        // An eleventh byte.
        check_bad_varint(&[0xff; 11], ChunkError::BadVarint { offset: 0 });
    }

    #[test]
    fn zigzag() {
        let table: &[(i64, u64)] = &[
            (0, 0),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (2, 4),
            (i64::MAX, u64::MAX - 1),
            (i64::MIN, u64::MAX),
        ];
        for &(signed, unsigned) in table {
            assert_eq!(zigzag_encode(signed), unsigned, "encode {signed}");
            assert_eq!(zigzag_decode(unsigned), signed, "decode {unsigned}");
        }
    }

    #[test]
    fn raw_delta_varint_baseline() {
        let samples = [
            Sample::scalar(1_000, 5),
            Sample::scalar(5_000, 3),
            Sample::scalar(9_000, 3),
        ];
        // Time 1000 → zigzag 2000 = [0xd0, 0x0f]; value 5 → 10; then 4000 → 8000 = [0xc0, 0x3e],
        // -2 → 3; 4000 again, 0.
        let expected = [0xd0, 0x0f, 10, 0xc0, 0x3e, 3, 0xc0, 0x3e, 0];
        assert_eq!(encode_raw_delta_varint(&samples, 1), expected);
        let bp = [nibp(0, 120, 80, 93)];
        // An absolute time of 2025 takes eight varint bytes; each value two.
        assert_eq!(encode_raw_delta_varint(&bp, 3).len(), 8 + 3 * 2);
    }

    // ----- round trips -----

    /// Encodes `samples` of `channel`, checks the time layout chosen and that decoding gives back
    /// exactly the input; returns the encoded size.
    fn check(channel: Channel, samples: Vec<Sample>, expected_layout: &str) -> usize {
        let chunk = Chunk { channel, samples };
        let bytes = chunk.encode().expect("valid chunk encodes");
        let header = peek_header(&bytes).expect("header of an encoded chunk");
        assert_eq!(header.codec_version, CODEC_VERSION);
        assert_eq!(header.channel, channel);
        assert_eq!(header.n_samples, chunk.samples.len());
        assert_eq!(Some(header.start_us), chunk.start_us());
        assert_eq!(layout_name(header.time_layout), expected_layout);
        if let Some(end_us) = header.end_us() {
            assert_eq!(Some(end_us), chunk.end_us());
        }
        assert_eq!(Chunk::decode(&bytes), Ok(chunk));
        bytes.len()
    }

    #[test]
    fn round_trips() {
        check(Channel::Hr, hr_samples(10, 20_000, 1), "deltas");
        check(Channel::Hr, hr_samples(10, 0, 1), "period 1000000");
        check(Channel::Spo2, hr_samples(600, 3_000, 2), "deltas");
        check(Channel::Ecg, ecg_samples(1_300, 130, 3), "rate 1000000/130");
        check(Channel::Ecg, ecg_samples(2_500, 250, 4), "period 4000");
        check(Channel::Ecg, ecg_samples(2_560, 256, 4), "rate 1000000/256");
        // A source whose clock wobbles by a few microseconds.
        let wobbly: Vec<Sample> = ecg_samples(2_500, 250, 4)
            .into_iter()
            .zip([0, 3, 1, 4, 1, 5, 9, 2, 6].into_iter().cycle())
            .map(|(sample, wobble_us)| Sample::scalar(sample.t_us + wobble_us, sample.v[0]))
            .collect();
        check(Channel::Ecg, wobbly, "deltas");
        check(
            Channel::Nibp,
            vec![
                nibp(0, 128, 84, 99),
                nibp(180, 186, 104, 131),
                nibp(300, 201, 95, 130),
            ],
            "deltas",
        );
        check(Channel::Nibp, vec![nibp(0, 0, 0, 0)], "period 0");
        check(
            Channel::Temp,
            vec![Sample::scalar(T0_US, 3_690)],
            "period 0",
        );
        check(Channel::Rr, vec![Sample::scalar(T0_US, 830); 4], "period 0");
        check(
            Channel::Rr,
            vec![
                Sample::scalar(i64::MIN, i32::MIN),
                Sample::scalar(i64::MAX, i32::MAX),
            ],
            "period 18446744073709551615",
        );
        check(
            Channel::Rr,
            [i64::MIN, i64::MIN, 0, i64::MAX]
                .map(|t_us| Sample::scalar(t_us, i32::MIN))
                .to_vec(),
            "deltas",
        );
        // A rate whose phase is not zero: the chunk starts mid-stream.
        let mid_stream: Vec<Sample> = ecg_samples(2_000, 130, 5).split_off(7);
        check(Channel::Ecg, mid_stream, "rate 1000000/130");
    }

    // ----- sizes -----

    /// 10 s of ECG costs little more than a byte per sample stored raw (the time column is
    /// O(1), value deltas are mostly one-byte varints), under half the plain delta-varints;
    /// compressed (the decoder's other path) under a byte.
    #[test]
    fn ecg_size() {
        for (rate_hz, seed, max_bytes_per_sample) in
            [(250, 10, 1.6), (250, 11, 1.6), (130, 12, 1.6)]
        {
            let n = 10 * rate_hz as usize;
            let chunk = Chunk {
                channel: Channel::Ecg,
                samples: ecg_samples(n, rate_hz, seed),
            };
            let bytes = chunk.encode().expect("valid chunk encodes");
            let header = peek_header(&bytes).expect("valid header");
            assert!(!header.compressed, "{rate_hz} Hz ECG is stored raw");
            assert!(!matches!(header.time_layout, TimeLayout::Deltas { .. }));
            let per_sample = bytes.len() as f64 / n as f64;
            assert!(
                per_sample < max_bytes_per_sample,
                "{rate_hz} Hz ECG: {per_sample:.3} bytes/sample"
            );
            let raw = encode_raw_delta_varint(&chunk.samples, 1).len();
            assert!(bytes.len() * 2 < raw, "{} vs raw {raw}", bytes.len());
            let compressed = chunk.encode_compressed().expect("valid chunk encodes");
            assert!(peek_header(&compressed).expect("valid header").compressed);
            assert!(
                (compressed.len() as f64) < n as f64,
                "compressed: {} bytes",
                compressed.len()
            );
            assert_eq!(Chunk::decode(&compressed), Ok(chunk.clone()));
        }
    }

    /// 10 s of 1 Hz heart rate: O(1) time when exactly periodic, about two bytes per jittered
    /// time otherwise.
    #[test]
    fn one_hz_size() {
        let table: &[(i64, usize)] = &[(0, 26), (2_000, 44), (20_000, 52)];
        for &(jitter_us, max_bytes) in table {
            let size = Chunk {
                channel: Channel::Hr,
                samples: hr_samples(10, jitter_us, 7),
            }
            .encode()
            .expect("valid chunk encodes")
            .len();
            assert!(size <= max_bytes, "jitter {jitter_us} us: {size} bytes");
        }
    }

    // ----- encode errors -----

    fn check_encode_error(channel: Channel, samples: Vec<Sample>, expected: ChunkError) {
        assert_eq!(Chunk { channel, samples }.encode(), Err(expected));
    }

    #[test]
    fn encode_errors() {
        check_encode_error(Channel::Hr, vec![], ChunkError::Empty);
        check_encode_error(
            Channel::Ecg,
            vec![Sample::scalar(0, 0); MAX_CHUNK_SAMPLES + 1],
            ChunkError::TooManySamples {
                n_samples: MAX_CHUNK_SAMPLES as u64 + 1,
            },
        );
        check_encode_error(
            Channel::Hr,
            vec![
                Sample::scalar(5, 60),
                Sample::scalar(5, 61),
                Sample::scalar(4, 62),
            ],
            ChunkError::TimeWentBackwards {
                index: 2,
                t_us: 4,
                prev_us: 5,
            },
        );
        check_encode_error(
            Channel::Spo2,
            vec![
                Sample::scalar(0, 97),
                Sample {
                    t_us: 1,
                    v: [97, 0, 3],
                },
            ],
            ChunkError::UnusedDimension {
                index: 1,
                dim: 2,
                value: 3,
                channel: Channel::Spo2,
            },
        );
        // At the limit is fine.
        let full = Chunk {
            channel: Channel::Ecg,
            samples: vec![Sample::scalar(0, 0); MAX_CHUNK_SAMPLES],
        };
        assert!(full.encode().is_ok());
    }

    // ----- malformed input -----

    fn check_decode_error(bytes: &[u8], expected: ChunkError) {
        assert_eq!(Chunk::decode(bytes), Err(expected), "{bytes:02x?}");
    }

    /// A one-sample heart-rate chunk: version, channel, period layout, 1 sample, start 0,
    /// period 0, value 60 (zigzag 120).
    const ONE_HR: [u8; 14] = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 120];

    #[test]
    fn malformed_chunks() {
        assert_eq!(
            Chunk::decode(&ONE_HR),
            Ok(Chunk {
                channel: Channel::Hr,
                samples: vec![Sample::scalar(0, 60)],
            })
        );
        let with = |index: usize, byte: u8| {
            let mut bytes = ONE_HR.to_vec();
            bytes[index] = byte;
            bytes
        };
        check_decode_error(&[], ChunkError::Truncated { offset: 0 });
        check_decode_error(&with(0, 3), ChunkError::UnknownVersion { version: 3 });
        check_decode_error(&with(0, 0), ChunkError::UnknownVersion { version: 0 });
        check_decode_error(&with(1, 0), ChunkError::UnknownChannel { code: 0 });
        check_decode_error(&with(1, 99), ChunkError::UnknownChannel { code: 99 });
        check_decode_error(&with(2, 3), ChunkError::UnknownLayout { layout: 3 });
        check_decode_error(&with(2, 0x08), ChunkError::UnknownLayout { layout: 0x08 });
        check_decode_error(&with(3, 0), ChunkError::Empty);
        check_decode_error(
            &with(3, 2),
            ChunkError::CountExceedsBytes {
                n_samples: 2,
                n_bytes: 1,
            },
        );
        check_decode_error(&with(13, 0x80), ChunkError::Truncated { offset: 14 });
        check_decode_error(
            &[ONE_HR.as_slice(), &[0]].concat(),
            ChunkError::TrailingBytes { n_bytes: 1 },
        );
        // A huge count with few bytes behind it: rejected before any allocation.
        check_decode_error(
            &[1, 6, 0, 0xff, 0xff, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ChunkError::CountExceedsBytes {
                n_samples: 65_535,
                n_bytes: 1,
            },
        );
        check_decode_error(
            &[1, 6, 0, 0x81, 0x80, 0x04],
            ChunkError::TooManySamples {
                n_samples: MAX_CHUNK_SAMPLES as u64 + 1,
            },
        );
        // Rate layouts with a zero denominator or a phase not below it.
        let rate = |den: u8, phase: u8| [1, 6, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 100, den, phase, 0];
        check_decode_error(&rate(0, 0), ChunkError::BadRate { den: 0, phase: 0 });
        check_decode_error(&rate(5, 5), ChunkError::BadRate { den: 5, phase: 5 });
        assert!(Chunk::decode(&rate(5, 4)).is_ok());
        // Value 2^31: one past i32::MAX.
        check_decode_error(
            &[&ONE_HR[..13], &[0x80, 0x80, 0x80, 0x80, 0x10]].concat(),
            ChunkError::Overflow {
                what: "value",
                index: 0,
            },
        );
        // Start at i64::MAX, period 1: the second sample overflows.
        let mut overflow = vec![1, 1, 0, 2];
        overflow.extend_from_slice(&i64::MAX.to_le_bytes());
        overflow.extend_from_slice(&[1, 0, 0]);
        check_decode_error(
            &overflow,
            ChunkError::Overflow {
                what: "time",
                index: 1,
            },
        );
        check_decode_error(
            &vec![0; MAX_CHUNK_BYTES + 1],
            ChunkError::TooLarge {
                n_bytes: MAX_CHUNK_BYTES as u64 + 1,
            },
        );
    }

    #[test]
    fn malformed_compressed_chunks() {
        let chunk = Chunk {
            channel: Channel::Ecg,
            samples: ecg_samples(2_500, 250, 20),
        };
        let bytes = chunk.encode_compressed().expect("valid chunk encodes");
        let header_len = 1 + 1 + 1 + 2 + 8 + 2;
        assert!(peek_header(&bytes).expect("valid header").compressed);
        let body_len = {
            let mut pos = header_len;
            decode_varint_u64(&bytes, &mut pos).expect("body length")
        } as usize;
        let frame_at = header_len + varint_len(body_len as u64);

        // Trailing bytes after the frame, and a second (empty) frame.
        let mut trailing = bytes.clone();
        trailing.push(0);
        check_decode_error(
            &trailing,
            ChunkError::BadCompressedBody { n_bytes: body_len },
        );
        let empty_frame = zstd::bulk::compress(&[], 3).expect("compress nothing");
        check_decode_error(
            &[bytes.as_slice(), &empty_frame].concat(),
            ChunkError::BadCompressedBody { n_bytes: body_len },
        );
        // A corrupted frame.
        let mut corrupt = bytes.clone();
        let middle = (frame_at + bytes.len()) / 2;
        corrupt[middle] ^= 0xff;
        assert!(Chunk::decode(&corrupt).is_err());
        // A declared length that disagrees with the frame, or exceeds any plausible body.
        let mut declared = bytes[..header_len].to_vec();
        encode_varint_u64(&mut declared, body_len as u64 - 1);
        declared.extend_from_slice(&bytes[frame_at..]);
        check_decode_error(
            &declared,
            ChunkError::BadCompressedBody {
                n_bytes: body_len - 1,
            },
        );
        let mut huge = bytes[..header_len].to_vec();
        encode_varint_u64(&mut huge, MAX_CHUNK_BYTES as u64 + 1);
        check_decode_error(
            &huge,
            ChunkError::TooLarge {
                n_bytes: MAX_CHUNK_BYTES as u64 + 1,
            },
        );
        let mut short = bytes[..header_len].to_vec();
        encode_varint_u64(&mut short, 10);
        check_decode_error(
            &short,
            ChunkError::CountExceedsBytes {
                n_samples: 2_500,
                n_bytes: 10,
            },
        );
    }

    /// A version-2 header of three 250 Hz ECG samples, up to the body.
    fn v2_ecg_header() -> Vec<u8> {
        let mut bytes = vec![CODEC_VERSION, Channel::Ecg.code(), TIME_PERIOD, 3];
        bytes.extend_from_slice(&T0_US.to_le_bytes());
        encode_varint_u64(&mut bytes, 4_000);
        bytes
    }

    #[test]
    fn malformed_v2_chunks() {
        let with_body = |body: &[u8]| [v2_ecg_header().as_slice(), body].concat();
        // A plain column: 5, +1, +1.
        assert_eq!(
            Chunk::decode(&with_body(&[0, 10, 2, 2])),
            Ok(Chunk {
                channel: Channel::Ecg,
                samples: (0..3)
                    .map(|k| Sample::scalar(T0_US + k * 4_000, 5 + k as i32))
                    .collect(),
            })
        );
        let bad_column = |reason| ChunkError::BadColumn { reason };
        // Version 2 has no compressed bodies.
        let mut compressed = with_body(&[0, 10, 2, 2]);
        compressed[2] |= LAYOUT_COMPRESSED;
        check_decode_error(
            &compressed,
            ChunkError::UnknownLayout {
                layout: LAYOUT_COMPRESSED,
            },
        );
        check_decode_error(&with_body(&[3]), bad_column("unknown column byte"));
        check_decode_error(&with_body(&[0x20]), bad_column("unknown column byte"));
        check_decode_error(&with_body(&[0x15]), bad_column("unknown column byte"));
        check_decode_error(
            &with_body(&[0x04, 10, 2, 2]),
            bad_column("plain column with a predictor order"),
        );
        // Coded columns: first value 0, a factor of zero; a stream longer than the chunk; a
        // range-coder stream that does not start with 0; a Rice stream with a spare byte.
        check_decode_error(&with_body(&[1, 0, 0, 1, 0]), bad_column("factor of zero"));
        let header_len = v2_ecg_header().len();
        check_decode_error(
            &with_body(&[2, 0, 1, 100, 0]),
            ChunkError::Truncated {
                offset: header_len + 5,
            },
        );
        check_decode_error(
            &with_body(&[2, 0, 1, 5, 1, 0, 0, 0, 0]),
            bad_column("range coder stream does not start with 0"),
        );
        // Rice: parameter 0 (six zero bits), then residuals 0 and 0 (one zero bit each).
        assert!(Chunk::decode(&with_body(&[1, 0, 1, 1, 0])).is_ok());
        check_decode_error(
            &with_body(&[1, 0, 1, 2, 0, 0]),
            ChunkError::TrailingBytes { n_bytes: 1 },
        );
        check_decode_error(
            &with_body(&[0, 10, 2, 2, 0]),
            ChunkError::TrailingBytes { n_bytes: 1 },
        );
        // A value column whose values leave i32: first value i32::MAX, factor 1, +1.
        let mut overflow = vec![1];
        encode_varint_u64(&mut overflow, zigzag_encode(i64::from(i32::MAX)));
        // Factor 1, two bytes of Rice: parameter 1, residuals +1 (zigzag 2: quotient 1, low bit
        // 0) and 0.
        overflow.extend_from_slice(&[1, 2, 0b0000_0110, 0b0000_0000]);
        check_decode_error(
            &with_body(&overflow),
            ChunkError::Overflow {
                what: "value",
                index: 1,
            },
        );
    }

    /// A monitor's 5 µV steps and an ECG's smoothness cost less than in version 1's varints.
    #[test]
    fn v2_takes_out_the_step_and_predicts() {
        let chunk = Chunk {
            channel: Channel::Ecg,
            samples: ecg_samples(2_500, 250, 40)
                .into_iter()
                .map(|s| Sample::scalar(s.t_us, s.v[0] * 5))
                .collect(),
        };
        let v1 = chunk.encode_v1().expect("encodes");
        let v2 = chunk.encode().expect("encodes");
        assert_eq!(peek_header(&v1).expect("header").codec_version, 1);
        assert_eq!(peek_header(&v2).expect("header").codec_version, 2);
        assert_eq!(Chunk::decode(&v1).as_ref(), Ok(&chunk));
        assert_eq!(Chunk::decode(&v2).as_ref(), Ok(&chunk));
        // This signal's 5 µV of Gaussian noise costs about 4 bits a sample whatever the coder.
        assert!(
            v2.len() * 3 < v1.len() * 2,
            "v2 {} vs v1 {} bytes",
            v2.len(),
            v1.len()
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let chunks = [
            Chunk {
                channel: Channel::Hr,
                samples: hr_samples(10, 20_000, 30),
            },
            Chunk {
                channel: Channel::Ecg,
                samples: ecg_samples(1_300, 130, 31),
            },
            Chunk {
                channel: Channel::Ecg,
                samples: ecg_samples(2_500, 250, 32),
            },
            Chunk {
                channel: Channel::Nibp,
                samples: vec![nibp(0, 128, 84, 99), nibp(300, 186, 104, 131)],
            },
        ];
        for chunk in chunks {
            let bytes = chunk.encode().expect("valid chunk encodes");
            for len in 0..bytes.len() {
                assert!(
                    Chunk::decode(&bytes[..len]).is_err(),
                    "{} truncated to {len} of {} bytes",
                    chunk.channel,
                    bytes.len()
                );
            }
        }
    }

    // ----- properties -----

    /// Valid sample vectors: any channel, 1 to 400 samples, times fixed-rate, rational-rate,
    /// jittered or arbitrary, values slowly varying or arbitrary.
    fn arb_chunk() -> impl Strategy<Value = Chunk> {
        let times = (1_usize..400, -(1_i64 << 62)..(1_i64 << 62)).prop_flat_map(|(n, t0)| {
            let steps = prop_oneof![
                (0_u64..10_000_000).prop_map(move |period| vec![period; n - 1]),
                (
                    1_u64..2_000_000,
                    prop::collection::vec(0_u64..50_000, n - 1)
                )
                    .prop_map(|(base, jitter)| jitter.iter().map(|j| base + j).collect()),
                prop::collection::vec(any::<u32>().prop_map(u64::from), n - 1),
            ];
            let from_steps = steps.prop_map(move |steps: Vec<u64>| {
                let mut t = t0;
                let mut times = vec![t0];
                for step in steps {
                    t += step as i64;
                    times.push(t);
                }
                times
            });
            let rate = (1_u64..10_000_000, 1_u64..2_000, any::<u64>()).prop_map(
                move |(num, den, phase)| {
                    let phase = phase % den;
                    let layout = TimeLayout::Rate { num, den, phase };
                    (0..n)
                        .map(|k| t0 + fixed_offset_us(layout, k).unwrap_or(0) as i64)
                        .collect()
                },
            );
            let nominal_hz = (1_i64..2_000).prop_map(move |rate_hz| {
                (0..n as i64)
                    .map(|k| t0 + k * 1_000_000 / rate_hz)
                    .collect::<Vec<i64>>()
            });
            prop_oneof![from_steps, rate, nominal_hz]
        });
        (0..Channel::ALL.len(), times).prop_flat_map(|(channel_index, times)| {
            let channel = Channel::ALL[channel_index];
            let n = times.len();
            let column = prop_oneof![
                (any::<i32>(), prop::collection::vec(-300_i32..300, n)).prop_map(
                    |(first, steps)| {
                        steps
                            .iter()
                            .scan(first, |v, step| {
                                *v = v.saturating_add(*step);
                                Some(*v)
                            })
                            .collect::<Vec<i32>>()
                    }
                ),
                prop::collection::vec(any::<i32>(), n),
            ];
            prop::collection::vec(column, channel.dims()).prop_map(move |columns| Chunk {
                channel,
                samples: times
                    .iter()
                    .enumerate()
                    .map(|(k, &t_us)| {
                        let mut v = [0; MAX_DIMS];
                        for (dim, column) in columns.iter().enumerate() {
                            v[dim] = column[k];
                        }
                        Sample { t_us, v }
                    })
                    .collect(),
            })
        })
    }

    /// Decoding never panics; what decodes is a valid chunk that re-encodes to the same samples.
    fn check_decode_is_total(bytes: &[u8]) {
        if let Ok(chunk) = Chunk::decode(bytes) {
            assert_eq!(chunk.validate(), Ok(()));
            let again = chunk.encode().expect("a decoded chunk encodes");
            assert_eq!(Chunk::decode(&again), Ok(chunk));
        }
        let _ = peek_header(bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn valid_chunks_round_trip(chunk in arb_chunk()) {
            let bytes = chunk.encode().expect("valid chunk encodes");
            let header = peek_header(&bytes).expect("valid header");
            prop_assert_eq!(header.n_samples, chunk.samples.len());
            prop_assert_eq!(Some(header.start_us), chunk.start_us());
            if let Some(end_us) = header.end_us() {
                prop_assert_eq!(Some(end_us), chunk.end_us());
            }
            prop_assert_eq!(Chunk::decode(&bytes), Ok(chunk));
        }

        /// What a cloud serves rests on this: a chunk from an old appliance (version 1) and
        /// one from a new appliance (version 2) of the same samples read the same.
        #[test]
        fn versions_1_and_2_decode_equal(chunk in arb_chunk()) {
            let v1 = chunk.encode_v1().expect("valid chunk encodes in version 1");
            let v2 = chunk.encode().expect("valid chunk encodes");
            prop_assert_eq!(peek_header(&v1).map(|h| h.codec_version), Ok(CODEC_VERSION_1));
            prop_assert_eq!(peek_header(&v2).map(|h| h.codec_version), Ok(CODEC_VERSION));
            // Version 2 never costs more than a byte per column over version 1.
            let columns = chunk.channel.dims() + 1;
            prop_assert!(v2.len() <= v1.len() + columns, "v2 {} v1 {}", v2.len(), v1.len());
            prop_assert_eq!(Chunk::decode(&v1), Ok(chunk.clone()));
            prop_assert_eq!(Chunk::decode(&v2), Ok(chunk));
        }

        #[test]
        fn mutated_v1_chunks_never_panic(
            chunk in arb_chunk(),
            compress in any::<bool>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = if compress { chunk.encode_compressed() } else { chunk.encode_v1() }
                .expect("valid chunk encodes");
            for (index, byte) in edits {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            check_decode_is_total(&bytes);
        }

        #[test]
        fn nominal_rates_cost_constant_time(rate_hz in 1_i64..5_000, n in 8_usize..3_000) {
            let samples: Vec<Sample> =
                (0..n as i64).map(|k| Sample::scalar(T0_US + k * 1_000_000 / rate_hz, 0)).collect();
            let bytes = Chunk { channel: Channel::Ecg, samples }.encode().expect("encodes");
            let layout = peek_header(&bytes).expect("valid header").time_layout;
            prop_assert!(!matches!(layout, TimeLayout::Deltas { .. }), "{:?}", layout);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            check_decode_is_total(&bytes);
        }

        #[test]
        fn headers_with_arbitrary_bodies_never_panic(
            version in CODEC_VERSION_1..=CODEC_VERSION,
            channel_code in 0_u8..9,
            layout in 0_u8..8,
            tail in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let bytes = [&[version, channel_code, layout][..], &tail].concat();
            check_decode_is_total(&bytes);
        }

        #[test]
        fn mutated_chunks_never_panic(
            chunk in arb_chunk(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = chunk.encode().expect("valid chunk encodes");
            for (index, byte) in edits {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            check_decode_is_total(&bytes);
        }
    }
}
