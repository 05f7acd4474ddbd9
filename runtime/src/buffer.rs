//! Lock-free circular stream buffers, double-mapped so that every readable or
//! writable region is one contiguous slice.
//!
//! The memory comes from `memfd_create` (no filesystem needed, so workers can
//! run with a read-only root) and is mapped twice, back to back: byte `i` and
//! byte `i + size` are the same memory, so a region that wraps the end of the
//! ring is still contiguous in the address space.
//!
//! One writer, any number of readers; readers share the items without copies.
//! Positions are absolute item counts (`u64`, never wrapping in practice).
//! The writer publishes with a `Release` store of its position; readers publish
//! their positions the same way; each side reads the other's with `Acquire`.
//! Stream tags are queued per reader under a mutex that the hot path only
//! touches when a tag is pending.
//!
//! Soundness: every slice handed out by the safe API borrows the [`Reader`]
//! or [`Writer`] it comes from, so it cannot outlive the buffer nor be held
//! across the `consume`/`produce`/`finish` that gives its region to the
//! other side. `produce` and `consume` beyond the free or available items
//! panic in every build, naming the buffer. [`crate::io`] hands out slices
//! for a whole work call through the crate-private `unsafe` variants, whose
//! preconditions are stated on each.
//!
//! Built with `--cfg loom` (see `runtime/tests/loom_buffer.rs`), the atomics
//! and the tag mutex are loom's, and every item slot gets a loom-tracked
//! cell that records each hand-out, `produce` and `consume`, so the loom
//! model checks this very code's orderings: a reader touching a slot that
//! the writer's last write to it does not happen-before (or the reverse) is
//! reported as a causality violation.
//!
//! This module and [`crate::io`] are the only places with `unsafe` code.

use std::collections::VecDeque;
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

#[cfg(loom)]
use loom::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Mutex,
};
#[cfg(not(loom))]
use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Mutex,
};

use crate::signal::Signal;
use crate::tag::Tag;

/// A region of `size` bytes mapped twice in a row.
pub struct DoubleMapped {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access is
// coordinated by the buffer protocol above.
unsafe impl Send for DoubleMapped {}
// SAFETY: as above; shared access is only through the buffer protocol, which
// never gives a writer and a reader overlapping regions.
unsafe impl Sync for DoubleMapped {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl DoubleMapped {
    /// Maps at least `min_bytes`, rounded up to a multiple of both the page
    /// size and `item_size` (so items never straddle the seam).
    pub fn new(min_bytes: usize, item_size: usize) -> io::Result<Self> {
        let page = page_size();
        let unit = page / gcd(page, item_size) * item_size; // lcm(page, item_size)
        let size = min_bytes.max(1).div_ceil(unit) * unit;
        // SAFETY: FFI calls with valid arguments; every return value is checked,
        // and on any failure the partial mapping and the fd are released.
        unsafe {
            let fd = libc::memfd_create(c"flowmesh-buffer".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fail = |fd: i32, base: *mut libc::c_void| {
                let e = io::Error::last_os_error();
                if !base.is_null() && base != libc::MAP_FAILED {
                    libc::munmap(base, 2 * size);
                }
                libc::close(fd);
                Err(e)
            };
            if libc::ftruncate(fd, size as libc::off_t) != 0 {
                return fail(fd, std::ptr::null_mut());
            }
            // Reserve 2*size of address space, then map the file twice into it.
            let base = libc::mmap(
                std::ptr::null_mut(),
                2 * size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return fail(fd, base);
            }
            for half in 0..2 {
                let addr = (base as *mut u8).add(half * size) as *mut libc::c_void;
                let p = libc::mmap(
                    addr,
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    0,
                );
                if p == libc::MAP_FAILED || p != addr {
                    return fail(fd, base);
                }
            }
            libc::close(fd);
            Ok(DoubleMapped {
                base: NonNull::new(base as *mut u8).expect("mmap returned a non-null address"),
                size,
            })
        }
    }

    /// Size of one copy in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Pointer to byte `offset % size`; valid for `size` bytes from there.
    #[inline]
    pub fn ptr_at(&self, offset: usize) -> *mut u8 {
        // SAFETY: offset % size < size and the mapping is 2*size long, so the
        // pointer and the `size` bytes after it are inside the mapping.
        unsafe { self.base.as_ptr().add(offset % self.size) }
    }
}

impl Drop for DoubleMapped {
    fn drop(&mut self) {
        // SAFETY: base/2*size is exactly the reservation made in `new`.
        unsafe {
            libc::munmap(self.base.as_ptr() as *mut libc::c_void, 2 * self.size);
        }
    }
}

/// An `AtomicU64` alone on its cache line, so the writer's and readers'
/// positions do not false-share.
#[repr(align(128))]
struct Padded(AtomicU64);

impl Padded {
    fn new(v: u64) -> Self {
        Padded(AtomicU64::new(v))
    }
}

/// Under loom: one tracked cell per item slot. Each hand-out of a region,
/// each `produce` and each `consume` records an access to the slots it
/// covers (`with_mut` for the writer, `with` for readers), so loom checks
/// that the position protocol orders every reader's use of a slot after
/// the write that filled it, and every write after the reads of the lap
/// before.
#[cfg(loom)]
struct Slots(Box<[loom::cell::UnsafeCell<()>]>);

// SAFETY: the cells hold `()` and are only used to record accesses; loom
// itself checks that those accesses are ordered (that is their purpose).
#[cfg(loom)]
unsafe impl Sync for Slots {}

#[cfg(loom)]
impl Slots {
    fn track(&self, from: u64, n: usize, write: bool) {
        let cap = self.0.len() as u64;
        for k in 0..n as u64 {
            let cell = &self.0[((from + k) % cap) as usize];
            if write {
                cell.with_mut(|_| ());
            } else {
                cell.with(|_| ());
            }
        }
    }
}

struct ReaderSlot {
    read: Padded,
    /// The writer may not write at or past this offset for this reader
    /// (`u64::MAX`: no limit). See [`Reader::set_horizon`].
    horizon: Padded,
    done: AtomicBool,
    pending_tags: AtomicUsize,
    tags: Mutex<VecDeque<Tag>>,
    signal: Arc<Signal>,
}

/// State shared by the writer and the readers of one buffer.
pub struct Shared {
    /// Names the buffer in panics (the scheduler uses `block.port`).
    name: String,
    map: DoubleMapped,
    item_size: usize,
    capacity: usize,
    write: Padded,
    writer_done: AtomicBool,
    writer_signal: Arc<Signal>,
    readers: Box<[ReaderSlot]>,
    /// Some reader has set a horizon: the writer re-reads them every time.
    horizons: AtomicBool,
    #[cfg(loom)]
    slots: Slots,
}

impl Shared {
    /// The name given to [`channel`].
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Records accesses to `n` slots from position `from` (loom builds only).
    #[inline(always)]
    #[allow(unused_variables)]
    fn track(&self, from: u64, n: usize, write: bool) {
        #[cfg(loom)]
        self.slots.track(from, n, write);
    }
    /// Capacity in items.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Items written so far.
    pub fn written(&self) -> u64 {
        self.write.0.load(Ordering::Acquire)
    }
    /// Items consumed so far by reader `i`.
    pub fn read(&self, i: usize) -> u64 {
        self.readers[i].read.0.load(Ordering::Acquire)
    }
    /// Number of readers.
    pub fn num_readers(&self) -> usize {
        self.readers.len()
    }
}

/// Creates a buffer named `name` (used in panic messages) of at least
/// `min_bytes` for items of `item_size` bytes, with one reader per entry of
/// `reader_signals`. The signals are the threads to wake when data arrives
/// (readers) or space frees (writer).
pub fn channel(
    name: impl Into<String>,
    min_bytes: usize,
    item_size: usize,
    writer_signal: Arc<Signal>,
    reader_signals: Vec<Arc<Signal>>,
) -> io::Result<(Writer, Vec<Reader>)> {
    let name = name.into();
    if item_size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("buffer {name}: item size 0; items must be at least one byte"),
        ));
    }
    let map = DoubleMapped::new(min_bytes, item_size)?;
    let capacity = map.size() / item_size;
    let readers: Box<[ReaderSlot]> = reader_signals
        .into_iter()
        .map(|signal| ReaderSlot {
            read: Padded::new(0),
            horizon: Padded::new(u64::MAX),
            done: AtomicBool::new(false),
            pending_tags: AtomicUsize::new(0),
            tags: Mutex::new(VecDeque::new()),
            signal,
        })
        .collect();
    let n = readers.len();
    let shared = Arc::new(Shared {
        name,
        map,
        item_size,
        capacity,
        write: Padded::new(0),
        writer_done: AtomicBool::new(false),
        writer_signal,
        readers,
        horizons: AtomicBool::new(false),
        #[cfg(loom)]
        slots: Slots(
            (0..capacity)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        ),
    });
    let writer = Writer {
        shared: shared.clone(),
        write: 0,
        min_read: 0,
        horizon: u64::MAX,
    };
    let readers = (0..n)
        .map(|idx| Reader {
            shared: shared.clone(),
            idx,
            read: 0,
            write: 0,
            tags: Vec::new(),
            tag_start: 0,
            horizon_allowed: true,
            closed: false,
        })
        .collect();
    Ok((writer, readers))
}

/// The producing end of a buffer.
pub struct Writer {
    shared: Arc<Shared>,
    write: u64,
    min_read: u64,
    /// Lowest horizon of the readers not done (cached).
    horizon: u64,
}

impl Writer {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    /// Items written so far (absolute offset of the next item).
    #[inline]
    pub fn position(&self) -> u64 {
        self.write
    }
    pub fn item_size(&self) -> usize {
        self.shared.item_size
    }

    /// Free space in items. Readers that are done do not hold space, and a
    /// reader's horizon caps how far ahead of it the writer may go.
    #[inline]
    pub fn space(&mut self) -> usize {
        let cap = self.shared.capacity as u64;
        let free = self.free(cap);
        if free < cap / 2 || self.shared.horizons.load(Ordering::Relaxed) {
            // Cheap enough, and keeps chunks large.
            self.refresh();
            return self.free(cap) as usize;
        }
        free as usize
    }

    #[inline]
    fn free(&self, cap: u64) -> u64 {
        let ring = cap.saturating_sub(self.write - self.min_read);
        ring.min(self.horizon.saturating_sub(self.write))
    }

    fn refresh(&mut self) {
        let mut min = self.write;
        let mut horizon = u64::MAX;
        for r in self.shared.readers.iter() {
            if r.done.load(Ordering::Acquire) {
                continue;
            }
            min = min.min(r.read.0.load(Ordering::Acquire));
            horizon = horizon.min(r.horizon.0.load(Ordering::Acquire));
        }
        self.min_read = min;
        self.horizon = horizon;
    }

    /// True when every reader is done (or there are none): nothing written
    /// from now on will be read.
    pub fn all_readers_done(&self) -> bool {
        self.shared
            .readers
            .iter()
            .all(|r| r.done.load(Ordering::Acquire))
    }

    /// The writable region: `items` items as bytes, or fewer if the free
    /// space last seen (by [`Writer::space`]) is smaller. Write items from
    /// the start and [`Writer::produce`] how many were written; the slice
    /// borrows the writer, so it cannot be kept past `produce`.
    #[inline]
    pub fn slice_mut(&mut self, items: usize) -> &mut [u8] {
        // SAFETY: the slice borrows `self` mutably for its whole life, so no
        // other slice of this writer is alive, and `produce` and drop cannot
        // happen while it is used.
        unsafe { self.slice_mut_unbound(items) }
    }

    /// [`Writer::slice_mut`] with a lifetime the caller chooses, for
    /// [`crate::io::WorkIo`], which hands out one output slice per work call
    /// from a shared borrow.
    ///
    /// # Safety
    /// For as long as the returned slice is used:
    /// - no other slice from this writer (`slice_mut` or this function) may
    ///   be alive: they cover the same region;
    /// - `produce` must not be called on this writer: it gives the region to
    ///   the readers, which then read it while the slice writes it;
    /// - the writer must not be dropped: if the readers are gone too, that
    ///   unmaps the memory.
    ///
    /// The length needs no precondition: it is clamped to the free space.
    #[inline]
    pub(crate) unsafe fn slice_mut_unbound<'a>(&self, items: usize) -> &'a mut [u8] {
        let cap = self.shared.capacity;
        let items = items.min(self.free(cap as u64) as usize);
        self.shared.track(self.write, items, true);
        let off = (self.write as usize % cap) * self.shared.item_size;
        // SAFETY: `items` is within the free space computed from positions
        // that every reader published (Release) and `refresh` loaded
        // (Acquire), so no reader reads the region until `produce`; it is at
        // most `capacity` items, and `ptr_at` is valid for a whole capacity
        // (the double mapping makes the wrap contiguous). The caller keeps
        // the slice unique and unused after `produce` or drop.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.shared.map.ptr_at(off),
                items * self.shared.item_size,
            )
        }
    }

    /// Queues tags for every reader (one lock per reader for the batch) and
    /// empties `tags`. Must precede the `produce` that publishes the tagged
    /// items.
    pub fn add_tags(&self, tags: &mut Vec<Tag>) {
        if tags.is_empty() {
            return;
        }
        let n = tags.len();
        let mut live = self
            .shared
            .readers
            .iter()
            .filter(|r| !r.done.load(Ordering::Relaxed))
            .peekable();
        while let Some(r) = live.next() {
            let mut q = r.tags.lock().unwrap_or_else(|e| e.into_inner());
            if live.peek().is_some() {
                q.extend(tags.iter().cloned());
            } else {
                // The last reader takes the tags themselves: no clone.
                q.extend(tags.drain(..));
            }
            drop(q);
            r.pending_tags.fetch_add(n, Ordering::Release);
        }
        tags.clear();
    }

    /// Queues one tag for every reader (see [`Writer::add_tags`]).
    pub fn add_tag(&self, tag: Tag) {
        self.add_tags(&mut vec![tag]);
    }

    /// Publishes `n` items and wakes the readers.
    ///
    /// # Panics
    /// If `n` is more than the free space (see [`Writer::space`]), in every
    /// build: publishing items the readers still hold would let them read a
    /// region while it is written.
    #[inline]
    pub fn produce(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if n as u64 > self.free(self.shared.capacity as u64) {
            self.produce_overflow(n);
        }
        self.shared.track(self.write, n, true);
        self.write += n as u64;
        self.shared.write.0.store(self.write, Ordering::Release);
        for r in self.shared.readers.iter() {
            r.signal.notify();
        }
    }

    /// The cold path of `produce`: the cached free space was too small, so
    /// look at the readers again and refuse if it still is.
    #[cold]
    #[inline(never)]
    fn produce_overflow(&mut self, n: usize) {
        self.refresh();
        let free = self.free(self.shared.capacity as u64);
        assert!(
            n as u64 <= free,
            "buffer {}: produce({n}) but only {free} items are free (capacity {}, \
             {} written); produce at most what space() returned",
            self.shared.name,
            self.shared.capacity,
            self.write,
        );
    }

    /// Marks the stream ended: readers finish once they have read everything.
    pub fn finish(&self) {
        self.shared.writer_done.store(true, Ordering::Release);
        for r in self.shared.readers.iter() {
            r.signal.notify();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A consuming end of a buffer.
pub struct Reader {
    shared: Arc<Shared>,
    idx: usize,
    read: u64,
    write: u64,
    /// Tags pulled from the writer, sorted by offset; those before
    /// `tag_start` are consumed (dropped in bulk, not one consume at a time).
    tags: Vec<Tag>,
    tag_start: usize,
    /// False when the writer must not be capped (it is fed by a live block).
    horizon_allowed: bool,
    /// Set by `finish`: the writer no longer waits for this reader, so it
    /// must not read any more (`available` stays 0).
    closed: bool,
}

impl Reader {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    /// Items consumed so far (absolute offset of the next item to read).
    #[inline]
    pub fn position(&self) -> u64 {
        self.read
    }
    /// This reader's index among the buffer's readers.
    pub fn index(&self) -> usize {
        self.idx
    }
    pub fn item_size(&self) -> usize {
        self.shared.item_size
    }

    /// Items available to read (refreshes the writer's position). Always 0
    /// after [`Reader::finish`].
    #[inline]
    pub fn available(&mut self) -> usize {
        if self.closed {
            return 0;
        }
        self.write = self.shared.write.0.load(Ordering::Acquire);
        if self.shared.readers[self.idx]
            .pending_tags
            .load(Ordering::Acquire)
            > 0
        {
            self.pull_tags();
        }
        (self.write - self.read) as usize
    }

    fn pull_tags(&mut self) {
        let slot = &self.shared.readers[self.idx];
        let mut q = slot.tags.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len();
        let old = self.tags.len();
        self.tags.extend(q.drain(..));
        slot.pending_tags.fetch_sub(n, Ordering::AcqRel);
        drop(q);
        // Tags usually arrive in order: sort only when they did not (the
        // last old tag and the new ones are enough to tell).
        let from = old.saturating_sub(1).max(self.tag_start);
        if !self.tags[from..].is_sorted_by_key(|t| t.offset) {
            self.tags[self.tag_start..].sort_by_key(|t| t.offset);
        }
    }

    /// True when the writer has finished and everything it wrote was read.
    /// (Check after `available()` returned 0.)
    pub fn finished(&mut self) -> bool {
        if !self.shared.writer_done.load(Ordering::Acquire) {
            return false;
        }
        self.available() == 0
    }

    /// True when the writer has finished (more items may still be unread).
    pub fn writer_done(&self) -> bool {
        self.shared.writer_done.load(Ordering::Acquire)
    }

    /// The readable region: `items` items as bytes, or fewer if the last
    /// [`Reader::available`] saw fewer. The slice borrows the reader, so it
    /// cannot be kept past `consume`, `finish` or drop.
    #[inline]
    pub fn slice(&self, items: usize) -> &[u8] {
        // SAFETY: the slice borrows `self` for its whole life, so `consume`,
        // `finish` (both `&mut self`) and drop cannot happen while it is used.
        unsafe { self.slice_unbound(items) }
    }

    /// [`Reader::slice`] with a lifetime the caller chooses, for
    /// [`crate::io::WorkIo`], which hands out input slices for a whole work
    /// call from a shared borrow.
    ///
    /// # Safety
    /// For as long as the returned slice is used, this reader must not be
    /// consumed on (`consume`), finished (`finish`) or dropped: the first two
    /// let the writer overwrite the region, and dropping it (with the writer
    /// and the other readers gone) unmaps the memory.
    ///
    /// The length needs no precondition: it is clamped to what was published.
    #[inline]
    pub(crate) unsafe fn slice_unbound<'a>(&self, items: usize) -> &'a [u8] {
        let items = items.min((self.write - self.read) as usize);
        self.shared.track(self.read, items, false);
        let off = (self.read as usize % self.shared.capacity) * self.shared.item_size;
        // SAFETY: [read, write) was published by the writer (its Release
        // store, our Acquire load in `available`), and the writer does not
        // write there until we consume it (its `produce` refuses to go past
        // the slowest reader not done, which bounds `write - read` by the
        // capacity; after `finish`, `write == read`). `ptr_at` is valid for
        // a whole capacity. The caller keeps the slice unused after
        // `consume`, `finish` or drop.
        unsafe {
            std::slice::from_raw_parts(self.shared.map.ptr_at(off), items * self.shared.item_size)
        }
    }

    /// Tags on items not yet consumed, sorted by offset (may include tags
    /// beyond the available items).
    pub fn tags(&self) -> &[Tag] {
        &self.tags[self.tag_start..]
    }

    /// Consumes `n` items, frees their space and wakes the writer.
    ///
    /// # Panics
    /// If `n` is more than the last [`Reader::available`] saw (minus what
    /// was consumed since), in every build: the reader would run past the
    /// writer and read items never published.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if n as u64 > self.write - self.read {
            self.consume_overflow(n);
        }
        self.shared.track(self.read, n, false);
        self.read += n as u64;
        self.shared.readers[self.idx]
            .read
            .0
            .store(self.read, Ordering::Release);
        if self.tag_start < self.tags.len() {
            let read = self.read;
            self.tag_start += self.tags[self.tag_start..].partition_point(|t| t.offset < read);
            if self.tag_start == self.tags.len() {
                self.tags.clear();
                self.tag_start = 0;
            } else if self.tag_start >= 256 && self.tag_start * 2 >= self.tags.len() {
                self.tags.drain(..self.tag_start);
                self.tag_start = 0;
            }
        }
        self.shared.writer_signal.notify();
    }

    #[cold]
    #[inline(never)]
    fn consume_overflow(&self, n: usize) -> ! {
        panic!(
            "buffer {}, reader {}: consume({n}) but only {} items are available \
             ({} consumed); consume at most what available() returned",
            self.shared.name,
            self.idx,
            self.write - self.read,
            self.read,
        );
    }

    /// Lets the writer run at most up to absolute offset `upto` (exclusive)
    /// for this reader, however much space the ring has; raising it wakes the
    /// writer. A reader that keeps a long history (a network sink's
    /// retention) uses it so that fresh items are written just before they
    /// are read, while still hot in cache, instead of a whole ring ahead.
    ///
    /// A no-op on a reader whose writer is fed by a live block (see
    /// [`Reader::forbid_horizon`]).
    pub fn set_horizon(&self, upto: u64) {
        if !self.horizon_allowed {
            return;
        }
        let slot = &self.shared.readers[self.idx].horizon.0;
        let old = slot.swap(upto, Ordering::AcqRel);
        if !self.shared.horizons.load(Ordering::Relaxed) {
            self.shared.horizons.store(true, Ordering::Release);
        }
        if upto > old {
            self.shared.writer_signal.notify();
        }
    }

    /// Makes [`Reader::set_horizon`] a no-op: the writer runs in real time
    /// (downstream of a live block) and must get the whole ring, or it would
    /// drop items while there is still room.
    pub fn forbid_horizon(&mut self) {
        self.horizon_allowed = false;
        self.shared.readers[self.idx]
            .horizon
            .0
            .store(u64::MAX, Ordering::Release);
    }

    /// Marks this reader done: the writer stops waiting for it, and from
    /// now on this reader reads nothing ([`Reader::available`] is 0).
    pub fn finish(&mut self) {
        self.closed = true;
        self.write = self.read;
        self.shared.readers[self.idx]
            .done
            .store(true, Ordering::Release);
        self.shared.writer_signal.notify();
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pmt;

    fn sig() -> Arc<Signal> {
        Arc::new(Signal::new())
    }

    #[test]
    fn double_mapping_aliases() {
        let m = DoubleMapped::new(1, 8).unwrap();
        assert_eq!(m.size() % 4096, 0);
        // SAFETY: test-only direct access inside the mapping.
        unsafe {
            *m.ptr_at(0) = 42;
            assert_eq!(*m.ptr_at(0).add(m.size()), 42);
        }
    }

    #[test]
    fn item_size_not_dividing_page() {
        let m = DoubleMapped::new(10000, 4000).unwrap();
        assert_eq!(m.size() % 4000, 0);
        assert_eq!(m.size() % 4096, 0);
    }

    #[test]
    fn wrap_is_contiguous_and_fanout_shares() {
        let (mut w, mut rs) = channel("test", 4096, 4, sig(), vec![sig(), sig()]).unwrap();
        let cap = w.space();
        assert_eq!(cap, 1024);
        let mut next = 0u32;
        let mut expect = [0u32; 2];
        for round in 0..10 {
            let n = w.space().min(700);
            let s: &mut [u32] = bytemuck::cast_slice_mut(w.slice_mut(n));
            for x in s.iter_mut() {
                *x = next;
                next += 1;
            }
            w.add_tag(Tag::new(w.position(), "round", Pmt::I64(round)));
            w.produce(n);
            for (i, r) in rs.iter_mut().enumerate() {
                let a = r.available();
                assert_eq!(r.tags().first().map(|t| t.offset), Some(r.position()));
                let s: &[u32] = bytemuck::cast_slice(r.slice(a));
                for x in s {
                    assert_eq!(*x, expect[i]);
                    expect[i] += 1;
                }
                r.consume(a);
                assert!(r.tags().is_empty());
            }
        }
        w.finish();
        assert!(rs[0].finished());
    }

    #[test]
    fn slow_reader_holds_space_until_done() {
        let (mut w, mut rs) = channel("test", 4096, 4, sig(), vec![sig(), sig()]).unwrap();
        w.produce(1024);
        assert_eq!(w.space(), 0);
        let a = rs[0].available();
        rs[0].consume(a);
        assert_eq!(w.space(), 0, "reader 1 still holds the space");
        rs[1].finish();
        assert_eq!(w.space(), 1024);
        rs[0].finish();
        assert!(w.all_readers_done());
    }

    #[test]
    fn horizon_caps_the_writer_and_raising_it_frees_space() {
        let (mut w, mut rs) = channel("test", 4096, 4, sig(), vec![sig()]).unwrap();
        let cap = w.space();
        rs[0].set_horizon(100);
        assert_eq!(w.space(), 100);
        w.produce(100);
        assert_eq!(w.space(), 0, "at the horizon although the ring is empty");
        rs[0].set_horizon(250);
        assert_eq!(w.space(), 150);
        let a = rs[0].available();
        rs[0].consume(a);
        rs[0].set_horizon(u64::MAX);
        assert_eq!(w.space(), cap, "no horizon: the whole ring");
        rs[0].set_horizon(10);
        rs[0].finish();
        assert_eq!(w.space(), cap, "a finished reader's horizon does not count");
    }

    #[test]
    fn a_forbidden_horizon_is_ignored() {
        let (mut w, mut rs) = channel("test", 4096, 4, sig(), vec![sig()]).unwrap();
        let cap = w.space();
        rs[0].forbid_horizon();
        rs[0].set_horizon(10);
        assert_eq!(w.space(), cap);
    }
}
