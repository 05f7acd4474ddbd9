//! Catalog entries: network edges between segments, inserted by the
//! partitioner (users rarely write them by hand), and the stream checker
//! used by the network tests.

use super::*;
use ItemType::*;

pub(super) fn all() -> Vec<BlockDescriptor> {
    let edge = || {
        ParamDescriptor::new(
            "edge",
            ParamType::String,
            "edge id, `block.port>segment` (derived from names by the partitioner)",
        )
    };
    let generation = || {
        ParamDescriptor::new(
            "generation",
            ParamType::Int,
            "hash of the edge's contract, set by the partitioner (`partition::edge_generation`): the \
             producer refuses a consumer whose generation differs; 0 for an edge written by hand",
        )
        .default(0i64)
        .min(0.0)
    };
    vec![
        BlockDescriptor::new(
            "net_sink",
            Category::Sink,
            "Producing end of a network edge: serves its input to the consumer that connects for `edge`, \
             keeping unacknowledged items (up to `retention_bytes`) so a reconnecting consumer resumes \
             without loss, and sending the end-of-stream tags with EOS. See docs/protocol.md.",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(edge())
        .param(generation())
        .param(ParamDescriptor::new("retention_bytes", ParamType::Int, "unacknowledged data kept for resume").unit("bytes").default(16i64 << 20).min(65536.0))
        .param(ParamDescriptor::new("crc", ParamType::Bool, "protect data frames with CRC32C").default(true))
        .param(ParamDescriptor::new("flush_us", ParamType::Int, "longest time a partial batch waits before it is sent").unit("µs").default(1000i64).min(0.0).max(1e6))
        .param(ParamDescriptor::new("linger_s", ParamType::Int, "after the input ended, how long to wait with no consumer connected for one to take the unacknowledged items and the end-of-stream tags (a final `gap`); then they are given up and later consumers are refused with `finished`").unit("s").default(60i64).min(0.0))
        .input(PortDescriptor::typed("in", "items to send"))
        .tags(TagPolicy::Custom)
        .role(Role::NetSink),
        BlockDescriptor::new(
            "net_source",
            Category::Source,
            "Consuming end of a network edge: connects to the segment `from` for `edge` (retrying with \
             backoff), resumes from its next offset after a fault, and marks any loss with one `gap` tag.",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(edge())
        .param(generation())
        .param(ParamDescriptor::new("from", ParamType::String, "segment that produces the edge"))
        .param(ParamDescriptor::new("samp_rate", ParamType::Float, "sample rate of the edge (for validation)").unit("Hz").optional())
        .output(PortDescriptor::typed("out", "received items"))
        .source(SourceKind::Replayable)
        .tags(TagPolicy::Custom)
        .rate_param("samp_rate")
        .role(Role::NetSource),
        BlockDescriptor::new(
            "net_message_sink",
            Category::Sink,
            "Producing end of a message edge: sends messages in order with sequence numbers, retried until acknowledged. \
             Into a scalable segment (`distribute`) it serves every replica that dials it and balances messages by \
             acknowledgement; out of one (`push`) it dials the consuming segment (docs/scaling.md).",
        )
        .param(edge())
        .param(generation())
        .param(ParamDescriptor::new("distribute", ParamType::Bool, "the edge feeds a scalable segment: serve any number of replicas, each message to one replica with room, redelivered if that replica goes away before it is done end to end (set by the partitioner)").default(false))
        .param(ParamDescriptor::new("window", ParamType::Int, "with `distribute`: most messages one replica may hold unacknowledged").default(8i64).min(1.0))
        .param(ParamDescriptor::new("push", ParamType::Bool, "the output of a scalable segment's replica: dial segment `to` instead of being dialed (set by the partitioner)").default(false))
        .param(ParamDescriptor::new("to", ParamType::String, "with `push`: the segment that consumes the edge").default(""))
        .input(PortDescriptor::message("in", "messages to send"))
        .role(Role::NetMessageSink),
        BlockDescriptor::new(
            "net_message_source",
            Category::Source,
            "Consuming end of a message edge: delivers each message once, in order. As a scalable segment's input \
             (`replica`) it acknowledges each message when the result carrying its `id` was acknowledged downstream; \
             after a scalable segment (`gather`) it takes every replica's results and drops repeated ids (docs/scaling.md).",
        )
        .param(edge())
        .param(generation())
        .param(ParamDescriptor::new("from", ParamType::String, "segment that produces the edge").default(""))
        .param(ParamDescriptor::new("replica", ParamType::Bool, "the input of a scalable segment's replica: messages need an integer `id` and are acknowledged end to end (set by the partitioner)").default(false))
        .param(ParamDescriptor::new("ack_on_take", ParamType::Bool, "with `replica`: acknowledge a message once the graph took it (a scalable segment without a message output)").default(false))
        .param(ParamDescriptor::new("gather", ParamType::Bool, "the edge comes out of a scalable segment: served here, any number of replicas push to it, results de-duplicated by `id` (set by the partitioner)").default(false))
        .param(ParamDescriptor::new("ordered", ParamType::Bool, "with `gather`: deliver results in `id` order (from `segments.<s>.scaling.ordered` of the scalable segment)").default(false))
        .output(PortDescriptor::message("out", "received messages"))
        .role(Role::NetMessageSource),
        BlockDescriptor::new(
            "stream_checker",
            Category::Debug,
            "Test fixture for counter streams: fails the run on any jump, repeat or reordering of the u64 \
             counter that a `gap` tag does not cover; counts items and lost items. A `gap` with cause \
             `restart` (the producer started over) starts a new counter stream.",
        )
        .param(ParamDescriptor::new("expect", ParamType::Int, "fail unless delivered + lost equals this at the end (after a restart: in the last counter stream)").optional().min(0.0))
        .param(ParamDescriptor::new("tag_key", ParamType::String, "also check that every tag with this key sits on the item whose value equals the tag's value (a `tagger` upstream); empty: no check").default(""))
        .input(PortDescriptor::fixed("in", U64, "counter items"))
        .tags(TagPolicy::None),
        BlockDescriptor::new(
            "latency_probe",
            Category::Debug,
            "Measures how long items took to get here: each tag with `key` carries the wall-clock time (ns) \
             at which a `tagger` with `value: time` added it. At the end prints count, p50, p99 and max.",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(ParamDescriptor::new("key", ParamType::String, "tag key carrying the send time").default("tick"))
        .input(PortDescriptor::typed("in", "tagged items"))
        .tags(TagPolicy::None),
    ]
}
