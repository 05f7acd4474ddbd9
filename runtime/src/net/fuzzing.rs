//! The property the frame fuzzer checks, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/frame_decoder.rs`) and the corpus replay test
//! (`runtime/tests/fuzz_corpus.rs`), so both check exactly the same thing.
//!
//! [`check_frame_bytes`] feeds arbitrary bytes to every decoder of the wire
//! format ([`frame`]) and panics if one of them panics or if something that
//! decodes does not re-encode to an equivalent value. It never panics on
//! input that is merely invalid: rejecting garbage is the decoders' job.

use flowmesh_model::pmt::cbor;

use super::frame::{
    self, Answer, Decoder, Frame, FrameError, FrameType, Header, Hello, FLAG_TAGS, HEADER_LEN,
    PROTOCOL_VERSION,
};

/// What [`check_frame_bytes`] found in its input, for tests that expect
/// particular inputs to decode (or not).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checked {
    /// The input starts with a valid preamble; the fields below then
    /// describe the bytes after it, as on a connection.
    pub preamble: bool,
    /// The whole frames decoded, in order.
    pub frames: Vec<FrameType>,
    /// The error that stopped decoding, if any.
    pub error: Option<FrameError>,
    /// Bytes left in the decoder (an incomplete frame) when it stopped
    /// without an error.
    pub pending: usize,
    /// Frames whose body does not decode as its type's body (a HELLO that is
    /// not a HELLO map, a GAP without its 8-byte count, bad tags, ...).
    pub malformed_bodies: usize,
}

/// Runs every decoder on `data` and checks the round-trip properties;
/// panics on a violation.
///
/// - [`Decoder`] gets `data` in two pieces, split at the value of the first
///   byte; it is run on all of `data` and, when `data` starts with a valid
///   preamble, on the bytes after the preamble.
/// - Every decoded frame re-encodes with [`frame::control`] (plus its flags;
///   with a CRC exactly when it has the CRC flag, which the decoder checked,
///   and a zero CRC field otherwise) to exactly the bytes it came from,
///   which decode again to the same header and body.
/// - [`Header::decode`] on the first 24 bytes: what decodes re-encodes to
///   the same 24 bytes (the header encoding is canonical).
/// - [`Hello::decode`], [`frame::decode_tags`] and message bodies on all of
///   `data`, and [`Answer::decode`] with a header built from the input: what
///   decodes survives encode → decode unchanged.
/// - [`frame::check_preamble`] on the first 8 bytes.
pub fn check_frame_bytes(data: &[u8]) -> Checked {
    let whole = decode_stream(data);

    let mut preamble = false;
    if let Some(p) = data.get(..8) {
        let p: &[u8; 8] = p.try_into().expect("8 bytes");
        if let Ok(v) = frame::check_preamble(p) {
            assert_eq!(v, PROTOCOL_VERSION);
            assert_eq!(p[..6], frame::preamble()[..6], "accepted preamble");
            preamble = true;
        }
    }

    if let Some(h) = data.get(..HEADER_LEN) {
        let h: &[u8; HEADER_LEN] = h.try_into().expect("24 bytes");
        if let Ok(header) = Header::decode(h) {
            assert_eq!(&header.encode(), h, "header encoding is canonical");
            let _ = check_answer(&header, &data[HEADER_LEN..]);
        }
    }

    // An answer under a header made up from the input: type from the first
    // byte, reason from the next four, the rest as body.
    if let Some((&k, rest)) = data.split_first() {
        let kind = FrameType::from_u8(k % 13 + 1).expect("1..=13 is a frame type");
        let b = rest
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        let body = rest.get(4..).unwrap_or(&[]);
        let mut h = Header::new(kind, 0, b);
        h.len = body.len() as u32;
        let r = check_answer(&h, body);
        if !matches!(kind, FrameType::Welcome | FrameType::Refuse) {
            assert!(r.is_err(), "{kind:?} decoded as an answer");
        }
    }

    let _ = check_hello(data);
    let _ = check_tags(data);
    let _ = check_message(data);

    if preamble {
        Checked {
            preamble,
            ..decode_stream(&data[8..])
        }
    } else {
        whole
    }
}

/// Decodes `data` as a frame stream, split in two pieces at the first
/// byte's value, checking each frame.
fn decode_stream(data: &[u8]) -> Checked {
    let split = data.first().map_or(0, |&b| (b as usize).min(data.len()));
    let mut d = Decoder::new();
    let mut out = Checked::default();
    let mut at = 0usize;
    let mut take = |d: &mut Decoder, out: &mut Checked| loop {
        match d.next_frame() {
            Ok(Some(f)) => {
                let total = HEADER_LEN + f.header.len as usize;
                let original = data
                    .get(at..at + total)
                    .expect("a frame comes from the bytes pushed");
                check_frame(&f, original);
                if !body_ok(&f) {
                    out.malformed_bodies += 1;
                }
                out.frames.push(f.header.kind);
                at += total;
            }
            Ok(None) => return true,
            Err(e) => {
                out.error = Some(e);
                return false;
            }
        }
    };
    d.push(&data[..split]);
    if take(&mut d, &mut out) {
        d.push(&data[split..]);
        if take(&mut d, &mut out) {
            out.pending = d.pending();
            assert_eq!(at + out.pending, data.len(), "decoder lost bytes");
            if out.pending >= HEADER_LEN {
                // The decoder accepted this header and waits for its body.
                let h = Header::decode(data[at..at + HEADER_LEN].try_into().expect("24 bytes"))
                    .expect("the decoder accepted this header");
                assert!(
                    HEADER_LEN + h.len as usize > out.pending,
                    "a whole frame was left in the decoder"
                );
            }
        }
    }
    out
}

/// A decoded frame re-encodes to the bytes it came from.
fn check_frame(f: &Frame, original: &[u8]) {
    let h = f.header;
    assert_eq!(h.body_len(), f.body.len());
    // The decoder checked and removed the CRC trailer of every frame with
    // the CRC flag (only DATA, MSG and EOS can have it).
    let checked = h.has_crc();
    assert!(
        !checked || matches!(h.kind, FrameType::Data | FrameType::Msg | FrameType::Eos),
        "a {:?} frame with the CRC flag decoded",
        h.kind
    );
    let mut bytes = frame::control(h.kind, h.a, h.b, &f.body, checked);
    bytes[1] = h.flags;
    assert_eq!(bytes, original, "{:?} frame re-encodes differently", h.kind);
    let mut d = Decoder::new();
    d.push(&bytes);
    let again = d
        .next_frame()
        .expect("a re-encoded frame decodes")
        .expect("a re-encoded frame is whole");
    assert_eq!(&again, f);
    assert_eq!(d.pending(), 0);
}

/// Whether a frame's body is what its type carries, checking round trips of
/// the bodies that decode.
fn body_ok(f: &Frame) -> bool {
    let body = &f.body[..];
    match f.header.kind {
        FrameType::Hello => check_hello(body).is_some(),
        FrameType::Welcome | FrameType::Refuse => check_answer(&f.header, body).is_ok(),
        FrameType::Data => {
            if f.header.flags & FLAG_TAGS == 0 {
                return true;
            }
            let Some(n) = body.get(..4) else {
                return false;
            };
            let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
            match body.get(4..).and_then(|t| t.get(..n)) {
                Some(tags) => check_tags(tags).is_some(),
                None => false,
            }
        }
        FrameType::Gap => body.len() == 8,
        FrameType::Msg => check_message(body).is_some(),
        FrameType::Eos => frame::eos_tags(&f.header, body).is_ok(),
        FrameType::Ack
        | FrameType::MsgAck
        | FrameType::MsgDone
        | FrameType::Leave
        | FrameType::Heartbeat => body.is_empty(),
        FrameType::Close => true,
    }
}

fn check_hello(b: &[u8]) -> Option<Hello> {
    let h = Hello::decode(b).ok()?;
    let again = Hello::decode(&h.encode()).expect("an encoded HELLO decodes");
    assert_eq!(again, h, "HELLO round trip");
    Some(h)
}

fn check_answer(h: &Header, body: &[u8]) -> Result<Answer, FrameError> {
    let a = Answer::decode(h, body)?;
    let bytes = a.encode();
    let mut d = Decoder::new();
    d.push(&bytes);
    let f = d
        .next_frame()
        .expect("an encoded answer decodes")
        .expect("an encoded answer is whole");
    assert_eq!(d.pending(), 0);
    let again = Answer::decode(&f.header, &f.body).expect("an encoded answer decodes");
    assert_eq!(again, a, "answer round trip");
    Ok(a)
}

/// Tags are compared by their encoding: values may hold NaN.
fn check_tags(b: &[u8]) -> Option<Vec<frame::WireTag>> {
    let tags = frame::decode_tags(b).ok()?;
    let enc = frame::encode_tags(&tags);
    let again = frame::decode_tags(&enc).expect("encoded tags decode");
    assert_eq!(frame::encode_tags(&again), enc, "tags round trip");
    Some(tags)
}

/// Message bodies are canonical CBOR: what decodes re-encodes to itself.
fn check_message(b: &[u8]) -> Option<()> {
    let v = cbor::decode(b).ok()?;
    assert_eq!(cbor::encode(&v), b, "CBOR that decodes is canonical");
    Some(())
}

/// Four bytes that, appended to `prefix`, make the CRC32C of the whole 0:
/// the CRC is run backwards from the register value that gives 0. For tests
/// that a CRC of 0 is still checked.
pub fn forge_zero_crc(prefix: &[u8]) -> [u8; 4] {
    const POLY: u32 = 0x82F6_3B78; // reflected Castagnoli polynomial
                                   // The register after `prefix` (before the final XOR), and the register
                                   // that gives a CRC of 0 after the final XOR.
    let start = !frame::crc(&[prefix]);
    let mut r = !0u32;
    for _ in 0..32 {
        r = if r & 0x8000_0000 != 0 {
            ((r ^ POLY) << 1) | 1
        } else {
            r << 1
        };
    }
    (r ^ start).to_le_bytes()
}

/// Two little-endian u64 items whose CRC32C is 0: the first is `first`, the
/// second's low half `low`, its high half forged ([`forge_zero_crc`]).
pub fn zero_crc_items(first: u64, low: u32) -> Vec<u8> {
    let mut p = first.to_le_bytes().to_vec();
    p.extend_from_slice(&low.to_le_bytes());
    let tail = forge_zero_crc(&p);
    p.extend_from_slice(&tail);
    debug_assert_eq!(super::frame::crc(&[&p]), 0);
    p
}
