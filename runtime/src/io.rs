//! The view a block gets of its ports during one `work` call: typed slices of
//! the input and output buffers, tags, and message outputs.
//!
//! Slices point straight into the double-mapped buffers (no copies). This is
//! buffer code: the `unsafe` here hands out the writable region once per call.

use std::cell::Cell;
use std::sync::Arc;

use flowmesh_model::{ItemType, Pmt, StreamType};
use num_complex::Complex;

use crate::buffer::{Reader, Writer};
use crate::message::MsgOutPort;
use crate::tag::Tag;

/// A Rust type that can be a stream item.
pub trait Item: bytemuck::Pod + Send + Sync + 'static {
    const TYPE: ItemType;
}

macro_rules! item {
    ($t:ty, $e:ident) => {
        impl Item for $t {
            const TYPE: ItemType = ItemType::$e;
        }
    };
}
item!(f32, F32);
item!(f64, F64);
item!(Complex<f32>, Cf32);
item!(Complex<f64>, Cf64);
item!(i8, I8);
item!(Complex<i8>, Cs8);
item!(i16, I16);
item!(Complex<i16>, Cs16);
item!(i32, I32);
item!(u8, U8);
item!(u16, U16);
item!(u32, U32);
item!(u64, U64);

/// A stream input as the scheduler keeps it between calls.
pub struct InputPort {
    pub(crate) reader: Reader,
    pub(crate) stype: StreamType,
    pub(crate) avail: usize,
    pub(crate) consumed: usize,
    pub(crate) writer_done: bool,
}

impl InputPort {
    pub(crate) fn new(reader: Reader, stype: StreamType) -> Self {
        InputPort {
            reader,
            stype,
            avail: 0,
            consumed: 0,
            writer_done: false,
        }
    }
    /// Refreshes what is available; returns the item count.
    #[inline]
    pub(crate) fn refresh(&mut self) -> usize {
        // Read the done flag first: if it is set, every item is already published.
        self.writer_done = self.reader.writer_done();
        self.avail = self.reader.available();
        self.consumed = 0;
        self.avail
    }
}

/// A stream output as the scheduler keeps it between calls.
pub struct OutputPort {
    pub(crate) writer: Writer,
    pub(crate) stype: StreamType,
    pub(crate) space: usize,
    pub(crate) produced: usize,
    pub(crate) borrowed: Cell<bool>,
    pub(crate) tags: Vec<Tag>,
}

impl OutputPort {
    pub(crate) fn new(writer: Writer, stype: StreamType) -> Self {
        OutputPort {
            writer,
            stype,
            space: 0,
            produced: 0,
            borrowed: Cell::new(false),
            tags: Vec::new(),
        }
    }
    #[inline]
    pub(crate) fn refresh(&mut self) -> usize {
        self.space = self.writer.space();
        self.produced = 0;
        self.borrowed.set(false);
        self.space
    }
}

/// What a block sees of its ports in one `work` call.
pub struct WorkIo<'a> {
    pub(crate) inputs: &'a mut [InputPort],
    pub(crate) outputs: &'a mut [OutputPort],
    pub(crate) msg_out: &'a mut [MsgOutPort],
    pub(crate) posted: usize,
    pub(crate) signal: &'a Arc<crate::signal::Signal>,
    pub(crate) messages_ended: bool,
    /// The graph is stopping for a restart ([`crate::Handle::suspend`]).
    pub(crate) planned: bool,
}

fn check_type<T: Item>(dir: &str, i: usize, st: StreamType) {
    assert!(
        T::TYPE == st.item,
        "{dir} {i} carries {} but the block read it as {}",
        st,
        T::TYPE
    );
}

impl<'a> WorkIo<'a> {
    /// Number of stream inputs.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }
    /// Number of stream outputs.
    pub fn num_outputs(&self) -> usize {
        self.outputs.len()
    }
    /// Stream items available on input `i` (each `vlen` scalars).
    #[inline]
    pub fn input_items(&self, i: usize) -> usize {
        self.inputs[i].avail - self.inputs[i].consumed
    }
    /// Capacity of output `j`'s buffer in items.
    pub fn output_capacity(&self, j: usize) -> usize {
        self.outputs[j].writer.shared().capacity()
    }
    /// Free stream items on output `j`.
    #[inline]
    pub fn output_items(&self, j: usize) -> usize {
        self.outputs[j].space - self.outputs[j].produced
    }
    /// The available scalars of input `i` not yet consumed in this call
    /// (`input_items(i) * vlen` of them).
    #[inline]
    pub fn input<T: Item>(&self, i: usize) -> &'a [T] {
        let p = &self.inputs[i];
        check_type::<T>("input", i, p.stype);
        // SAFETY: see `input_bytes`.
        let bytes = unsafe { p.reader.slice_unbound(p.avail) };
        let all: &'a [T] = bytemuck::cast_slice(bytes);
        &all[p.consumed * p.stype.vlen..]
    }
    /// The free scalars of output `j` (`output_items(j) * vlen`). May be taken
    /// once per call; write items in order and `produce` how many you wrote.
    #[inline]
    pub fn output<T: Item>(&self, j: usize) -> &'a mut [T] {
        let p = &self.outputs[j];
        check_type::<T>("output", j, p.stype);
        assert!(
            !p.borrowed.replace(true),
            "output {j} taken twice in one work call"
        );
        // SAFETY: see `output_bytes`.
        let bytes = unsafe { p.writer.slice_mut_unbound(p.space) };
        bytemuck::cast_slice_mut(bytes)
    }
    /// Raw bytes of input `i` (type-agnostic blocks such as `head`).
    #[inline]
    pub fn input_bytes(&self, i: usize) -> &'a [u8] {
        let p = &self.inputs[i];
        // SAFETY: the slice lives for 'a, while this `WorkIo` holds the only
        // borrow of the port (`&'a mut`), and nothing reachable from a
        // `WorkIo` consumes on, finishes or drops the reader (`consume` here
        // only counts); the scheduler consumes after the `WorkIo` is gone.
        let bytes = unsafe { p.reader.slice_unbound(p.avail) };
        &bytes[p.consumed * p.reader.item_size()..]
    }
    /// Raw bytes of output `j`; same rules as [`WorkIo::output`].
    #[inline]
    pub fn output_bytes(&self, j: usize) -> &'a mut [u8] {
        let p = &self.outputs[j];
        assert!(
            !p.borrowed.replace(true),
            "output {j} taken twice in one work call"
        );
        // SAFETY: the slice lives for 'a, while this `WorkIo` holds the only
        // borrow of the port (`&'a mut`); it is the only slice of this
        // writer in this call (the `borrowed` flag just above, which only
        // the scheduler's `refresh` resets, between calls); and nothing
        // reachable from a `WorkIo` produces on or drops the writer
        // (`produce` here only counts): the scheduler produces after the
        // `WorkIo` is gone.
        unsafe { p.writer.slice_mut_unbound(p.space) }
    }
    /// Marks `n` more items of input `i` consumed.
    #[inline]
    pub fn consume(&mut self, i: usize, n: usize) {
        let p = &mut self.inputs[i];
        assert!(
            p.consumed + n <= p.avail,
            "input {i}: consumed more than available"
        );
        p.consumed += n;
    }
    /// Marks `n` more items of output `j` produced.
    #[inline]
    pub fn produce(&mut self, j: usize, n: usize) {
        let p = &mut self.outputs[j];
        assert!(
            p.produced + n <= p.space,
            "output {j}: produced more than its space"
        );
        p.produced += n;
    }
    /// Caps how far the writer upstream of input `i` may run ahead: it may
    /// not write items at or past absolute offset `upto` until this is
    /// raised (see [`Reader::set_horizon`]).
    pub fn set_input_horizon(&self, i: usize, upto: u64) {
        self.inputs[i].reader.set_horizon(upto);
    }
    /// Absolute offset of the next unconsumed item of input `i`.
    pub fn nitems_read(&self, i: usize) -> u64 {
        self.inputs[i].reader.position() + self.inputs[i].consumed as u64
    }
    /// Absolute offset of the next item to be produced on output `j`.
    pub fn nitems_written(&self, j: usize) -> u64 {
        self.outputs[j].writer.position() + self.outputs[j].produced as u64
    }
    /// Tags on the available, unconsumed items of input `i`, sorted by offset.
    pub fn tags(&self, i: usize) -> &[Tag] {
        let p = &self.inputs[i];
        let lo = p.reader.position() + p.consumed as u64;
        let hi = p.reader.position() + p.avail as u64;
        let t = p.reader.tags();
        let a = t.partition_point(|t| t.offset < lo);
        let b = t.partition_point(|t| t.offset < hi);
        &t[a..b]
    }
    /// Tags on the end of input `i`'s stream: once its writer has finished,
    /// the tags at or past its last item's offset + 1 (there is no item to
    /// carry them). A block that drops items at the end of its stream (a
    /// live `throttle`) marks that loss with a `gap` tag there. Empty while
    /// the writer runs.
    pub fn end_tags(&self, i: usize) -> &[Tag] {
        let p = &self.inputs[i];
        if !p.writer_done {
            return &[];
        }
        let end = p.reader.position() + p.avail as u64;
        let t = p.reader.tags();
        &t[t.partition_point(|t| t.offset < end)..]
    }
    /// Adds a tag to output `j` (absolute offset; normally within what this
    /// call produces, or at the end of what it produced when the block ends
    /// its stream: an end-of-stream tag, see [`WorkIo::end_tags`]).
    pub fn add_tag(&mut self, j: usize, tag: Tag) {
        self.outputs[j].tags.push(tag);
    }
    /// True when input `i`'s writer has finished and every item it will ever
    /// have is already available.
    pub fn input_done(&self, i: usize) -> bool {
        self.inputs[i].writer_done
    }
    /// Posts a message on message output `port` (index among message outputs).
    pub fn post(&mut self, port: usize, msg: Pmt) {
        self.posted += 1;
        self.msg_out[port].post(msg);
    }
    /// Number of message outputs.
    pub fn num_message_outputs(&self) -> usize {
        self.msg_out.len()
    }
    /// True when every sender of every message input has ended (and all
    /// their messages were delivered).
    pub fn messages_ended(&self) -> bool {
        self.messages_ended
    }
    /// True when the graph is stopping for a restart (a planned stop,
    /// [`crate::Handle::suspend`]), not ending its stream: an input that
    /// ends now ended because its sources stopped, and a block that talks to
    /// peers (a network sink) must not tell them the stream ended.
    pub fn stopping_for_restart(&self) -> bool {
        self.planned
    }
    /// The signal that wakes this block's scheduler thread, for blocks that
    /// wait on something outside the graph (sockets, timers in other threads).
    pub fn waker(&self) -> &Arc<crate::signal::Signal> {
        self.signal
    }
}

/// Lets a message handler post messages.
pub struct Poster<'a> {
    pub(crate) msg_out: &'a mut [MsgOutPort],
}

impl Poster<'_> {
    pub fn post(&mut self, port: usize, msg: Pmt) {
        self.msg_out[port].post(msg);
    }
}

/// Shared pointer type used by handles to blocks' collected data.
pub type Shared<T> = Arc<std::sync::Mutex<T>>;
