//! Catalog entries: flow control.

use super::*;

pub(super) fn all() -> Vec<BlockDescriptor> {
    vec![
        BlockDescriptor::new(
            "throttle",
            Category::Flow,
            "Limits the item rate to `rate` items per second, sleeping between bursts (no busy wait). \
             Its output is live: it runs in real time and, by default, drops what a full output cannot take.",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(ParamDescriptor::new("rate", ParamType::Float, "items per second").unit("items/s").min(1e-3).settable())
        .param(ParamDescriptor::new(
            "overflow",
            ParamType::Enum(vec!["drop", "wait"]),
            "when the output is full: drop (a live source cannot wait; the loss is marked with one `gap` \
             tag {first, count, cause: overflow} on the next item passed, or on the end of the stream when no item \
             follows) or wait (GNU Radio's throttle)",
        ).default("drop"))
        .input(PortDescriptor::typed("in", "items"))
        .output(PortDescriptor::typed("out", "the same items, paced"))
        .source(SourceKind::Live)
        .item_for_item()
        .rate_param("rate"),
        BlockDescriptor::new(
            "head",
            Category::Flow,
            "Passes the first `n` items, then ends its stream (and so ends the chain upstream of it).",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(ParamDescriptor::new("n", ParamType::Int, "items to pass").min(0.0))
        .input(PortDescriptor::typed("in", "items"))
        .output(PortDescriptor::typed("out", "the first n items"))
        .item_for_item()
        .output_indexed(),
        BlockDescriptor::new(
            "tagger",
            Category::Flow,
            "Passes items unchanged and adds a tag every `period` items (at offsets 0, period, 2·period, …) \
             whose value is the tag's offset.",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(ParamDescriptor::new("period", ParamType::Int, "items between tags").default(1024i64).min(1.0))
        .param(ParamDescriptor::new("key", ParamType::String, "tag key").default("tick"))
        .param(ParamDescriptor::new(
            "value",
            ParamType::Enum(vec!["offset", "time"]),
            "tag value: the tag's offset, or the wall-clock time in ns when it was added (for latency_probe)",
        ).default("offset"))
        .input(PortDescriptor::typed("in", "items"))
        .output(PortDescriptor::typed("out", "the same items, tagged"))
        .item_for_item()
        .output_indexed(),
    ]
}
