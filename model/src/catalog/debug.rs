//! Catalog entries: debugging and measurement.

use super::*;

pub(super) fn all() -> Vec<BlockDescriptor> {
    vec![
        BlockDescriptor::new(
            "tag_debug",
            Category::Debug,
            "Prints every stream tag it sees (offset, key, value).",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(
            ParamDescriptor::new("display", ParamType::Bool, "print to standard output")
                .default(true),
        )
        .param(
            ParamDescriptor::new(
                "filter",
                ParamType::String,
                "only tags with this key (empty: all)",
            )
            .default(""),
        )
        .input(PortDescriptor::typed("in", "tagged items"))
        .tags(TagPolicy::None),
        BlockDescriptor::new(
            "message_debug",
            Category::Debug,
            "Prints every message it receives and keeps them for inspection.",
        )
        .param(
            ParamDescriptor::new("display", ParamType::Bool, "print to standard output")
                .default(true),
        )
        .input(PortDescriptor::message("in", "messages to print").optional()),
        BlockDescriptor::new(
            "message_relay",
            Category::Debug,
            "Forwards every message after `work_us` µs of CPU work (its `id` unchanged; `drop_payload` removes \
             its `payload`): a stand-in for per-message analysis (tests and benchmarks of scalable segments).",
        )
        .param(
            ParamDescriptor::new("work_us", ParamType::Int, "busy work per message")
                .unit("µs")
                .default(0i64)
                .min(0.0),
        )
        .param(
            ParamDescriptor::new(
                "drop_payload",
                ParamType::Bool,
                "forward a map without its `payload` field (an analysis keeps features, not samples)",
            )
            .default(false),
        )
        .input(PortDescriptor::message("in", "messages to forward"))
        .output(PortDescriptor::message("out", "the same messages")),
        BlockDescriptor::new(
            "rate_probe",
            Category::Debug,
            "Measures the item rate; posts {rate, items} every `interval` seconds on `rate`.",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(
            ParamDescriptor::new("interval", ParamType::Float, "reporting interval")
                .unit("s")
                .default(1.0)
                .min(0.001),
        )
        .input(PortDescriptor::typed("in", "items to measure"))
        .output(PortDescriptor::message("rate", "rate reports"))
        .tags(TagPolicy::None),
    ]
}
