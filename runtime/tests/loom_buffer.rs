//! Loom model check of the buffer's position protocol: the writer publishes
//! (`produce`: a `Release` store of its position), readers see it
//! (`available`: an `Acquire` load), consume (their own `Release` store),
//! and the writer sees that before it writes the slots again (`space`:
//! `Acquire` loads), around the wrap of a 4-item ring; tags ride along
//! under their mutex and counter. The code under test is the real
//! `buffer.rs`: built with `--cfg loom`, its atomics and mutex are loom's and
//! every item slot has a loom-tracked cell that records each hand-out,
//! `produce` and `consume`, so a weakened ordering shows up as a causality
//! violation (or as a reader seeing a stale item).
//!
//! Run (scripts/test does):
//! `RUSTFLAGS="--cfg loom" cargo test -p flowmesh-runtime --test loom_buffer --release --target-dir target/loom`
//!
//! Without `--cfg loom` this file is empty.
#![cfg(loom)]

use std::sync::Arc;

use flowmesh_runtime::buffer::{channel, Reader, Writer};
use flowmesh_runtime::signal::Signal;
use flowmesh_runtime::{Pmt, Tag};
use loom::thread;

/// Large items make a one-page ring of 4 items, so a few items wrap it.
const ITEM: usize = 1024;

fn sig() -> Arc<Signal> {
    Arc::new(Signal::new())
}

fn ring(readers: usize) -> (Writer, Vec<Reader>) {
    let (w, rs) = channel(
        "model.out",
        4 * ITEM,
        ITEM,
        sig(),
        (0..readers).map(|_| sig()).collect(),
    )
    .unwrap();
    assert_eq!(w.shared().capacity(), 4);
    (w, rs)
}

/// Runs `f` under loom with a preemption bound (`LOOM_MAX_PREEMPTIONS`
/// overrides it), which keeps the exploration to seconds.
fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    // The waits are spin loops (with `yield_now`), which take many branches
    // in the executions where a thread keeps seeing an old position.
    b.max_branches = b.max_branches.max(100_000);
    b.check(f);
}

/// Writes items `0..total` (each starts with its number), at most `chunk`
/// per produce, tagging every `tag_every`-th item with its own number;
/// gives up after `tries` looks at the free space. Returns the items written.
fn write_all(mut w: Writer, total: u64, chunk: usize, tag_every: u64, tries: usize) -> u64 {
    let mut next = 0u64;
    for _ in 0..tries {
        if next == total {
            break;
        }
        let space = w.space();
        if space == 0 {
            thread::yield_now();
            continue;
        }
        let n = space.min(chunk).min((total - next) as usize);
        let region = w.slice_mut(n);
        assert_eq!(region.len(), n * ITEM);
        for (k, item) in region.chunks_exact_mut(ITEM).enumerate() {
            item[..8].copy_from_slice(&(next + k as u64).to_le_bytes());
        }
        for o in next..next + n as u64 {
            if o.is_multiple_of(tag_every) {
                w.add_tag(Tag::new(o, "n", Pmt::I64(o as i64)));
            }
        }
        w.produce(n);
        next += n as u64;
    }
    w.finish();
    next
}

/// Checks the `a` items from `first` on: their numbers, and that each
/// tagged one's tag is there.
fn check(r: &Reader, a: usize, first: u64, tag_every: u64) {
    let region = r.slice(a);
    assert_eq!(region.len(), a * ITEM);
    for (k, item) in region.chunks_exact(ITEM).enumerate() {
        let want = first + k as u64;
        let got = u64::from_le_bytes(item[..8].try_into().unwrap());
        assert_eq!(got, want, "item {want} read as {got}");
        if want.is_multiple_of(tag_every) {
            let t = r.tags().iter().find(|t| t.offset == want);
            let t = t.unwrap_or_else(|| panic!("item {want} came without its tag"));
            assert_eq!(t.value, Pmt::I64(want as i64));
        }
    }
    assert!(r.tags().iter().all(|t| t.offset >= r.position()));
}

/// Reads until the writer has finished (or after `tries` looks), checking
/// every item and that each tagged item's tag is there when the item is.
/// Returns the items read.
fn read_all(mut r: Reader, tag_every: u64, tries: usize) -> u64 {
    let mut expect = 0u64;
    for _ in 0..tries {
        let a = r.available();
        if a == 0 {
            if r.finished() {
                break;
            }
            thread::yield_now();
            continue;
        }
        check(&r, a, expect, tag_every);
        expect += a as u64;
        r.consume(a);
    }
    r.finish();
    expect
}

/// One look: reads (and checks) what is available, then finishes.
fn read_once(mut r: Reader, tag_every: u64) -> u64 {
    let a = r.available();
    check(&r, a, 0, tag_every);
    r.consume(a);
    r.finish();
    a as u64
}

#[test]
fn one_reader_across_the_wrap() {
    // 6 items through a 4-item ring, in produces of up to 3.
    model(3, || {
        let (w, mut rs) = ring(1);
        let r = rs.remove(0);
        let writer = thread::spawn(move || write_all(w, 6, 3, 2, usize::MAX));
        assert_eq!(read_all(r, 2, usize::MAX), 6);
        assert_eq!(writer.join().unwrap(), 6);
    });
}

/// Executions of `two_readers_one_leaving_early` that wrapped the ring.
static WRAPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn two_readers_one_leaving_early() {
    // Fan-out: reader 1 reads what it finds on its one look (perhaps
    // nothing) and leaves; from then on the writer laps it without waiting
    // (its reads must still happen-before the writes that reuse their
    // slots). Three threads of spin loops explode the state space, so the
    // writer and reader 0 give up after a few looks; the writer's third
    // produce wraps the ring in the executions where both readers made room.
    model(2, || {
        let (w, mut rs) = ring(2);
        let r1 = rs.pop().unwrap();
        let r0 = rs.pop().unwrap();
        let writer = thread::spawn(move || write_all(w, 6, 2, 3, 3));
        let quitter = thread::spawn(move || read_once(r1, 3));
        let read = read_all(r0, 3, 3);
        let written = writer.join().unwrap();
        assert!(read <= written);
        assert!(quitter.join().unwrap() <= written);
        if written > 4 {
            WRAPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Not loom's atomic: it counts across the model's executions.
    assert!(
        WRAPPED.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no execution wrapped the ring"
    );
}
