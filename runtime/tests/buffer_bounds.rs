//! The buffer's bounds are checked in every build, not only with debug
//! assertions: consuming past what the writer published and producing past
//! what the readers freed panic with the buffer's name, and a finished
//! reader reads nothing. (These would have caught issue 10 item 5, where
//! `consume(1)` on an empty buffer made `slice(1)` return unpublished
//! bytes in release builds.) The checks are plain `assert!`/`panic!`, so
//! the default (debug) run tests what release builds do; to see it there:
//! `cargo test -p flowmesh-runtime --test buffer_bounds --release`.

use std::sync::Arc;

use flowmesh_runtime::buffer::{channel, Reader, Writer};
use flowmesh_runtime::signal::Signal;

fn sig() -> Arc<Signal> {
    Arc::new(Signal::new())
}

/// A buffer of 1024 `u32` items with `readers` readers.
fn buf(readers: usize) -> (Writer, Vec<Reader>) {
    channel(
        "src.out",
        4096,
        4,
        sig(),
        (0..readers).map(|_| sig()).collect(),
    )
    .unwrap()
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let e = std::panic::catch_unwind(f).expect_err("should have panicked");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn consume_on_an_empty_buffer_panics_and_reads_nothing() {
    let (_w, mut rs) = buf(1);
    let mut r = rs.remove(0);
    assert_eq!(r.available(), 0);
    let msg = panic_message(std::panic::AssertUnwindSafe(|| r.consume(1)));
    assert!(
        msg.contains("buffer src.out, reader 0: consume(1) but only 0 items are available"),
        "{msg}"
    );
    // The refused consume left the position alone: nothing to read.
    assert_eq!(r.position(), 0);
    assert!(r.slice(1).is_empty());
}

#[test]
fn consume_past_the_published_items_panics() {
    let (mut w, mut rs) = buf(1);
    w.slice_mut(3).copy_from_slice(&[1u8; 12]);
    w.produce(3);
    let r = &mut rs[0];
    assert_eq!(r.available(), 3);
    r.consume(2);
    let msg = panic_message(std::panic::AssertUnwindSafe(|| r.consume(2)));
    assert!(
        msg.contains("consume(2) but only 1 items are available (2 consumed)"),
        "{msg}"
    );
    assert_eq!(r.position(), 2);
    assert_eq!(r.slice(5).len(), 4, "one item left, 4 bytes");
}

#[test]
fn a_reader_sees_only_what_available_saw() {
    let (mut w, mut rs) = buf(1);
    w.produce(10);
    // Published, but this reader has not looked yet: nothing to slice or consume.
    assert!(rs[0].slice(10).is_empty());
    let msg = panic_message(std::panic::AssertUnwindSafe(|| rs[0].consume(1)));
    assert!(msg.contains("only 0 items are available"), "{msg}");
    assert_eq!(rs[0].available(), 10);
    assert_eq!(rs[0].slice(100).len(), 40, "clamped to the 10 items");
}

#[test]
fn produce_past_the_free_space_panics() {
    let (mut w, _rs) = buf(1);
    assert_eq!(w.space(), 1024);
    w.produce(1000);
    assert_eq!(w.space(), 24);
    let msg = panic_message(std::panic::AssertUnwindSafe(|| w.produce(25)));
    assert!(
        msg.contains(
            "buffer src.out: produce(25) but only 24 items are free (capacity 1024, 1000 written)"
        ),
        "{msg}"
    );
    assert_eq!(w.position(), 1000, "the refused produce published nothing");
    assert_eq!(w.slice_mut(1000).len(), 24 * 4, "clamped to the free space");
}

#[test]
fn produce_looks_at_the_readers_again_before_refusing() {
    let (mut w, mut rs) = buf(1);
    w.produce(1024);
    assert_eq!(w.space(), 0);
    let a = rs[0].available();
    rs[0].consume(a);
    // The writer's cached free space is 0, but the reader has freed the ring.
    w.produce(1024);
    assert_eq!(w.position(), 2048);
}

#[test]
fn a_finished_reader_reads_nothing_more() {
    let (mut w, mut rs) = buf(2);
    w.produce(100);
    let r = &mut rs[1];
    assert_eq!(r.available(), 100);
    r.finish();
    assert_eq!(r.available(), 0, "the writer no longer waits for it");
    assert!(r.slice(100).is_empty());
    let msg = panic_message(std::panic::AssertUnwindSafe(|| r.consume(1)));
    assert!(msg.contains("reader 1: consume(1) but only 0"), "{msg}");
    // The writer may now lap this reader; reader 0 still holds its items.
    assert_eq!(w.space(), 924);
}

#[test]
fn zero_sized_items_are_refused_with_the_buffer_name() {
    let e = channel("bad.out", 4096, 0, sig(), vec![sig()])
        .err()
        .expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("buffer bad.out: item size 0"), "{e}");
}
