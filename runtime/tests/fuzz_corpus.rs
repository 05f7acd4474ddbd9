//! Replays the frame fuzzer's corpus (`fuzz/corpus/frame_decoder`) through
//! the same checks as the fuzz target ([`check_frame_bytes`]), so every
//! `cargo test` exercises the inputs the fuzzer found interesting without
//! needing a nightly toolchain.
//!
//! The seed files (`ok_*`, `bad_*`) are made here with the codec; after a
//! deliberate change of the wire format, rewrite them with
//! `FLOWMESH_WRITE_CORPUS=1 cargo test -p flowmesh-runtime --test fuzz_corpus`.

use std::path::PathBuf;

use flowmesh_model::pmt::cbor;
use flowmesh_model::{ItemType, Pmt};
use flowmesh_runtime::net::frame::{
    self, Answer, FrameError, FrameType, GapCause, Header, Hello, Reason, WireTag, CRC_LEN,
    FLAG_CRC, FLAG_TAGS, HEADER_LEN, MAX_BODY,
};
use flowmesh_runtime::net::fuzzing::{check_frame_bytes, Checked};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame_decoder")
}

/// What a seed must decode to.
enum Expect {
    /// Whole frames of these types, nothing left over, every body well formed.
    Valid {
        preamble: bool,
        frames: Vec<FrameType>,
    },
    /// No error, no whole frame, bytes left waiting for the rest.
    Incomplete,
    /// Not a preamble, and the decoder stops with this error.
    Rejected(fn(&FrameError) -> bool),
}

/// The producer instance in the worked example of docs/protocol.md.
const INSTANCE: u64 = 0x2f1c_9a3e_7b04_d5c8;

/// A DATA frame as `net_sink` writes it: header, optional tags section
/// (u32 length + CBOR), payload; CRC flag and a CRC32C trailer over tags
/// section and payload when `crc`.
fn data_frame(first: u64, items: u32, payload: &[u8], tags: &[WireTag], crc: bool) -> Vec<u8> {
    let mut tag_bytes = vec![];
    let mut h = Header::new(FrameType::Data, first, items);
    if !tags.is_empty() {
        let t = frame::encode_tags(tags);
        tag_bytes.extend_from_slice(&(t.len() as u32).to_le_bytes());
        tag_bytes.extend_from_slice(&t);
        h.flags = FLAG_TAGS;
    }
    h.len = (tag_bytes.len() + payload.len()) as u32;
    if crc {
        h.flags |= FLAG_CRC;
        h.len += CRC_LEN as u32;
    }
    let mut out = h.encode().to_vec();
    out.extend_from_slice(&tag_bytes);
    out.extend_from_slice(payload);
    if crc {
        out.extend_from_slice(&frame::crc(&[&tag_bytes, payload]).to_le_bytes());
    }
    out
}

/// Two cf32 items: 1+0j, 0+1j.
fn cf32_payload() -> Vec<u8> {
    [1.0f32, 0.0, 0.0, 1.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn hello() -> Hello {
    Hello {
        flowgraph: "survey".into(),
        generation: 3,
        edge: "mix.out>dsp".into(),
        item_type: ItemType::Cf32,
        vlen: 1,
        item_size: 8,
        token: "s3cret".into(),
        resume_offset: 4096,
        resume_msg_seq: 0,
        crc: true,
        instance: INSTANCE,
        eos_tags: false,
        replica: 0,
    }
}

/// Two u64 items whose CRC32C is 0.
fn zero_crc_payload() -> Vec<u8> {
    let p = flowmesh_runtime::net::fuzzing::zero_crc_items(4096, 0);
    assert_eq!(frame::crc(&[&p]), 0);
    p
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The seed corpus: name, bytes, expectation.
fn seeds() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use FrameType::*;
    let pre = frame::preamble();
    let ctl = |k, a, b, body: &[u8], crc| frame::control(k, a, b, body, crc);
    let hello_frame = ctl(Hello, 0, 0, &hello().encode(), false);
    let welcome = Answer::Welcome {
        crc: true,
        retained_from: 4096,
        instance: INSTANCE,
    }
    .encode();
    let refuse = Answer::Refuse {
        reason: Reason::BadToken,
        message: "edge mix.out>dsp: wrong authentication token".into(),
    }
    .encode();
    let payload = cf32_payload();
    let data = data_frame(4096, 2, &payload, &[], true);
    let tags = [WireTag {
        offset: 4097,
        key: "rx_freq".into(),
        value: Pmt::F64(1e9),
    }];
    let data_tags = data_frame(4096, 2, &payload, &tags, true);
    let data_nocrc = data_frame(0, 5, b"hello", &[], false);
    let data_crc_zero = data_frame(4096, 2, &zero_crc_payload(), &[], true);
    let mut bad_crc_zero = data_crc_zero.clone();
    bad_crc_zero[HEADER_LEN + 3] ^= 0x10;
    // Version 1 carried the CRC in the header's last 4 bytes, now reserved.
    let mut bad_v1_crc_field = data_frame(4096, 2, &payload, &[], false);
    bad_v1_crc_field[20..24].copy_from_slice(&frame::crc(&[&payload]).to_le_bytes());
    let gap = ctl(
        Gap,
        100,
        GapCause::RetentionExceeded as u32,
        &50u64.to_le_bytes(),
        false,
    );
    let msg_body = cbor::encode(&Pmt::map([
        ("freq", Pmt::F64(1e9)),
        ("name", Pmt::String("retune".into())),
    ]));
    let msg = ctl(Msg, 1, 0, &msg_body, true);
    let mut bad_crc = data.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x01;
    let mut bad_flags = Header::new(Ack, 4096, 0).encode();
    bad_flags[1] = FLAG_TAGS;
    let mut too_large = Header::new(Msg, 1, 0);
    too_large.len = MAX_BODY + 1;
    let mut bad_version = pre;
    bad_version[4] = 1; // an older build
                        // The end of a stream whose last 5 391 232 items a live source dropped:
                        // EOS with the final `gap` at the end offset, CRC-protected.
    let eos_tags = frame::eos(
        30_000_000,
        &[WireTag {
            offset: 30_000_000,
            key: "gap".into(),
            value: Pmt::map([
                ("first", Pmt::I64(24_608_768)),
                ("count", Pmt::I64(5_391_232)),
                ("cause", Pmt::String("overflow".into())),
            ]),
        }],
        true,
    );
    let hello_eos_tags = ctl(
        Hello,
        0,
        0,
        &frame::Hello {
            eos_tags: true,
            replica: 0,
            ..hello()
        }
        .encode(),
        false,
    );
    let v = |preamble, frames: &[FrameType]| Expect::Valid {
        preamble,
        frames: frames.to_vec(),
    };
    vec![
        ("ok_preamble", pre.to_vec(), v(true, &[])),
        ("ok_hello", cat(&[&pre, &hello_frame]), v(true, &[Hello])),
        ("ok_welcome", cat(&[&pre, &welcome]), v(true, &[Welcome])),
        ("ok_refuse", cat(&[&pre, &refuse]), v(true, &[Refuse])),
        ("ok_data", data.clone(), v(false, &[Data])),
        ("ok_data_tags", data_tags.clone(), v(false, &[Data])),
        ("ok_data_nocrc", data_nocrc, v(false, &[Data])),
        ("ok_data_crc_zero", data_crc_zero, v(false, &[Data])),
        ("ok_gap", gap, v(false, &[Gap])),
        ("ok_ack", ctl(Ack, 4098, 0, &[], false), v(false, &[Ack])),
        ("ok_msg", msg, v(false, &[Msg])),
        (
            "ok_msg_ack",
            ctl(MsgAck, 1, 0, &[], false),
            v(false, &[MsgAck]),
        ),
        ("ok_eos", ctl(Eos, 4098, 0, &[], false), v(false, &[Eos])),
        ("ok_eos_tags", eos_tags, v(false, &[Eos])),
        (
            "ok_hello_eos_tags",
            cat(&[&pre, &hello_eos_tags]),
            v(true, &[Hello]),
        ),
        (
            "ok_heartbeat",
            ctl(Heartbeat, 0, 0, &[], false),
            v(false, &[Heartbeat]),
        ),
        (
            "ok_close",
            ctl(
                Close,
                0,
                Reason::ShuttingDown as u32,
                b"shutting down",
                false,
            ),
            v(false, &[Close]),
        ),
        (
            "ok_session",
            cat(&[
                &pre,
                &welcome,
                &data,
                &ctl(Heartbeat, 0, 0, &[], false),
                &data_tags,
                &ctl(Eos, 4098, 0, &[], false),
            ]),
            v(true, &[Welcome, Data, Heartbeat, Data, Eos]),
        ),
        (
            "bad_truncated",
            data_tags[..data_tags.len() - 5].to_vec(),
            Expect::Incomplete,
        ),
        (
            "bad_crc",
            bad_crc,
            Expect::Rejected(|e| matches!(e, FrameError::Crc { offset: 4096, .. })),
        ),
        (
            "bad_crc_zero",
            bad_crc_zero,
            Expect::Rejected(|e| {
                matches!(
                    e,
                    FrameError::Crc {
                        offset: 4096,
                        expected: 0,
                        ..
                    }
                )
            }),
        ),
        (
            "bad_v1_crc_field",
            bad_v1_crc_field,
            Expect::Rejected(|e| matches!(e, FrameError::Reserved)),
        ),
        (
            "bad_flags",
            bad_flags.to_vec(),
            Expect::Rejected(|e| matches!(e, FrameError::Flags(1))),
        ),
        (
            "bad_too_large",
            too_large.encode().to_vec(),
            Expect::Rejected(|e| matches!(e, FrameError::TooLarge(_))),
        ),
        (
            "bad_version",
            cat(&[&bad_version, &hello_frame]),
            Expect::Rejected(|e| matches!(e, FrameError::UnknownType(b'F'))),
        ),
        (
            "bad_garbage",
            b"GET / HTTP/1.1\r\nHost: flowmesh\r\n\r\n".to_vec(),
            Expect::Rejected(|e| matches!(e, FrameError::UnknownType(b'G'))),
        ),
    ]
}

fn expect(name: &str, c: &Checked, e: &Expect) {
    match e {
        Expect::Valid { preamble, frames } => {
            assert_eq!(c.preamble, *preamble, "{name}: preamble");
            assert_eq!(&c.frames, frames, "{name}: frames");
            assert_eq!(c.error, None, "{name}: error");
            assert_eq!(c.pending, 0, "{name}: bytes left over");
            assert_eq!(c.malformed_bodies, 0, "{name}: malformed bodies");
        }
        Expect::Incomplete => {
            assert_eq!(c.error, None, "{name}: error");
            assert!(c.frames.is_empty(), "{name}: {:?}", c.frames);
            assert!(c.pending > 0, "{name}: nothing pending");
        }
        Expect::Rejected(is) => {
            assert!(!c.preamble, "{name}: preamble accepted");
            match &c.error {
                Some(err) => assert!(is(err), "{name}: unexpected error {err:?}"),
                None => panic!("{name}: decoded without error: {c:?}"),
            }
        }
    }
}

#[test]
fn corpus_replays_without_panics_and_seeds_decode_as_expected() {
    let seeds = seeds();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", corpus_dir().display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus is empty");
    let mut seeds_seen = 0;
    for path in &files {
        let bytes = std::fs::read(path).expect("corpus file");
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let checked = std::panic::catch_unwind(|| check_frame_bytes(&bytes))
            .unwrap_or_else(|_| panic!("{} fails the fuzz checks", path.display()));
        if let Some((_, _, e)) = seeds.iter().find(|(n, _, _)| *n == name) {
            expect(name, &checked, e);
            seeds_seen += 1;
        }
    }
    assert_eq!(
        seeds_seen,
        seeds.len(),
        "seed files missing from the corpus"
    );
}

/// The seed files are exactly what the codec produces today, so a change of
/// the wire format shows up here (and the corpus stays meaningful).
#[test]
fn seed_files_match_the_codec() {
    let dir = corpus_dir();
    let write = std::env::var_os("FLOWMESH_WRITE_CORPUS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("corpus directory");
    }
    for (name, bytes, e) in seeds() {
        // The expectation holds for the generated bytes themselves.
        expect(name, &check_frame_bytes(&bytes), &e);
        let path = dir.join(format!("{name}.bin"));
        if write {
            std::fs::write(&path, &bytes).expect("write seed");
            continue;
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run FLOWMESH_WRITE_CORPUS=1 cargo test -p flowmesh-runtime --test fuzz_corpus",
                path.display()
            )
        });
        assert!(
            on_disk == bytes,
            "{} differs from what the codec produces; if the wire format changed on purpose, \
             run FLOWMESH_WRITE_CORPUS=1 cargo test -p flowmesh-runtime --test fuzz_corpus",
            path.display()
        );
    }
}

/// The checker itself: arbitrary splits and mutations of valid streams do
/// not trip it (a cheap stand-in for the fuzzer on stable).
#[test]
fn checker_accepts_mutations_of_the_seeds() {
    for (_, bytes, _) in seeds() {
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut m = bytes.clone();
                m[i] ^= bit;
                check_frame_bytes(&m);
            }
            check_frame_bytes(&bytes[..i]);
            check_frame_bytes(&bytes[i..]);
        }
    }
}
