//! Deterministic CBOR encoding of [`Pmt`](super::Pmt) values (placeholder; see docs/messages.md).
