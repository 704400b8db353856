//! Tests of the wire protocol: table-driven round trips and golden bytes, every truncation,
//! the limits (oversized headers, zstd bombs, long fields), replay, version negotiation, and
//! property tests over arbitrary bytes, splits and messages.

use proptest::prelude::*;

use super::*;

fn sync(seq: u64, doc_id: &str, kind: DocKind, message: Vec<u8>) -> Message {
    Message::Sync {
        seq,
        doc_id: doc_id.to_owned(),
        kind,
        message,
    }
}

/// One of every message, including edge values and one large enough to be compressed.
fn sample_messages() -> Vec<Message> {
    vec![
        hello("vigil-edge 0.1.0 (abc123)"),
        Message::Hello {
            min_version: 0,
            max_version: u16::MAX,
            software: String::new(),
        },
        Message::Welcome {
            version: 1,
            server_time_us: 1_760_000_000_000_000,
        },
        Message::Welcome {
            version: u16::MAX,
            server_time_us: i64::MIN,
        },
        sync(1, "session:0b7c", DocKind::Session, vec![0x42, 0x00, 0xff]),
        sync(u64::MAX, "p", DocKind::Patient, Vec::new()),
        sync(7, "site:austin", DocKind::SiteConfig, b"ecg".repeat(10_000)),
        Message::Durable {
            doc_id: "session:0b7c".to_owned(),
            heads: vec![[0xab; HEAD_BYTES], [0x01; HEAD_BYTES]],
        },
        Message::Durable {
            doc_id: "d".repeat(MAX_DOC_ID_BYTES),
            heads: Vec::new(),
        },
        Message::reject(RejectCode::Forbidden, "document belongs to site tampa"),
        Message::reject(RejectCode::Internal, "é".repeat(MAX_REASON_BYTES / 2)),
        Message::Bye,
        Message::Backlog {
            docs: 3,
            bytes: u64::MAX,
        },
        Message::Enrol {
            code: "K7QF-M2XD-9PRT-4HWA".to_owned(),
            csr: vec![0x30; MAX_CSR_BYTES],
            software: "vigil-edge 0.1.0".to_owned(),
        },
        Message::Certificate {
            site: "austin".to_owned(),
            room: "1".to_owned(),
            chain_pem: "-".repeat(MAX_CHAIN_BYTES),
        },
        Message::Renew { csr: vec![1, 2, 3] },
        Message::Report {
            json: "{}".to_owned(),
        },
    ]
}

/// Decodes a byte stream delivered in the given pieces, draining after each push.
fn decode_all(pieces: &[&[u8]]) -> Result<Vec<Message>, WireError> {
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        while let Some(message) = decoder.next_message()? {
            out.push(message);
        }
    }
    decoder.finish()?;
    Ok(out)
}

fn check_round_trip(message: &Message) {
    let frame = encode_message(message).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - FRAME_HEADER_BYTES, "{}", message.name());
    assert_eq!(
        decode_all(&[&frame]).unwrap(),
        vec![message.clone()],
        "{}",
        message.name()
    );
}

#[test]
fn every_message_round_trips() {
    for message in sample_messages() {
        check_round_trip(&message);
    }
}

/// Golden bytes: the layout is a contract with appliances already in the field.
#[test]
fn frames_have_the_documented_layout() {
    let cases: Vec<(Message, Vec<u8>)> = vec![
        (Message::Bye, vec![0, 0, 0, 2, 0, 6]),
        (
            Message::Hello {
                min_version: 1,
                max_version: 2,
                software: "v".to_owned(),
            },
            vec![0, 0, 0, 11, 0, 1, 0, 1, 0, 2, 0, 0, 0, 1, b'v'],
        ),
        (
            Message::Welcome {
                version: 1,
                server_time_us: -2,
            },
            vec![
                0, 0, 0, 12, 0, 2, 0, 1, 255, 255, 255, 255, 255, 255, 255, 254,
            ],
        ),
        (
            sync(258, "d", DocKind::SiteConfig, vec![9]),
            vec![
                0, 0, 0, 21, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1, b'd', 3, 0, 0, 0, 1, 9,
            ],
        ),
        (
            Message::Durable {
                doc_id: "d".to_owned(),
                heads: vec![[7; 32]],
            },
            [
                vec![0, 0, 0, 43, 0, 4, 0, 0, 0, 1, b'd', 0, 0, 0, 1],
                vec![7; 32],
            ]
            .concat(),
        ),
        (
            Message::reject(RejectCode::Replay, "no"),
            vec![0, 0, 0, 9, 0, 5, 7, 0, 0, 0, 2, b'n', b'o'],
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(
            encode_message(&message).unwrap(),
            expected,
            "{}",
            message.name()
        );
        assert_eq!(decode_all(&[&expected]).unwrap(), vec![message]);
    }
}

#[test]
fn every_truncation_waits_for_more_bytes() {
    for message in sample_messages() {
        let frame = encode_message(&message).unwrap();
        for cut in 0..frame.len() {
            let mut decoder = FrameDecoder::new();
            decoder.push(&frame[..cut]);
            assert_eq!(
                decoder.next_message(),
                Ok(None),
                "{} cut at {cut}",
                message.name()
            );
            let needed = if cut < FRAME_HEADER_BYTES {
                FRAME_HEADER_BYTES - cut
            } else {
                frame.len() - cut
            };
            assert_eq!(
                decoder.bytes_needed(),
                needed,
                "{} cut at {cut}",
                message.name()
            );
            if cut > 0 {
                assert!(
                    decoder.finish().is_err(),
                    "stream ending at {cut} is truncated"
                );
            }
            decoder.push(&frame[cut..]);
            assert_eq!(decoder.next_message(), Ok(Some(message.clone())));
            assert_eq!(decoder.next_message(), Ok(None));
            assert_eq!(decoder.finish(), Ok(()));
        }
    }
}

#[test]
fn bytes_needed_points_at_the_end_of_the_frame() {
    let frame = encode_message(&hello("x")).unwrap();
    let mut decoder = FrameDecoder::new();
    assert_eq!(decoder.bytes_needed(), FRAME_HEADER_BYTES);
    decoder.push(&frame[..2]);
    assert_eq!(decoder.bytes_needed(), 2);
    decoder.push(&frame[2..5]);
    assert_eq!(decoder.bytes_needed(), frame.len() - 5);
}

#[test]
fn oversized_length_is_rejected_from_the_header_alone() {
    let cases: Vec<([u8; 4], WireError)> = vec![
        (
            u32::try_from(MAX_FRAME_BYTES + 1).unwrap().to_be_bytes(),
            WireError::FrameTooLarge {
                len: MAX_FRAME_BYTES + 1,
                max: MAX_FRAME_BYTES,
            },
        ),
        (
            [0xff; 4],
            WireError::FrameTooLarge {
                len: u32::MAX as usize,
                max: MAX_FRAME_BYTES,
            },
        ),
        ([0; 4], WireError::Malformed("frame has no flags byte")),
    ];
    for (header, expected) in cases {
        let mut decoder = FrameDecoder::new();
        decoder.push(&header);
        assert_eq!(decoder.next_message(), Err(expected.clone()));
        // Spent: later bytes are not buffered and the error repeats.
        decoder.push(&[0; 1024]);
        assert_eq!(decoder.buffered_bytes(), 0);
        assert_eq!(decoder.next_message(), Err(expected.clone()));
        assert_eq!(decoder.finish(), Err(expected));
    }
}

#[test]
fn a_frame_of_exactly_the_limit_is_accepted() {
    // A payload of exactly MAX_PAYLOAD_BYTES that zstd can't shrink, so the frame is at the limit.
    let mut noise = Vec::with_capacity(MAX_PAYLOAD_BYTES);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while noise.len() < MAX_PAYLOAD_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let overhead = encode_message(&sync(1, "d", DocKind::Session, Vec::new()))
        .unwrap()
        .len()
        - FRAME_HEADER_BYTES
        - 1;
    noise.truncate(MAX_PAYLOAD_BYTES - overhead);
    let message = sync(1, "d", DocKind::Session, noise);
    let frame = encode_message(&message).unwrap();
    assert_eq!(frame.len(), FRAME_HEADER_BYTES + MAX_FRAME_BYTES);
    assert_eq!(decode_all(&[&frame]).unwrap(), vec![message.clone()]);

    let Message::Sync { mut message, .. } = message else {
        unreachable!()
    };
    message.push(0);
    assert_eq!(
        encode_message(&sync(1, "d", DocKind::Session, message)),
        Err(WireError::PayloadTooLarge {
            len: MAX_PAYLOAD_BYTES as u64 + 1,
            max: MAX_PAYLOAD_BYTES
        })
    );
}

#[test]
fn an_idle_decoder_gives_back_a_large_buffer() {
    let big = encode_message(&sync(
        1,
        "d",
        DocKind::Session,
        (0..=255u8).cycle().take(1 << 20).collect(),
    ))
    .unwrap();
    let small = encode_message(&Message::Bye).unwrap();
    let mut decoder = FrameDecoder::new();
    decoder.push(&big);
    assert!(decoder.next_message().unwrap().is_some());
    decoder.push(&small);
    assert_eq!(decoder.next_message(), Ok(Some(Message::Bye)));
    assert!(
        decoder.buffer_capacity() <= RETAINED_BUFFER_BYTES,
        "{}",
        decoder.buffer_capacity()
    );
}

/// A frame built by hand: header, flags and body.
fn raw_frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(1 + body.len()).unwrap();
    [&len.to_be_bytes()[..], &[flags], body].concat()
}

#[test]
fn zstd_bombs_are_rejected() {
    // Just over the payload limit, in zeros: a few hundred bytes compressed.
    let bomb = zstd::bulk::compress(&vec![0u8; MAX_PAYLOAD_BYTES + 1], 19).unwrap();
    assert!(bomb.len() < 1024, "bomb is {} bytes", bomb.len());
    // The same without a declared size (streaming compression doesn't write one).
    let undeclared = zstd::stream::encode_all(&[0u8; 4096][..], 3).unwrap();
    // Two zstd frames: the first declares 10 bytes, the second brings 1 MiB more.
    let concatenated = [
        zstd::bulk::compress(&[0u8; 10], 3).unwrap(),
        zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap(),
    ]
    .concat();
    type IsExpected = fn(&WireError) -> bool;
    let cases: Vec<(Vec<u8>, IsExpected)> = vec![
        (bomb, |e| {
            *e == WireError::PayloadTooLarge {
                len: MAX_PAYLOAD_BYTES as u64 + 1,
                max: MAX_PAYLOAD_BYTES,
            }
        }),
        (undeclared, |e| {
            *e == WireError::Malformed("compressed payload does not declare its size")
        }),
        (concatenated, |e| matches!(e, WireError::Decompress(_))),
        (b"not zstd at all".to_vec(), |e| {
            matches!(e, WireError::Decompress(_))
        }),
        (Vec::new(), |e| matches!(e, WireError::Decompress(_))),
    ];
    for (i, (compressed, is_expected)) in cases.into_iter().enumerate() {
        let err = decode_all(&[&raw_frame(FLAG_ZSTD, &compressed)]).unwrap_err();
        assert!(is_expected(&err), "case {i}: {err:?}");
    }
}

#[test]
fn large_compressible_payloads_are_compressed_and_others_are_not() {
    let cases: Vec<(Message, bool)> = vec![
        (sync(1, "d", DocKind::Session, vec![1; 100_000]), true),
        (
            sync(1, "d", DocKind::Session, vec![1; COMPRESS_MIN_BYTES / 2]),
            false,
        ),
        (Message::Bye, false),
        (
            // Incompressible: distinct bytes of a permutation, compression can't win.
            sync(1, "d", DocKind::Session, (0..=255u8).rev().collect()),
            false,
        ),
    ];
    for (message, compressed) in cases {
        let frame = encode_message(&message).unwrap();
        assert_eq!(
            frame[FRAME_HEADER_BYTES] & FLAG_ZSTD != 0,
            compressed,
            "{message:?}"
        );
        assert_eq!(decode_all(&[&frame]).unwrap(), vec![message]);
    }
}

#[test]
fn malformed_payloads_are_named() {
    let long_software = [&[1, 0, 1, 0, 1][..], &500u32.to_be_bytes(), &[b'x'; 500]].concat();
    let cases: Vec<(Vec<u8>, WireError)> = vec![
        (raw_frame(0, &[0x7f]), WireError::UnknownMessage(0x7f)),
        (raw_frame(0, &[0]), WireError::UnknownMessage(0)),
        (
            raw_frame(0, &[]),
            WireError::Malformed("message ends inside a field"),
        ),
        (
            raw_frame(0b10, &[6]),
            WireError::Malformed("unknown frame flag bits"),
        ),
        (
            raw_frame(0, &[6, 0]),
            WireError::Malformed("trailing bytes after the message"),
        ),
        (
            raw_frame(0, &[2, 0, 1]),
            WireError::Malformed("message ends inside a field"),
        ),
        (
            raw_frame(0, &[1, 0, 2, 0, 1, 0, 0, 0, 0]),
            WireError::Malformed("hello's min_version is above its max_version"),
        ),
        (
            raw_frame(0, &[1, 0, 1, 0, 1, 0, 0, 0, 2, 0xc3, 0x28]),
            WireError::Malformed("string is not utf-8"),
        ),
        (
            raw_frame(0, &long_software),
            WireError::FieldTooLong {
                field: "software",
                len: 500,
                max: MAX_SOFTWARE_BYTES,
            },
        ),
        (
            raw_frame(
                0,
                &[3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, b'd', 9, 0, 0, 0, 0],
            ),
            WireError::Malformed("unknown document kind"),
        ),
        (
            raw_frame(0, &[3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            WireError::Malformed("empty doc_id"),
        ),
        (
            raw_frame(
                0,
                &[
                    3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, b'd', 1, 0, 0, 0, 5, 1,
                ],
            ),
            WireError::Malformed("message ends inside a field"),
        ),
        (
            raw_frame(0, &[4, 0, 0, 0, 1, b'd', 0xff, 0xff, 0xff, 0xff]),
            WireError::FieldTooLong {
                field: "heads",
                len: u32::MAX as usize,
                max: MAX_HEADS,
            },
        ),
        (
            raw_frame(0, &[4, 0, 0, 0, 1, b'd', 0, 0, 0, 2, 1, 2, 3]),
            WireError::Malformed("message ends inside a field"),
        ),
        (
            raw_frame(0, &[5, 0, 0, 0, 0, 0]),
            WireError::Malformed("unknown reject code"),
        ),
        (
            raw_frame(0, &[5, 10, 0, 0, 0, 0]),
            WireError::Malformed("unknown reject code"),
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(decode_all(&[&frame]), Err(expected.clone()), "{expected}");
    }
}

#[test]
fn encoding_refuses_what_decoding_would_refuse() {
    let cases: Vec<(Message, WireError)> = vec![
        (
            sync(
                1,
                &"d".repeat(MAX_DOC_ID_BYTES + 1),
                DocKind::Session,
                Vec::new(),
            ),
            WireError::FieldTooLong {
                field: "doc_id",
                len: MAX_DOC_ID_BYTES + 1,
                max: MAX_DOC_ID_BYTES,
            },
        ),
        (
            sync(1, "", DocKind::Session, Vec::new()),
            WireError::Malformed("empty doc_id"),
        ),
        (
            Message::Durable {
                doc_id: "d".to_owned(),
                heads: vec![[0; HEAD_BYTES]; MAX_HEADS + 1],
            },
            WireError::FieldTooLong {
                field: "heads",
                len: MAX_HEADS + 1,
                max: MAX_HEADS,
            },
        ),
        (
            Message::Hello {
                min_version: 1,
                max_version: 1,
                software: "s".repeat(MAX_SOFTWARE_BYTES + 1),
            },
            WireError::FieldTooLong {
                field: "software",
                len: MAX_SOFTWARE_BYTES + 1,
                max: MAX_SOFTWARE_BYTES,
            },
        ),
        (
            Message::Reject {
                code: RejectCode::Internal,
                reason: "r".repeat(MAX_REASON_BYTES + 1),
            },
            WireError::FieldTooLong {
                field: "reason",
                len: MAX_REASON_BYTES + 1,
                max: MAX_REASON_BYTES,
            },
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(encode_message(&message), Err(expected));
    }
}

#[test]
fn reject_reasons_are_cut_at_a_character_boundary() {
    let cases: Vec<(String, usize)> = vec![
        ("short".to_owned(), 5),
        ("x".repeat(MAX_REASON_BYTES + 10), MAX_REASON_BYTES),
        // 'é' is two bytes: 1 + 2k can't end exactly at the limit, so one byte less is kept.
        (
            format!("x{}", "é".repeat(MAX_REASON_BYTES)),
            MAX_REASON_BYTES - 1,
        ),
    ];
    for (reason, expected_len) in cases {
        let message = Message::reject(RejectCode::Internal, reason);
        let Message::Reject { reason, .. } = &message else {
            unreachable!()
        };
        assert_eq!(reason.len(), expected_len);
        check_round_trip(&message);
    }
}

#[test]
fn sync_seq_must_increase_within_a_stream() {
    let frames = |seqs: &[u64]| -> Vec<u8> {
        seqs.iter()
            .flat_map(|&seq| encode_message(&sync(seq, "d", DocKind::Session, vec![])).unwrap())
            .collect()
    };
    let cases: Vec<(&[u64], Result<usize, WireError>)> = vec![
        (&[1, 2, 3], Ok(3)),
        (&[5, 9, 1000], Ok(3)),
        (&[u64::MAX], Ok(1)),
        (
            &[0],
            Err(WireError::Replay {
                got: 0,
                expected_above: 0,
            }),
        ),
        (
            &[1, 2, 2],
            Err(WireError::Replay {
                got: 2,
                expected_above: 2,
            }),
        ),
        (
            &[3, 1],
            Err(WireError::Replay {
                got: 1,
                expected_above: 3,
            }),
        ),
    ];
    for (seqs, expected) in cases {
        let got = decode_all(&[&frames(seqs)]).map(|messages| messages.len());
        assert_eq!(got, expected, "{seqs:?}");
    }
}

#[test]
fn other_messages_do_not_touch_the_seq() {
    let stream = [
        encode_message(&sync(4, "d", DocKind::Session, vec![])).unwrap(),
        encode_message(&Message::Bye).unwrap(),
        encode_message(&sync(5, "d", DocKind::Session, vec![])).unwrap(),
    ]
    .concat();
    assert_eq!(decode_all(&[&stream]).unwrap().len(), 3);
}

#[test]
fn seq_counter_and_guard_agree() {
    let mut counter = SeqCounter::new();
    let mut guard = SeqGuard::new();
    for expected in 1..=100 {
        let seq = counter.next_seq();
        assert_eq!(seq, expected);
        guard.check(seq).unwrap();
    }
    assert_eq!(guard.last(), 100);
    assert!(guard.check(100).is_err());
}

#[test]
fn versions_negotiate_to_the_highest_common_one() {
    const OURS: &[u16] = &[1, 2, 4];
    let cases: Vec<(u16, u16, Result<u16, WireError>)> = vec![
        (1, 1, Ok(1)),
        (1, 3, Ok(2)),
        (1, 9, Ok(4)),
        (
            3,
            3,
            Err(WireError::UnsupportedVersion {
                peer_min: 3,
                peer_max: 3,
                ours: OURS,
            }),
        ),
        (
            5,
            9,
            Err(WireError::UnsupportedVersion {
                peer_min: 5,
                peer_max: 9,
                ours: OURS,
            }),
        ),
        (
            2,
            1,
            Err(WireError::Malformed(
                "hello's min_version is above its max_version",
            )),
        ),
    ];
    for (min, max, expected) in cases {
        assert_eq!(negotiate_version(min, max, OURS), expected, "{min}..={max}");
    }
}

#[test]
fn the_cloud_answers_hello() {
    let cases: Vec<(Message, Message)> = vec![
        (
            hello("edge"),
            Message::Welcome {
                version: MAX_PROTOCOL_VERSION,
                server_time_us: 42,
            },
        ),
        (
            // A newer appliance that still speaks versions 1 and 2.
            Message::Hello {
                min_version: 1,
                max_version: 7,
                software: "edge 9".to_owned(),
            },
            Message::Welcome {
                version: 2,
                server_time_us: 42,
            },
        ),
        (
            // An appliance one version behind keeps syncing.
            Message::Hello {
                min_version: 1,
                max_version: 1,
                software: "edge 0.0".to_owned(),
            },
            Message::Welcome {
                version: 1,
                server_time_us: 42,
            },
        ),
        (
            Message::Hello {
                min_version: 3,
                max_version: 7,
                software: "edge 9".to_owned(),
            },
            Message::reject(
                RejectCode::UnsupportedVersion,
                "no common protocol version: peer speaks 3..=7, we speak [1, 2]",
            ),
        ),
        (
            Message::Bye,
            Message::reject(
                RejectCode::Malformed,
                "the first message on a connection must be hello",
            ),
        ),
    ];
    for (hello, expected) in cases {
        assert_eq!(answer_hello(&hello, 42), expected, "{hello:?}");
    }
    // A cloud that retired version 1 tells a version-1 appliance to update, and still
    // welcomes a current one.
    let old = Message::Hello {
        min_version: 1,
        max_version: 1,
        software: "edge 0.0".to_owned(),
    };
    assert_eq!(
        answer_hello_from(&old, 42, 2),
        Message::reject(
            RejectCode::UnsupportedVersion,
            "this appliance is too old: it speaks sync protocol 1 to 1 and this cloud needs 2 \
             or newer; update vigil-edge"
        )
    );
    assert_eq!(
        answer_hello_from(&hello("edge"), 42, 2),
        Message::Welcome {
            version: 2,
            server_time_us: 42
        }
    );
    assert_eq!(
        PROTOCOL_VERSIONS.iter().copied().min(),
        Some(MIN_PROTOCOL_VERSION)
    );
    assert_eq!(
        PROTOCOL_VERSIONS.iter().copied().max(),
        Some(MAX_PROTOCOL_VERSION)
    );
}

#[test]
fn every_error_maps_to_a_reject_code() {
    let cases: Vec<(WireError, RejectCode)> = vec![
        (
            WireError::FrameTooLarge { len: 1, max: 0 },
            RejectCode::FrameTooLarge,
        ),
        (
            WireError::PayloadTooLarge { len: 1, max: 0 },
            RejectCode::FrameTooLarge,
        ),
        (WireError::Decompress("x".to_owned()), RejectCode::Malformed),
        (WireError::Malformed("x"), RejectCode::Malformed),
        (
            WireError::FieldTooLong {
                field: "f",
                len: 1,
                max: 0,
            },
            RejectCode::Malformed,
        ),
        (WireError::UnknownMessage(9), RejectCode::UnknownMessage),
        (
            WireError::UnsupportedVersion {
                peer_min: 2,
                peer_max: 2,
                ours: &[1],
            },
            RejectCode::UnsupportedVersion,
        ),
        (
            WireError::Replay {
                got: 1,
                expected_above: 1,
            },
            RejectCode::Replay,
        ),
    ];
    for (error, code) in cases {
        assert_eq!(error.reject_code(), code, "{error}");
        assert_eq!(error.to_reject(), Message::reject(code, error.to_string()));
    }
}

#[test]
fn codes_and_names_are_stable() {
    let kinds: Vec<(DocKind, u8, &str)> = vec![
        (DocKind::Session, 1, "session"),
        (DocKind::Patient, 2, "patient"),
        (DocKind::SiteConfig, 3, "site_config"),
        (DocKind::Audit, 4, "audit"),
        (DocKind::Ledger, 5, "ledger"),
    ];
    assert_eq!(kinds.len(), DocKind::ALL.len());
    for (kind, code, name) in kinds {
        assert_eq!((kind.code(), kind.as_str()), (code, name));
        assert_eq!(DocKind::from_code(code), Some(kind));
        assert_eq!(DocKind::from_name(name), Some(kind));
        assert_eq!(kind.to_string(), name);
    }
    assert_eq!(DocKind::from_code(0), None);
    assert_eq!(DocKind::from_name("Session"), None);

    let codes: Vec<(RejectCode, u8)> = vec![
        (RejectCode::UnsupportedVersion, 1),
        (RejectCode::FrameTooLarge, 2),
        (RejectCode::Malformed, 3),
        (RejectCode::UnknownMessage, 4),
        (RejectCode::Forbidden, 5),
        (RejectCode::SchemaInvalid, 6),
        (RejectCode::Replay, 7),
        (RejectCode::RateLimited, 8),
        (RejectCode::Internal, 9),
    ];
    assert_eq!(codes.len(), RejectCode::ALL.len());
    for (code, byte) in codes {
        assert_eq!(code.code(), byte);
        assert_eq!(RejectCode::from_code(byte), Some(code));
    }
    assert_eq!(RejectCode::from_code(0), None);
    assert_eq!(ALPN, b"vigil-sync/1");
}

fn arb_doc_kind() -> impl Strategy<Value = DocKind> {
    prop::sample::select(DocKind::ALL.to_vec())
}

fn arb_message() -> impl Strategy<Value = Message> {
    let doc_id = "[a-z0-9:é-]{1,40}";
    // Random bytes (incompressible) or a repeated pattern (compressed past the threshold).
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (prop::collection::vec(any::<u8>(), 1..8), 0usize..400)
            .prop_map(|(pattern, n)| pattern.repeat(n)),
    ];
    prop_oneof![
        (any::<u16>(), any::<u16>(), "\\PC{0,30}").prop_map(|(a, b, software)| Message::Hello {
            min_version: a.min(b),
            max_version: a.max(b),
            software,
        }),
        (any::<u16>(), any::<i64>()).prop_map(|(version, server_time_us)| Message::Welcome {
            version,
            server_time_us
        }),
        (1..u64::MAX, doc_id, arb_doc_kind(), body).prop_map(|(seq, doc_id, kind, message)| {
            Message::Sync {
                seq,
                doc_id,
                kind,
                message,
            }
        }),
        (
            doc_id,
            prop::collection::vec(any::<[u8; HEAD_BYTES]>(), 0..5)
        )
            .prop_map(|(doc_id, heads)| Message::Durable { doc_id, heads }),
        (prop::sample::select(RejectCode::ALL.to_vec()), "\\PC{0,60}")
            .prop_map(|(code, reason)| Message::reject(code, reason)),
        Just(Message::Bye),
        (any::<u64>(), any::<u64>()).prop_map(|(docs, bytes)| Message::Backlog { docs, bytes }),
        (
            "[A-Z0-9-]{0,30}",
            prop::collection::vec(any::<u8>(), 0..300),
            "\\PC{0,30}"
        )
            .prop_map(|(code, csr, software)| Message::Enrol {
                code,
                csr,
                software
            }),
        ("[a-z0-9]{0,20}", "[a-z0-9]{0,20}", "\\PC{0,200}").prop_map(|(site, room, chain_pem)| {
            Message::Certificate {
                site,
                room,
                chain_pem,
            }
        }),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|csr| Message::Renew { csr }),
        "\\PC{0,200}".prop_map(|json| Message::Report { json }),
    ]
}

/// Cuts `bytes` at the given points (taken modulo the length, sorted).
fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        pieces.push(&bytes[start..cut]);
        start = cut;
    }
    pieces.push(&bytes[start..]);
    pieces
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        points in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut decoder = FrameDecoder::new();
        for piece in split_at_points(&bytes, &points) {
            decoder.push(piece);
            // Each frame consumes at least five bytes, so this loop ends.
            while let Ok(Some(_)) = decoder.next_message() {}
            prop_assert!(decoder.buffered_bytes() <= bytes.len());
        }
        let _ = decoder.finish();
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        flags in 0u8..2,
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = decode_all(&[&raw_frame(flags, &body)]);
    }

    #[test]
    fn messages_round_trip_across_arbitrary_splits(
        messages in prop::collection::vec(arb_message(), 1..6),
        points in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        // Sync frames on one stream carry increasing seqs, as a SeqCounter hands them out.
        let mut counter = SeqCounter::new();
        let messages: Vec<Message> = messages
            .into_iter()
            .map(|mut m| {
                if let Message::Sync { seq, .. } = &mut m {
                    *seq = counter.next_seq();
                }
                m
            })
            .collect();
        let mut stream = Vec::new();
        for message in &messages {
            stream.extend(encode_message(message).unwrap());
        }
        let decoded = decode_all(&split_at_points(&stream, &points)).unwrap();
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn any_single_message_round_trips(message in arb_message()) {
        let frame = encode_message(&message).unwrap();
        prop_assert!(frame.len() <= FRAME_HEADER_BYTES + MAX_FRAME_BYTES);
        prop_assert_eq!(decode_all(&[&frame]).unwrap(), vec![message]);
    }
}
