//! A cloud that receives chunks of codec version 1 from an old appliance and of version 2 from a
//! new one (or both in one session, from an appliance upgraded mid-session) serves the same
//! samples for both: summaries, checksums and vitals pages, through the real SQLite store.

use std::sync::Arc;

use vigil_cloud::auth::Auth;
use vigil_cloud::store::CloudStore;
use vigil_shared::chunk::{Chunk, peek_header};
use vigil_shared::doc::SessionDoc;
use vigil_shared::fixtures;
use vigil_shared::vitals::{Channel, Sample};
use vigil_shared::wire::DocKind;

const T0: i64 = 1_796_000_000_000_000;
const SERVICE_TOKEN: &str = "service-token-0123456789abcdef";

/// Which codec version each chunk is written in.
#[derive(Clone, Copy)]
enum Writer {
    Old,
    New,
    /// Version 1 for the first half of each channel's chunks, version 2 after.
    Upgraded,
}

/// Two minutes of 250 Hz ECG in 5 µV steps, 1 Hz heart rate and two blood pressures.
fn channels() -> Vec<(Channel, Vec<Sample>)> {
    let ecg = (0..250 * 120)
        .map(|k: i64| {
            let beat = k % 208;
            let wave = if (70..76).contains(&beat) {
                (1 + 3 - (beat - 73).abs()) * 60
            } else {
                (k % 500 - 250) / 25
            };
            Sample::scalar(T0 + k * 4_000, (wave * 5) as i32)
        })
        .collect();
    let hr = (0..120)
        .map(|s: i64| {
            Sample::scalar(
                T0 + s * 1_000_000 + (s * 7_919) % 20_000,
                70 + (s % 9) as i32,
            )
        })
        .collect();
    let nibp = vec![
        Sample {
            t_us: T0,
            v: [128, 84, 99],
        },
        Sample {
            t_us: T0 + 60_000_000,
            v: [186, 104, 131],
        },
    ];
    vec![
        (Channel::Ecg, ecg),
        (Channel::Hr, hr),
        (Channel::Nibp, nibp),
    ]
}

fn session(id: &str, writer: Writer) -> SessionDoc {
    let mut doc = SessionDoc::create(&fixtures::session_meta(id, "austin", "1", T0)).unwrap();
    for (channel, samples) in channels() {
        let per_chunk = match channel {
            Channel::Ecg => 2_500,
            _ => 10,
        };
        let parts: Vec<&[Sample]> = samples.chunks(per_chunk).collect();
        let n_parts = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let chunk = Chunk {
                channel,
                samples: part.to_vec(),
            };
            let v1 = match writer {
                Writer::Old => true,
                Writer::New => false,
                Writer::Upgraded => i < n_parts.div_ceil(2),
            };
            let bytes = if v1 {
                chunk.encode_v1()
            } else {
                chunk.encode()
            }
            .unwrap();
            assert_eq!(
                peek_header(&bytes).unwrap().codec_version,
                if v1 { 1 } else { 2 }
            );
            doc.append_chunk(channel, bytes).unwrap();
            doc.automerge().commit();
        }
    }
    doc
}

#[test]
fn old_and_new_appliances_chunks_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CloudStore::open(&dir.path().join("cloud.db")).unwrap());
    let sessions = [
        ("s-old", Writer::Old),
        ("s-new", Writer::New),
        ("s-upgraded", Writer::Upgraded),
    ];
    for (id, writer) in sessions {
        let mut doc = session(id, writer);
        store
            .commit_document(id, DocKind::Session, "austin", doc.automerge(), T0)
            .unwrap();
    }
    let auth = Auth::new(store.clone(), Vec::new(), SERVICE_TOKEN);
    let service = auth
        .bearer(SERVICE_TOKEN, T0)
        .unwrap()
        .expect("service token");
    let scope = service.scope();

    for (channel, samples) in channels() {
        let expected: Vec<Vec<i64>> = samples
            .iter()
            .map(|s| {
                std::iter::once(s.t_us)
                    .chain(s.v[..channel.dims()].iter().map(|&v| i64::from(v)))
                    .collect()
            })
            .collect();
        let mut summaries = Vec::new();
        for (id, _) in sessions {
            let page = store
                .vitals(scope, id, channel, None, None)
                .unwrap()
                .expect("session in scope");
            assert_eq!(page.corrupt_chunks, 0, "{id} {channel}");
            assert_eq!(page.samples, expected, "{id} {channel}");
            let summary = store.session_summary(scope, id).unwrap().expect("summary");
            let channel_summary = summary.channels.get(&channel).cloned().expect("channel");
            assert_eq!(
                channel_summary.samples,
                samples.len() as u64,
                "{id} {channel}"
            );
            summaries.push(channel_summary);
        }
        assert!(
            summaries.windows(2).all(|pair| pair[0] == pair[1]),
            "{channel}: {summaries:?}"
        );
    }
}
