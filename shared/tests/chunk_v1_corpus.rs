//! Chunks written by codec version 1, kept as files, must decode to the same samples forever.
//!
//! The `.chunk` files under `tests/data/chunk_v1/` were produced by the version-1 encoder
//! before version 2 existed (and `ecg_250hz_zstd.chunk` is the 250 Hz chunk with its body as
//! one zstd frame, the layout's compressed flag, which that encoder could also write); each
//! `.csv` beside them lists the samples they hold. Never regenerate these files: they stand for
//! recordings already on appliances and in the cloud. This test is not about the current
//! encoder, only about the decoder reading what older appliances wrote.

use std::path::PathBuf;

use vigil_shared::chunk::{Chunk, TimeLayout, peek_header};
use vigil_shared::vitals::{Channel, Sample};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/chunk_v1")
}

fn read_samples(csv_name: &str) -> Vec<Sample> {
    let text = std::fs::read_to_string(data_dir().join(csv_name)).expect("corpus csv");
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<i64> = line
                .split(',')
                .map(|field| field.parse().expect("integer field"))
                .collect();
            let value = |i: usize| i32::try_from(fields[i]).expect("i32 value");
            Sample {
                t_us: fields[0],
                v: [value(1), value(2), value(3)],
            }
        })
        .collect()
}

/// Decodes `chunk_name` and checks channel, header and samples against `csv_name`.
fn check(chunk_name: &str, csv_name: &str, channel: Channel, layout: &str, compressed: bool) {
    let bytes = std::fs::read(data_dir().join(chunk_name)).expect("corpus chunk");
    let header = peek_header(&bytes).expect("v1 header");
    assert_eq!(header.codec_version, 1, "{chunk_name}");
    assert_eq!(header.channel, channel, "{chunk_name}");
    assert_eq!(header.compressed, compressed, "{chunk_name}");
    let layout_name = match header.time_layout {
        TimeLayout::Period { .. } => "period",
        TimeLayout::Rate { .. } => "rate",
        TimeLayout::Deltas { .. } => "deltas",
    };
    assert_eq!(layout_name, layout, "{chunk_name}");
    let samples = read_samples(csv_name);
    assert_eq!(header.n_samples, samples.len(), "{chunk_name}");
    let expected = Chunk { channel, samples };
    let decoded = Chunk::decode(&bytes).expect("v1 chunk decodes");
    assert_eq!(decoded, expected, "{chunk_name}");

    // The same samples written by today's encoder decode to the same chunk: a reader serves
    // a recording whichever version wrote it.
    let current = expected.encode().expect("corpus samples encode");
    assert_eq!(
        Chunk::decode(&current),
        Ok(decoded),
        "{chunk_name} re-encoded"
    );
}

#[test]
fn version_1_corpus_decodes_to_the_same_samples() {
    let table: &[(&str, &str, Channel, &str, bool)] = &[
        (
            "ecg_250hz_period.chunk",
            "ecg_250hz_period.csv",
            Channel::Ecg,
            "period",
            false,
        ),
        (
            "ecg_250hz_zstd.chunk",
            "ecg_250hz_period.csv",
            Channel::Ecg,
            "period",
            true,
        ),
        (
            "ecg_130hz_rate.chunk",
            "ecg_130hz_rate.csv",
            Channel::Ecg,
            "rate",
            false,
        ),
        (
            "hr_1hz_deltas.chunk",
            "hr_1hz_deltas.csv",
            Channel::Hr,
            "deltas",
            false,
        ),
        (
            "nibp_deltas.chunk",
            "nibp_deltas.csv",
            Channel::Nibp,
            "deltas",
            false,
        ),
        (
            "rr_extremes.chunk",
            "rr_extremes.csv",
            Channel::Rr,
            "deltas",
            false,
        ),
    ];
    for &(chunk_name, csv_name, channel, layout, compressed) in table {
        check(chunk_name, csv_name, channel, layout, compressed);
    }
}
