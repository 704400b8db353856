//! The chunk codec against general and audio codecs, in one run, on real and simulated ECG:
//!
//! - real: 5 minutes of MIT-BIH Arrhythmia Database record 208, lead MLII, 360 Hz, shipped in
//!   `benches/data/` (see `benches/data/PROVENANCE.md`), as integers in µV (5 µV per ADC unit)
//!   and, for FLAC's sake, in ADC units too (FLAC takes out powers of two, not a 5 µV step);
//! - simulated: the 56-minute session's 250 Hz ECG that `session_doc` and `sync` measure.
//!
//! For each: version-1 and version-2 chunk bytes (10 s chunks, as the recorder closes them), a
//! session document holding only those chunks (saved, so Automerge's own compression applies),
//! FLAC (the `flacenc` crate at its strongest: LPC order 24, 15-bit coefficients, orders picked
//! by counting bits, the best of four block sizes) and zstd level 19 of the raw little-endian
//! integers. A summary table in bits per sample is printed first; then criterion times encoding
//! and decoding one 10 s chunk in each version.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{ORIGIN_US, meta, samples};
use criterion::{Criterion, Throughput};
use flacenc::component::BitRepr;
use flacenc::error::Verify;
use vigil_shared::chunk::Chunk;
use vigil_shared::doc::SessionDoc;
use vigil_shared::vitals::{Channel, Sample};

/// The real recording: ADC units minus the database's zero (1024), little-endian i16.
const MITDB_208: &[u8] = include_bytes!("data/mitdb208_mlii_360hz.i16le");
/// Its sampling rate.
const MITDB_RATE_HZ: i64 = 360;
/// Its gain: 200 ADC units per mV, so one unit is 5 µV.
const MITDB_UV_PER_UNIT: i32 = 5;
/// The recorder's chunk period, seconds.
const CHUNK_S: i64 = 10;
/// Ratio of version 2's bytes to FLAC's that the issue asks for on real ECG.
const TARGET_VS_FLAC: f64 = 0.85;

/// The recording in ADC units.
fn mitdb_units() -> Vec<i32> {
    MITDB_208
        .chunks_exact(2)
        .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
        .collect()
}

/// Values timed as a source at `rate_hz` times them: t0 + floor(k * 1e6 / rate).
fn timed(values: &[i32], rate_hz: i64) -> Vec<Sample> {
    values
        .iter()
        .enumerate()
        .map(|(k, &v)| Sample::scalar(ORIGIN_US + k as i64 * 1_000_000 / rate_hz, v))
        .collect()
}

/// The samples cut into the recorder's 10 s chunks.
fn chunks(samples: &[Sample], rate_hz: i64) -> Vec<Chunk> {
    samples
        .chunks((CHUNK_S * rate_hz) as usize)
        .map(|part| Chunk {
            channel: Channel::Ecg,
            samples: part.to_vec(),
        })
        .collect()
}

fn encoded(chunks: &[Chunk], v1: bool) -> Vec<Vec<u8>> {
    chunks
        .iter()
        .map(|c| if v1 { c.encode_v1() } else { c.encode() }.expect("encode"))
        .collect()
}

/// A session document holding only these ECG chunks, one change per chunk, saved.
fn doc_bytes(encoded: &[Vec<u8>]) -> usize {
    let mut doc = SessionDoc::create(&meta("codec")).expect("create");
    for bytes in encoded {
        doc.append_chunk(Channel::Ecg, bytes.clone())
            .expect("append");
        doc.automerge().commit();
    }
    doc.automerge().save().len()
}

/// The smallest FLAC stream of `values` (mono, 16 bits) over a few block sizes.
fn flac_bytes(values: &[i32], rate_hz: usize) -> (usize, usize) {
    let mut config = flacenc::config::Encoder::default();
    config.subframe_coding.qlpc.lpc_order = flacenc::constant::qlpc::MAX_ORDER;
    config.subframe_coding.qlpc.quant_precision = flacenc::constant::qlpc::MAX_PRECISION;
    config.subframe_coding.fixed.order_sel = flacenc::config::OrderSel::BitCount;
    [1_024, 2_048, 4_096, 8_192]
        .into_iter()
        .map(|block_size| {
            let mut config = config.clone();
            config.block_size = block_size;
            let config = config.into_verified().expect("valid FLAC config");
            let source = flacenc::source::MemSource::from_samples(values, 1, 16, rate_hz);
            let stream = flacenc::encode_with_fixed_block_size(&config, source, block_size)
                .expect("FLAC encode");
            let mut sink = flacenc::bitsink::ByteSink::new();
            stream.write(&mut sink).expect("FLAC write");
            (sink.as_slice().len(), block_size)
        })
        .min()
        .expect("some block size")
}

/// zstd level 19 of the values as little-endian i16 (every value here fits).
fn zstd19_bytes(values: &[i32]) -> usize {
    let raw: Vec<u8> = values
        .iter()
        .flat_map(|&v| i16::try_from(v).expect("fits i16").to_le_bytes())
        .collect();
    zstd::bulk::compress(&raw, 19).expect("zstd").len()
}

fn bits(bytes: usize, n: usize) -> String {
    format!("{:.3}", bytes as f64 * 8.0 / n as f64)
}

/// Prints one signal's rows; returns version 2's bytes ÷ FLAC's best.
fn report(name: &str, values_uv: &[i32], flac_extra: Option<&[i32]>, rate_hz: i64) -> f64 {
    let n = values_uv.len();
    let samples = timed(values_uv, rate_hz);
    let chunks = chunks(&samples, rate_hz);
    let v1 = encoded(&chunks, true);
    let v2 = encoded(&chunks, false);
    for (chunk, bytes) in chunks.iter().zip(&v2) {
        assert_eq!(Chunk::decode(bytes).as_ref(), Ok(chunk), "v2 round trip");
    }
    let v1_bytes: usize = v1.iter().map(Vec::len).sum();
    let v2_bytes: usize = v2.iter().map(Vec::len).sum();
    let (flac_uv, block_uv) = flac_bytes(values_uv, rate_hz as usize);
    let zstd = zstd19_bytes(values_uv);
    let doc_v1 = doc_bytes(&v1);
    let doc_v2 = doc_bytes(&v2);
    println!(
        "{name}: {n} samples at {rate_hz} Hz, {} chunks of {CHUNK_S} s",
        chunks.len()
    );
    println!("| encoding | bytes | bits/sample | v2 ÷ this |");
    println!("|---|---|---|---|");
    let row = |what: &str, bytes: usize| {
        println!(
            "| {what} | {bytes} | {} | {:.3} |",
            bits(bytes, n),
            v2_bytes as f64 / bytes as f64
        );
    };
    row("chunk codec v2 (Vigil)", v2_bytes);
    row("chunk codec v1", v1_bytes);
    row(&format!("FLAC of µV, block {block_uv}"), flac_uv);
    let mut flac_best = flac_uv;
    if let Some(units) = flac_extra {
        let (flac_units, block_units) = flac_bytes(units, rate_hz as usize);
        row(
            &format!("FLAC of ADC units, block {block_units}"),
            flac_units,
        );
        flac_best = flac_best.min(flac_units);
    }
    row("zstd -19 of raw i16 LE", zstd);
    row("session document, ECG only, v2 chunks", doc_v2);
    row("session document, ECG only, v1 chunks", doc_v1);
    println!();
    v2_bytes as f64 / flac_best as f64
}

fn main() {
    let units = mitdb_units();
    let real_uv: Vec<i32> = units.iter().map(|&u| u * MITDB_UV_PER_UNIT).collect();
    let sim_uv: Vec<i32> = samples(true)
        .into_iter()
        .find(|(channel, _)| *channel == Channel::Ecg)
        .map(|(_, s)| s.iter().map(|s| s.v[0]).collect())
        .expect("the session has ECG");

    println!("codec: chunk codec vs FLAC and zstd -19, same integers, same run");
    let real_ratio = report(
        "real ECG, MIT-BIH 208 MLII",
        &real_uv,
        Some(&units),
        MITDB_RATE_HZ,
    );
    let sim_ratio = report("simulated ECG, 56-minute session", &sim_uv, None, 250);
    println!(
        "| target | v2 ÷ best FLAC on real ECG | {real_ratio:.3} | <= {TARGET_VS_FLAC} | {} |",
        if real_ratio <= TARGET_VS_FLAC {
            "met"
        } else {
            "missed"
        }
    );
    println!("| - | v2 ÷ FLAC on simulated ECG | {sim_ratio:.3} | - | - |");

    let real_chunk = Chunk {
        channel: Channel::Ecg,
        samples: timed(&real_uv, MITDB_RATE_HZ)[..(CHUNK_S * MITDB_RATE_HZ) as usize].to_vec(),
    };
    let sim_chunk = Chunk {
        channel: Channel::Ecg,
        samples: timed(&sim_uv, 250)[..(CHUNK_S * 250) as usize].to_vec(),
    };
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (name, chunk) in [("real", &real_chunk), ("sim", &sim_chunk)] {
        let mut g = c.benchmark_group(format!("codec/{name}"));
        g.throughput(Throughput::Elements(chunk.samples.len() as u64));
        let v1 = chunk.encode_v1().expect("encode");
        let v2 = chunk.encode().expect("encode");
        g.bench_function("encode/v1", |b| b.iter(|| black_box(chunk).encode_v1()));
        g.bench_function("encode/v2", |b| b.iter(|| black_box(chunk).encode()));
        g.bench_function("decode/v1", |b| b.iter(|| Chunk::decode(black_box(&v1))));
        g.bench_function("decode/v2", |b| b.iter(|| Chunk::decode(black_box(&v2))));
        g.finish();
    }
    c.final_summary();
}
