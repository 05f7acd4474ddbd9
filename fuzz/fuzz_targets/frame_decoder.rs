//! Arbitrary bytes into every decoder of the network edge wire format:
//! `frame::Decoder` (fed in two pieces split at the first byte's value),
//! `Header::decode`, `Hello::decode`, `Answer::decode`, `decode_tags` and
//! `check_preamble`. Fails on a panic, or if a frame that decodes does not
//! re-encode (with `frame::control`) to bytes that decode to the same
//! header and body. The checks live in `flowmesh_runtime::net::fuzzing`,
//! shared with the corpus replay in `runtime/tests/fuzz_corpus.rs`.
//!
//! Run: `cargo +nightly fuzz run frame_decoder` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowmesh_runtime::net::fuzzing::check_frame_bytes(data);
});
