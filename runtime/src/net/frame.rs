//! The network edge wire format (protocol version 2; docs/protocol.md).
//!
//! A connection starts with an 8-byte preamble from each side — magic
//! `FMSH`, the protocol version (u16 LE), two zero bytes — and then carries
//! frames. Every frame is a 24-byte header followed by `len` body bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | frame type ([`FrameType`]) |
//! | 1 | 1 | flags (bit 0: body starts with tags; bit 1: CRC trailer) |
//! | 2 | 2 | reserved, zero |
//! | 4 | 4 | body length, ≤ [`MAX_BODY`] |
//! | 8 | 8 | `a`: first item offset (DATA, GAP, ACK, EOS), sequence number (MSG, MSG_ACK) |
//! | 16 | 4 | `b`: item count (DATA, GAP), cause (GAP), reason (CLOSE) |
//! | 20 | 4 | reserved, zero |
//!
//! With the CRC flag (DATA, MSG and EOS only) the body's last 4 bytes are the
//! CRC32C of the body before them: a trailer, so that a producer computes
//! it over bytes the kernel has just copied out of its buffer (in cache)
//! instead of reading the payload once more before sending it (version 1
//! had the CRC in the header's last 4 bytes).
//!
//! All integers are little-endian. Handshake bodies and message bodies are
//! canonical CBOR ([`flowmesh_model::pmt::cbor`]).

use std::collections::BTreeMap;

use flowmesh_model::pmt::cbor;
use flowmesh_model::{ItemType, Pmt};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 2;
/// Connection preamble magic.
pub const MAGIC: [u8; 4] = *b"FMSH";
/// Header size in bytes.
pub const HEADER_LEN: usize = 24;
/// Largest body accepted.
pub const MAX_BODY: u32 = 64 << 20;
/// Flag: a DATA body starts with a u32 length and a CBOR list of tags; an
/// EOS body is exactly that (the end-of-stream tags, at offset `a`).
pub const FLAG_TAGS: u8 = 1;
/// Flag: the body ends with a 4-byte CRC32C trailer (u32 LE) of the bytes
/// before it, which must be checked (DATA, MSG and EOS only). A zero CRC is a
/// real CRC and is checked like any other.
pub const FLAG_CRC: u8 = 2;
/// Size of the CRC trailer.
pub const CRC_LEN: usize = 4;

/// The 8-byte preamble.
pub fn preamble() -> [u8; 8] {
    let v = PROTOCOL_VERSION.to_le_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], 0, 0]
}

/// Checks a peer's preamble; returns its protocol version.
pub fn check_preamble(p: &[u8; 8]) -> Result<u16, FrameError> {
    if p[..4] != MAGIC {
        return Err(FrameError::BadMagic(p[..4].try_into().expect("4 bytes")));
    }
    let v = u16::from_le_bytes([p[4], p[5]]);
    if v != PROTOCOL_VERSION {
        return Err(FrameError::Version {
            ours: PROTOCOL_VERSION,
            theirs: v,
        });
    }
    Ok(v)
}

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Consumer → producer: who I am and where to resume (CBOR body).
    Hello = 1,
    /// Producer → consumer: accepted (CBOR body: crc, first offset available).
    Welcome = 2,
    /// Either way: refused, with a reason (CBOR body: code, message). Closes.
    Refuse = 3,
    /// Items `[a, a+b)`, optional tags, payload.
    Data = 4,
    /// Items `[a, a+count)` will never come; `b` is the cause.
    Gap = 5,
    /// A message with sequence number `a` (CBOR body).
    Msg = 6,
    /// Consumer → producer: items before `a` are delivered.
    Ack = 7,
    /// Consumer → producer: messages up to sequence `a` are delivered.
    MsgAck = 8,
    /// Keep-alive, either way.
    Heartbeat = 9,
    /// End of stream: no items at or after `a`, no messages after sequence `b`.
    Eos = 10,
    /// Orderly close with a reason code in `b` and text body.
    Close = 11,
    /// Replica → producer of an edge into a scalable segment: message `a`
    /// is done end to end (selective, not cumulative; docs/scaling.md).
    MsgDone = 12,
    /// Replica → producer: assign this connection nothing new (a replica
    /// leaving on SIGTERM; what it holds is finished or redelivered).
    Leave = 13,
}

impl FrameType {
    pub fn from_u8(v: u8) -> Option<FrameType> {
        use FrameType::*;
        Some(match v {
            1 => Hello,
            2 => Welcome,
            3 => Refuse,
            4 => Data,
            5 => Gap,
            6 => Msg,
            7 => Ack,
            8 => MsgAck,
            9 => Heartbeat,
            10 => Eos,
            11 => Close,
            12 => MsgDone,
            13 => Leave,
            _ => return None,
        })
    }
}

/// Why items were lost (the `cause` of a `gap` tag and of GAP frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GapCause {
    /// A live source could not wait and the edge was full.
    Overflow = 1,
    /// The peer went away and the data with it.
    PeerLost = 2,
    /// The consumer resumed from before the oldest retained item.
    RetentionExceeded = 3,
    /// A segment restarted and could not replay.
    Restart = 4,
}

impl GapCause {
    pub fn from_u32(v: u32) -> Option<GapCause> {
        Some(match v {
            1 => GapCause::Overflow,
            2 => GapCause::PeerLost,
            3 => GapCause::RetentionExceeded,
            4 => GapCause::Restart,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            GapCause::Overflow => "overflow",
            GapCause::PeerLost => "peer_lost",
            GapCause::RetentionExceeded => "retention_exceeded",
            GapCause::Restart => "restart",
        }
    }
}

/// Reasons for REFUSE and CLOSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Reason {
    Normal = 0,
    BadToken = 1,
    BadVersion = 2,
    UnknownEdge = 3,
    TypeMismatch = 4,
    WrongFlowgraph = 5,
    Busy = 6,
    Protocol = 7,
    ShuttingDown = 8,
    /// The producer's stream has ended and it no longer holds the items
    /// this consumer has not acknowledged (its linger time passed).
    Finished = 9,
}

impl Reason {
    pub fn from_u32(v: u32) -> Reason {
        match v {
            1 => Reason::BadToken,
            2 => Reason::BadVersion,
            3 => Reason::UnknownEdge,
            4 => Reason::TypeMismatch,
            5 => Reason::WrongFlowgraph,
            6 => Reason::Busy,
            7 => Reason::Protocol,
            8 => Reason::ShuttingDown,
            9 => Reason::Finished,
            _ => Reason::Normal,
        }
    }
}

/// Errors decoding frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a FlowMesh peer (magic {0:02x?}, expected \"FMSH\")")]
    BadMagic([u8; 4]),
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    Version { ours: u16, theirs: u16 },
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame body of {0} bytes exceeds the limit of {MAX_BODY}")]
    TooLarge(u32),
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("CRC32C mismatch in a {kind:?} frame at offset {offset}: computed {computed:#010x}, trailer says {expected:#010x}")]
    Crc {
        kind: FrameType,
        offset: u64,
        computed: u32,
        expected: u32,
    },
    #[error("malformed {0:?} frame: {1}")]
    Malformed(FrameType, String),
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameType,
    pub flags: u8,
    pub len: u32,
    pub a: u64,
    pub b: u32,
}

impl Header {
    pub fn new(kind: FrameType, a: u64, b: u32) -> Self {
        Header {
            kind,
            flags: 0,
            len: 0,
            a,
            b,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = self.kind as u8;
        h[1] = self.flags;
        h[4..8].copy_from_slice(&self.len.to_le_bytes());
        h[8..16].copy_from_slice(&self.a.to_le_bytes());
        h[16..20].copy_from_slice(&self.b.to_le_bytes());
        h
    }

    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        let kind = FrameType::from_u8(h[0]).ok_or(FrameError::UnknownType(h[0]))?;
        let flags = h[1];
        // EOS may carry the end-of-stream tags (a final `gap`), protected
        // like DATA.
        let crc_allowed = matches!(kind, FrameType::Data | FrameType::Msg | FrameType::Eos);
        if flags & !(FLAG_TAGS | FLAG_CRC) != 0
            || (flags & FLAG_TAGS != 0 && !matches!(kind, FrameType::Data | FrameType::Eos))
            || (flags & FLAG_CRC != 0 && !crc_allowed)
        {
            return Err(FrameError::Flags(flags));
        }
        if h[2] != 0 || h[3] != 0 || h[20..24] != [0; 4] {
            return Err(FrameError::Reserved);
        }
        let len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        if len > MAX_BODY {
            return Err(FrameError::TooLarge(len));
        }
        if flags & FLAG_CRC != 0 && (len as usize) < CRC_LEN {
            return Err(FrameError::Malformed(
                kind,
                format!("a {len}-byte body cannot hold its CRC trailer"),
            ));
        }
        Ok(Header {
            kind,
            flags,
            len,
            a: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
            b: u32::from_le_bytes(h[16..20].try_into().expect("4 bytes")),
        })
    }

    /// Whether the body ends with a CRC32C trailer to check.
    pub fn has_crc(&self) -> bool {
        self.flags & FLAG_CRC != 0
    }

    /// Length of the body without its CRC trailer.
    pub fn body_len(&self) -> usize {
        self.len as usize - if self.has_crc() { CRC_LEN } else { 0 }
    }
}

/// CRC32C (Castagnoli) of a body, hardware-accelerated where available.
pub fn crc(parts: &[&[u8]]) -> u32 {
    let mut d = Crc::new();
    for p in parts {
        d.update(p);
    }
    d.value()
}

/// An incremental CRC32C: a producer feeds it the bytes of a frame as they
/// go out, and appends [`Crc::trailer`].
#[derive(Clone)]
pub struct Crc(crc_fast::Digest);

impl Crc {
    pub fn new() -> Self {
        // crc-fast picks the widest kernel the CPU has at run time (VPCLMULQDQ
        // on AVX-512 machines: ~4x the SSE4.2 `crc32` instruction loop).
        Crc(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The CRC32C of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0.finalize() as u32
    }
    /// The 4-byte trailer of everything fed so far.
    pub fn trailer(&self) -> [u8; CRC_LEN] {
        self.value().to_le_bytes()
    }
}

impl Default for Crc {
    fn default() -> Self {
        Crc::new()
    }
}

/// Splits a CRC-flagged body into (content, trailer value); `None` if it is
/// too short to have a trailer.
pub fn split_trailer(body: &[u8]) -> Option<(&[u8], u32)> {
    let at = body.len().checked_sub(CRC_LEN)?;
    let (content, t) = body.split_at(at);
    Some((content, u32::from_le_bytes(t.try_into().expect("4 bytes"))))
}

/// A stream tag on the wire: absolute offset, key, value.
#[derive(Debug, Clone, PartialEq)]
pub struct WireTag {
    pub offset: u64,
    pub key: String,
    pub value: Pmt,
}

/// Encodes tags as the CBOR list `[[offset, key, value], ...]`.
pub fn encode_tags(tags: &[WireTag]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_tags_into(
        tags.iter().map(|t| (t.offset, t.key.as_str(), &t.value)),
        &mut out,
    );
    out
}

/// [`encode_tags`] straight from borrowed parts, appending to `out`: the
/// same bytes, without building a [`Pmt`] tree or copying keys and values.
pub fn encode_tags_into<'a>(
    tags: impl ExactSizeIterator<Item = (u64, &'a str, &'a Pmt)>,
    out: &mut Vec<u8>,
) {
    cbor::encode_array_head(tags.len(), out);
    for (offset, key, value) in tags {
        cbor::encode_array_head(3, out);
        cbor::encode_i64(offset as i64, out);
        cbor::encode_text(key, out);
        cbor::encode_into(value, out);
    }
}

/// Decodes [`encode_tags`]' output.
pub fn decode_tags(b: &[u8]) -> Result<Vec<WireTag>, FrameError> {
    let mut out = vec![];
    decode_tags_each(b, |offset, key, value| {
        out.push(WireTag {
            offset,
            key: key.to_string(),
            value,
        })
    })?;
    Ok(out)
}

/// Decodes a DATA frame's tag list straight from its CBOR, calling `each`
/// with every tag's offset, key (borrowed from `b`) and value in order; no
/// `Pmt` is built for the list or its `[offset, key, value]` entries. An
/// error may come after some calls: callers keep the tags aside until it
/// returns `Ok`.
pub fn decode_tags_each(b: &[u8], mut each: impl FnMut(u64, &str, Pmt)) -> Result<(), FrameError> {
    let bad = |m: String| FrameError::Malformed(FrameType::Data, m);
    let cb = |e: cbor::DecodeError| bad(format!("tags: {e}"));
    let not_a_tag = || bad("a tag is not [offset, key, value]".into());
    let mut r = cbor::Reader::new(b, &cbor::Limits::default()).map_err(cb)?;
    let n = r
        .array()
        .map_err(cb)?
        .ok_or_else(|| bad("tags are not a list".into()))?;
    for _ in 0..n {
        if r.array().map_err(cb)? != Some(3) {
            return Err(not_a_tag());
        }
        let offset = r.uint().map_err(cb)?.ok_or_else(not_a_tag)?;
        let key = r.text().map_err(cb)?.ok_or_else(not_a_tag)?;
        let value = r.value(2).map_err(cb)?;
        each(offset, key, value);
    }
    r.finish().map_err(cb)
}

/// The consumer's HELLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub flowgraph: String,
    /// The generation of the edge the consumer was built for (a hash of its
    /// contract, `partition::edge_generation`): the producer refuses another.
    pub generation: u64,
    pub edge: String,
    pub item_type: ItemType,
    pub vlen: u64,
    pub item_size: u64,
    pub token: String,
    /// First item offset the consumer wants.
    pub resume_offset: u64,
    /// Last message sequence number the consumer has delivered (0: none).
    pub resume_msg_seq: u64,
    /// Whether the consumer wants CRC32C on data frames.
    pub crc: bool,
    /// The producer instance the consumer last talked to on this edge (0:
    /// none — a new consumer, or one restarted from durable positions).
    pub instance: u64,
    /// Whether the consumer reads end-of-stream tags (EOS with `TAGS`).
    /// Sent only when true, so a HELLO without it is byte-identical to one
    /// from a build that predates it; absent reads as false.
    pub eos_tags: bool,
    /// The replica id of a scalable segment's replica (random, non-zero)
    /// dialing its producer or its gathering consumer; 0 otherwise. Sent
    /// only when non-zero; absent reads as 0.
    pub replica: u64,
}

fn map_get<'a>(
    m: &'a BTreeMap<String, Pmt>,
    k: &str,
    kind: FrameType,
) -> Result<&'a Pmt, FrameError> {
    m.get(k)
        .ok_or_else(|| FrameError::Malformed(kind, format!("missing field `{k}`")))
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let eos_tags = self.eos_tags.then_some(("eos_tags", Pmt::Bool(true)));
        let replica = (self.replica != 0).then_some(("replica", Pmt::I64(self.replica as i64)));
        cbor::encode(&Pmt::map(eos_tags.into_iter().chain(replica).chain([
            ("flowgraph", Pmt::String(self.flowgraph.clone())),
            ("generation", Pmt::I64(self.generation as i64)),
            ("edge", Pmt::String(self.edge.clone())),
            ("item_type", Pmt::String(self.item_type.name().into())),
            ("vlen", Pmt::I64(self.vlen as i64)),
            ("item_size", Pmt::I64(self.item_size as i64)),
            ("token", Pmt::String(self.token.clone())),
            ("resume_offset", Pmt::I64(self.resume_offset as i64)),
            ("resume_msg_seq", Pmt::I64(self.resume_msg_seq as i64)),
            ("crc", Pmt::Bool(self.crc)),
            ("instance", Pmt::I64(self.instance as i64)),
        ])))
    }

    pub fn decode(b: &[u8]) -> Result<Hello, FrameError> {
        let k = FrameType::Hello;
        let bad = |m: String| FrameError::Malformed(k, m);
        let Pmt::Map(m) = cbor::decode(b).map_err(|e| bad(e.to_string()))? else {
            return Err(bad("body is not a map".into()));
        };
        let s = |f: &str| -> Result<String, FrameError> {
            map_get(&m, f, k)?
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("`{f}` is not a string")))
        };
        let u = |f: &str| -> Result<u64, FrameError> {
            map_get(&m, f, k)?
                .as_u64()
                .ok_or_else(|| bad(format!("`{f}` is not an unsigned integer")))
        };
        Ok(Hello {
            flowgraph: s("flowgraph")?,
            generation: u("generation")?,
            edge: s("edge")?,
            item_type: s("item_type")?
                .parse()
                .map_err(|e: flowmesh_model::types::UnknownItemType| bad(e.to_string()))?,
            vlen: u("vlen")?,
            item_size: u("item_size")?,
            token: s("token")?,
            resume_offset: u("resume_offset")?,
            resume_msg_seq: u("resume_msg_seq")?,
            crc: map_get(&m, "crc", k)?
                .as_bool()
                .ok_or_else(|| bad("`crc` is not a boolean".into()))?,
            instance: u("instance")?,
            eos_tags: match m.get("eos_tags") {
                None => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| bad("`eos_tags` is not a boolean".into()))?,
            },
            replica: match m.get("replica") {
                None => 0,
                Some(_) => u("replica")?,
            },
        })
    }
}

/// The producer's answer to HELLO.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Accepted: CRC on or off (what the producer will actually send), the
    /// oldest item offset (message sequence) it still holds, and the
    /// producer's instance id (random, non-zero, fixed for the life of the
    /// producing block).
    Welcome {
        crc: bool,
        retained_from: u64,
        instance: u64,
    },
    /// Refused, with a reason and a sentence.
    Refuse { reason: Reason, message: String },
}

impl Answer {
    /// The frame (header and body) for this answer.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, b, body) = match self {
            Answer::Welcome {
                crc,
                retained_from,
                instance,
            } => (
                FrameType::Welcome,
                0,
                cbor::encode(&Pmt::map([
                    ("crc", Pmt::Bool(*crc)),
                    ("retained_from", Pmt::I64(*retained_from as i64)),
                    ("instance", Pmt::I64(*instance as i64)),
                ])),
            ),
            Answer::Refuse { reason, message } => (
                FrameType::Refuse,
                *reason as u32,
                message.as_bytes().to_vec(),
            ),
        };
        let mut h = Header::new(kind, 0, b);
        h.len = body.len() as u32;
        let mut out = h.encode().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Decodes an answer from its header and body.
    pub fn decode(h: &Header, body: &[u8]) -> Result<Answer, FrameError> {
        match h.kind {
            FrameType::Welcome => {
                let bad = |m: String| FrameError::Malformed(FrameType::Welcome, m);
                let Pmt::Map(m) = cbor::decode(body).map_err(|e| bad(e.to_string()))? else {
                    return Err(bad("body is not a map".into()));
                };
                Ok(Answer::Welcome {
                    crc: map_get(&m, "crc", h.kind)?
                        .as_bool()
                        .ok_or_else(|| bad("`crc` is not a boolean".into()))?,
                    retained_from: map_get(&m, "retained_from", h.kind)?
                        .as_u64()
                        .ok_or_else(|| bad("`retained_from` is not an integer".into()))?,
                    instance: map_get(&m, "instance", h.kind)?
                        .as_u64()
                        .ok_or_else(|| bad("`instance` is not an integer".into()))?,
                })
            }
            FrameType::Refuse => Ok(Answer::Refuse {
                reason: Reason::from_u32(h.b),
                message: String::from_utf8_lossy(body).into_owned(),
            }),
            other => Err(FrameError::Malformed(
                other,
                "expected WELCOME or REFUSE".into(),
            )),
        }
    }
}

/// The stream EOS frame: no items at or after `end`. With `tags` (the
/// end-of-stream tags, each at offset `end`, e.g. a final `gap`) it has the
/// `TAGS` flag and its body is the tags section (u32 length, CBOR list), with
/// a CRC32C when `with_crc`; without, it is empty.
pub fn eos(end: u64, tags: &[WireTag], with_crc: bool) -> Vec<u8> {
    if tags.is_empty() {
        return control(FrameType::Eos, end, 0, &[], false);
    }
    let t = encode_tags(tags);
    let mut body = (t.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(&t);
    let mut f = control(FrameType::Eos, end, 0, &body, with_crc);
    f[1] |= FLAG_TAGS;
    f
}

/// The end-of-stream tags of an EOS frame (none without the `TAGS` flag):
/// the body must be exactly a tags section, and every tag must sit at the
/// end offset `a`.
pub fn eos_tags(h: &Header, body: &[u8]) -> Result<Vec<WireTag>, FrameError> {
    let bad = |m: String| FrameError::Malformed(FrameType::Eos, m);
    if h.flags & FLAG_TAGS == 0 {
        return if body.is_empty() {
            Ok(vec![])
        } else {
            Err(bad(format!(
                "{} body bytes without the TAGS flag",
                body.len()
            )))
        };
    }
    let n = body
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad("tags section shorter than its length field".into()))?;
    if body.len() != 4 + n {
        return Err(bad(format!(
            "a {n}-byte tags section in a {}-byte body",
            body.len()
        )));
    }
    let tags = decode_tags(&body[4..])?;
    if let Some(t) = tags.iter().find(|t| t.offset != h.a) {
        return Err(bad(format!(
            "tag `{}` at offset {}, not at the end of stream {}",
            t.key, t.offset, h.a
        )));
    }
    Ok(tags)
}

/// Builds a complete frame whose body is `body` (for DATA: the tags
/// section, if any, then the payload; the caller sets no flags). `with_crc`
/// sets [`FLAG_CRC`] and appends the CRC32C trailer; only DATA, MSG and EOS
/// frames may carry one (others would not decode).
pub fn control(kind: FrameType, a: u64, b: u32, body: &[u8], with_crc: bool) -> Vec<u8> {
    let mut h = Header::new(kind, a, b);
    h.len = (body.len() + if with_crc { CRC_LEN } else { 0 }) as u32;
    if with_crc {
        h.flags |= FLAG_CRC;
    }
    let mut out = h.encode().to_vec();
    out.extend_from_slice(body);
    if with_crc {
        out.extend_from_slice(&crc(&[body]).to_le_bytes());
    }
    out
}

/// Incremental frame reader: feed bytes as they arrive, take whole frames.
/// Used for control traffic; DATA payloads are read in place by the edge.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

/// A whole frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: Header,
    /// The body without its CRC trailer (checked and removed).
    pub body: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// Bytes held but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
    /// The next whole frame, if one has arrived. The CRC trailer is checked
    /// and removed whenever the header has [`FLAG_CRC`] (only DATA, MSG and EOS
    /// frames can).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = Header::decode(self.buf[..HEADER_LEN].try_into().expect("24 bytes"))?;
        let total = HEADER_LEN + header.len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let body = self.buf[HEADER_LEN..HEADER_LEN + header.body_len()].to_vec();
        if header.has_crc() {
            let (_, expected) =
                split_trailer(&self.buf[HEADER_LEN..total]).expect("length checked by decode");
            let computed = crc(&[&body]);
            if computed != expected {
                self.buf.drain(..total);
                return Err(FrameError::Crc {
                    kind: header.kind,
                    offset: header.a,
                    computed,
                    expected,
                });
            }
        }
        self.buf.drain(..total);
        Ok(Some(Frame { header, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            flowgraph: "survey".into(),
            generation: 3,
            edge: "mix.out>dsp".into(),
            item_type: ItemType::Cf32,
            vlen: 1,
            item_size: 8,
            token: "s3cret".into(),
            resume_offset: 12345,
            resume_msg_seq: 7,
            crc: true,
            instance: 0x1234_5678_9abc_def0,
            eos_tags: true,
            replica: 0,
        }
    }

    /// A DATA frame as the sink builds it, CRC flag set.
    fn data_with_crc(a: u64, n: u32, body: &[u8]) -> Vec<u8> {
        control(FrameType::Data, a, n, body, true)
    }

    #[test]
    fn a_zero_crc_with_the_flag_is_checked() {
        // Two u64 items whose CRC32C is exactly 0.
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        let tail = crate::net::fuzzing::forge_zero_crc(&body);
        body.extend_from_slice(&tail);
        assert_eq!(crc(&[&body]), 0, "forged body");
        let good = data_with_crc(100, 2, &body);
        assert_eq!(&good[good.len() - CRC_LEN..], &[0, 0, 0, 0], "CRC is zero");
        let mut d = Decoder::new();
        d.push(&good);
        let f = d.next_frame().unwrap().unwrap();
        assert!(f.header.has_crc());
        assert_eq!(f.body, body);
        // Corrupt the payload or the trailer: the zero CRC is still checked.
        for (i, trailer) in [
            (HEADER_LEN, 0),
            (good.len() - CRC_LEN - 1, 0),
            (good.len() - 1, 0x4000_0000),
        ] {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            let mut d = Decoder::new();
            d.push(&bad);
            let e = d.next_frame().unwrap_err();
            assert!(
                matches!(
                    e,
                    FrameError::Crc {
                        offset: 100,
                        expected,
                        ..
                    } if expected == trailer
                ),
                "{e}"
            );
        }
        // The header's last 4 bytes (version 1's CRC field) are reserved.
        let mut v1 = data_with_crc(100, 1, b"12345678");
        v1[20] = 1;
        assert_eq!(
            Header::decode(v1[..HEADER_LEN].try_into().unwrap()),
            Err(FrameError::Reserved)
        );
        // A CRC frame too short for its trailer does not decode.
        let mut h = Header::new(FrameType::Data, 1, 0);
        h.flags = FLAG_CRC;
        h.len = 3;
        assert!(matches!(
            Header::decode(&h.encode()),
            Err(FrameError::Malformed(FrameType::Data, _))
        ));
    }

    #[test]
    fn the_crc_flag_is_only_allowed_on_data_msg_and_eos() {
        for k in 1u8..=11 {
            let kind = FrameType::from_u8(k).unwrap();
            let mut h = Header::new(kind, 1, 2);
            h.flags = FLAG_CRC;
            h.len = CRC_LEN as u32;
            let r = Header::decode(&h.encode());
            if matches!(kind, FrameType::Data | FrameType::Msg | FrameType::Eos) {
                assert_eq!(r.unwrap(), h);
            } else {
                assert_eq!(r, Err(FrameError::Flags(FLAG_CRC)), "{kind:?}");
            }
        }
        let mut h = Header::new(FrameType::Data, 1, 2);
        h.flags = FLAG_CRC | FLAG_TAGS;
        h.len = 8;
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        h.flags = 4;
        assert_eq!(Header::decode(&h.encode()), Err(FrameError::Flags(4)));
    }

    #[test]
    fn eos_carries_end_of_stream_tags() {
        let gap = WireTag {
            offset: 30_000_000,
            key: "gap".into(),
            value: Pmt::map([
                ("first", Pmt::I64(24_608_768)),
                ("count", Pmt::I64(5_391_232)),
                ("cause", Pmt::String("overflow".into())),
            ]),
        };
        let f = eos(30_000_000, std::slice::from_ref(&gap), true);
        assert_eq!(f[1], FLAG_TAGS | FLAG_CRC);
        let mut d = Decoder::new();
        d.push(&f);
        let got = d.next_frame().unwrap().unwrap();
        assert_eq!(eos_tags(&got.header, &got.body).unwrap(), vec![gap.clone()]);
        // Plain EOS: no flag, no body, no tags.
        let plain = eos(7, &[], true);
        assert_eq!(plain, control(FrameType::Eos, 7, 0, &[], false));
        let h = Header::decode(plain[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(eos_tags(&h, &[]).unwrap(), vec![]);
        // A tag anywhere but the end is malformed.
        let early = eos(29_999_999, &[gap], false);
        let h = Header::decode(early[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert!(matches!(
            eos_tags(&h, &early[HEADER_LEN..]),
            Err(FrameError::Malformed(FrameType::Eos, m)) if m.contains("not at the end")
        ));
        // TAGS is still refused on other control frames.
        let mut h = Header::new(FrameType::Gap, 1, 2);
        h.flags = FLAG_TAGS;
        assert_eq!(
            Header::decode(&h.encode()),
            Err(FrameError::Flags(FLAG_TAGS))
        );
    }

    #[test]
    fn hello_without_eos_tags_is_encoded_as_before() {
        let old = Hello {
            eos_tags: false,
            replica: 0,
            ..hello()
        };
        let bytes = old.encode();
        assert!(!bytes.windows(8).any(|w| w == b"eos_tags"));
        assert_eq!(Hello::decode(&bytes).unwrap(), old);
        assert_eq!(Hello::decode(&hello().encode()).unwrap(), hello());
    }

    #[test]
    fn crc_is_crc32c_over_the_concatenated_parts() {
        // The CRC-32/ISCSI check value (RFC 3720, Castagnoli).
        assert_eq!(crc(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc(&[b"1234", b"", b"56789"]), 0xE306_9283);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        assert_eq!(crc(&[&big[..4097], &big[4097..]]), crc(&[&big]));
    }

    #[test]
    fn preamble_checks_magic_and_version() {
        assert_eq!(check_preamble(&preamble()), Ok(PROTOCOL_VERSION));
        let mut p = preamble();
        p[4] = 9;
        assert_eq!(
            check_preamble(&p).unwrap_err().to_string(),
            "protocol version mismatch: we speak 2, the peer speaks 9"
        );
        assert!(matches!(
            check_preamble(b"GET / HT"),
            Err(FrameError::BadMagic(_))
        ));
    }

    #[test]
    fn hello_and_answers_round_trip() {
        let h = hello();
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        for a in [
            Answer::Welcome {
                crc: false,
                retained_from: 99,
                instance: (1 << 63) - 1,
            },
            Answer::Refuse {
                reason: Reason::BadToken,
                message: "wrong token".into(),
            },
        ] {
            let bytes = a.encode();
            let mut d = Decoder::new();
            d.push(&bytes);
            let f = d.next_frame().unwrap().unwrap();
            assert_eq!(Answer::decode(&f.header, &f.body).unwrap(), a);
        }
    }

    #[test]
    fn crc_mismatch_is_reported_with_offset() {
        let body = b"payload bytes";
        let mut f = control(FrameType::Msg, 42, 0, body, true);
        let last = f.len() - 1;
        f[last] ^= 1;
        let mut d = Decoder::new();
        d.push(&f);
        let e = d.next_frame().unwrap_err();
        assert!(matches!(e, FrameError::Crc { offset: 42, .. }), "{e}");
        // The flag is set and the CRC verified on the intact frame.
        let f = control(FrameType::Msg, 42, 0, body, true);
        assert_eq!(f[1], FLAG_CRC);
        let mut d = Decoder::new();
        d.push(&f);
        assert!(d.next_frame().unwrap().unwrap().header.has_crc());
    }

    #[test]
    fn tags_round_trip() {
        let tags = vec![
            WireTag {
                offset: 5,
                key: "rx_freq".into(),
                value: Pmt::F64(1e9),
            },
            WireTag {
                offset: 7,
                key: "gap".into(),
                value: Pmt::map([("count", Pmt::I64(3))]),
            },
        ];
        assert_eq!(decode_tags(&encode_tags(&tags)).unwrap(), tags);
    }

    #[test]
    fn headers_reject_garbage() {
        let mut h = Header::new(FrameType::Data, 1, 2).encode();
        h[0] = 99;
        assert_eq!(Header::decode(&h), Err(FrameError::UnknownType(99)));
        let mut h = Header::new(FrameType::Ack, 1, 2).encode();
        h[2] = 1;
        assert_eq!(Header::decode(&h), Err(FrameError::Reserved));
        let mut h = Header::new(FrameType::Ack, 1, 2);
        h.len = MAX_BODY + 1;
        assert_eq!(
            Header::decode(&h.encode()),
            Err(FrameError::TooLarge(MAX_BODY + 1))
        );
        let mut h = Header::new(FrameType::Ack, 1, 2);
        h.flags = FLAG_TAGS;
        assert_eq!(Header::decode(&h.encode()), Err(FrameError::Flags(1)));
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), split in 0usize..400) {
            let mut d = Decoder::new();
            let split = split.min(bytes.len());
            d.push(&bytes[..split]);
            let _ = d.next_frame();
            d.push(&bytes[split..]);
            while let Ok(Some(_)) = d.next_frame() {}
            let _ = Hello::decode(&bytes);
            let _ = decode_tags(&bytes);
        }

        #[test]
        fn the_streaming_tag_decoder_agrees_with_decoding_the_whole_tree(
            offsets in proptest::collection::vec(0u64..1 << 40, 0..6),
            at in any::<prop::sample::Index>(), byte in any::<u8>(), mutate in any::<bool>()) {
            // Reference: the general CBOR decoder, then the expected shape.
            fn reference(b: &[u8]) -> Option<Vec<WireTag>> {
                let Ok(Pmt::List(items)) = cbor::decode(b) else { return None };
                items.into_iter().map(|t| match t {
                    Pmt::List(f) => match <[Pmt; 3]>::try_from(f) {
                        Ok([Pmt::I64(o), Pmt::String(key), value]) if o >= 0 =>
                            Some(WireTag { offset: o as u64, key, value }),
                        _ => None,
                    },
                    _ => None,
                }).collect()
            }
            let tags: Vec<WireTag> = offsets.iter().enumerate().map(|(i, &o)| WireTag {
                offset: o,
                key: ["tick", "rx_time", "gap"][i % 3].into(),
                value: if i % 2 == 0 { Pmt::I64(o as i64) } else { Pmt::map([("k", Pmt::F64(0.5))]) },
            }).collect();
            let mut b = encode_tags(&tags);
            if mutate && !b.is_empty() {
                let i = at.index(b.len());
                b[i] = byte;
            }
            // Compared as text: a mutated byte can make a float NaN, which
            // is never equal to itself (seen in CI: `F64(NaN)` both sides).
            prop_assert_eq!(
                format!("{:?}", decode_tags(&b).ok()),
                format!("{:?}", reference(&b))
            );
        }

        #[test]
        fn frames_round_trip_in_any_split(kind in 1u8..=11, a in any::<u64>(), b in any::<u32>(),
                                          body in proptest::collection::vec(any::<u8>(), 0..200),
                                          split in 0usize..300, with_crc in any::<bool>()) {
            let kind = FrameType::from_u8(kind).unwrap();
            let with_crc = with_crc && matches!(kind, FrameType::Data | FrameType::Msg);
            let bytes = control(kind, a, b, &body, with_crc);
            let mut d = Decoder::new();
            let split = split.min(bytes.len());
            d.push(&bytes[..split]);
            if split < bytes.len() {
                prop_assert_eq!(d.next_frame().unwrap(), None);
            }
            d.push(&bytes[split..]);
            let f = d.next_frame().unwrap().unwrap();
            prop_assert_eq!(f.header.kind, kind);
            prop_assert_eq!(f.header.a, a);
            prop_assert_eq!(f.header.b, b);
            prop_assert_eq!(f.header.has_crc(), with_crc);
            prop_assert_eq!(f.body, body);
            prop_assert_eq!(d.pending(), 0);
        }

        #[test]
        fn any_corruption_of_a_crc_frame_is_caught(a in any::<u64>(), msg in any::<bool>(),
                                                   body in proptest::collection::vec(any::<u8>(), 1..200),
                                                   at in any::<prop::sample::Index>(), bit in 0u8..8) {
            // Whatever the CRC value (zero included), a flipped body bit is
            // detected.
            let kind = if msg { FrameType::Msg } else { FrameType::Data };
            let good = control(kind, a, 0, &body, true);
            let mut bad = good.clone();
            bad[HEADER_LEN + at.index(body.len())] ^= 1 << bit;
            let mut d = Decoder::new();
            d.push(&bad);
            let is_crc_error = matches!(d.next_frame(), Err(FrameError::Crc { .. }));
            prop_assert!(is_crc_error);
            let mut unflagged = good.clone();
            unflagged[1] &= !FLAG_CRC;
            let mut d = Decoder::new();
            d.push(&unflagged);
            // A flipped flag bit reads as a frame without CRC whose body
            // ends with the trailer: the receivers reject a frame without
            // CRC on a connection that negotiated it (`source.rs`, `msg.rs`).
            let f = d.next_frame().unwrap().unwrap();
            prop_assert!(!f.header.has_crc());
            prop_assert_eq!(f.body.len(), body.len() + CRC_LEN);
        }
    }
}
