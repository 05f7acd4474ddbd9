//! Catalog entries: sources.

use super::*;
use ItemType::*;

pub(super) fn all() -> Vec<BlockDescriptor> {
    let samp_rate = || {
        ParamDescriptor::new("samp_rate", ParamType::Float, "sample rate of the output")
            .unit("Hz")
            .min(0.0)
    };
    vec![
        BlockDescriptor::new("null_source", Category::Source, "Endless stream of zeros.")
            .param(ParamDescriptor::item_type(&ItemType::ALL))
            .param(ParamDescriptor::vlen())
            .param(samp_rate().optional())
            .output(PortDescriptor::typed("out", "zeros"))
            .source(SourceKind::Replayable)
            .resumable_at_offset()
            .rate_param("samp_rate"),
        BlockDescriptor::new(
            "signal_source",
            Category::Source,
            "Cosine, sine, square or constant waveform. For cf32, `cos` and `sin` give the complex \
             exponential exp(j(2πft+φ)) as GNU Radio does. The phase of item n is computed from n, \
             so a restarted source reproduces the same samples.",
        )
        .param(ParamDescriptor::item_type(&[Cf32, F32]))
        .param(ParamDescriptor::new(
            "waveform",
            ParamType::Enum(vec!["cos", "sin", "square", "const"]),
            "waveform; square toggles between 0 and amplitude (GNU Radio's convention)",
        ).default("cos"))
        .param(samp_rate())
        .param(ParamDescriptor::new("frequency", ParamType::Float, "frequency").unit("Hz").default(1000.0).settable())
        .param(ParamDescriptor::new("amplitude", ParamType::Float, "peak amplitude").default(1.0).settable())
        .param(ParamDescriptor::new("offset", ParamType::Float, "DC offset added to every sample").default(0.0).settable())
        .param(ParamDescriptor::new("phase", ParamType::Float, "initial phase").unit("rad").default(0.0))
        .output(PortDescriptor::scalar("out", "the waveform"))
        .source(SourceKind::Replayable)
        .resumable_at_offset()
        .rate_param("samp_rate"),
        BlockDescriptor::new(
            "noise_source",
            Category::Source,
            "Gaussian noise from a counter-based generator keyed by seed and item offset \
             (reproducible from any offset). For cf32 the real and imaginary parts each have \
             standard deviation amplitude/√2, so the total power is amplitude².",
        )
        .param(ParamDescriptor::item_type(&[Cf32, F32]))
        .param(ParamDescriptor::new("amplitude", ParamType::Float, "standard deviation (RMS amplitude)").default(1.0).min(0.0).settable())
        .param(ParamDescriptor::new("seed", ParamType::Int, "generator seed").default(0i64).min(0.0))
        .param(samp_rate().optional())
        .output(PortDescriptor::scalar("out", "noise"))
        .source(SourceKind::Replayable)
        .resumable_at_offset()
        .rate_param("samp_rate"),
        BlockDescriptor::new("vector_source", Category::Source, "Plays a list of items, once or repeated.")
            .param(ParamDescriptor::item_type(&ItemType::ALL))
            .param(ParamDescriptor::vlen())
            .param(ParamDescriptor::new("data", ParamType::Items, "the items (numbers, or complex literals for complex types); vlen scalars per item"))
            .param(ParamDescriptor::new("repeat", ParamType::Bool, "loop forever").default(false))
            .param(samp_rate().optional())
            .output(PortDescriptor::typed("out", "the items"))
            .source(SourceKind::Replayable)
            .resumable_at_offset()
            .rate_param("samp_rate"),
        BlockDescriptor::new(
            "file_source",
            Category::Source,
            "Reads items from a file: raw interleaved samples, or a SigMF recording \
             (`path` names the .sigmf-data or .sigmf-meta file; the sample rate and type come from the metadata \
             and must agree with `type`).",
        )
        .param(ParamDescriptor::item_type(&ItemType::ALL))
        .param(ParamDescriptor::vlen())
        .param(ParamDescriptor::new("path", ParamType::Path, "file to read"))
        .param(ParamDescriptor::new("format", ParamType::Enum(vec!["raw", "sigmf"]), "file format").default("raw"))
        .param(ParamDescriptor::new("repeat", ParamType::Bool, "loop at end of file").default(false))
        .param(samp_rate().optional())
        .output(PortDescriptor::typed("out", "file contents"))
        .source(SourceKind::Replayable)
        .rate_param("samp_rate")
        .files(|p| super::sinks::path_files(p, FileAccess::Read)),
        BlockDescriptor::new(
            "counter_source",
            Category::Source,
            "u64 items whose value is their own offset (0, 1, 2, …): a test fixture for order and loss.",
        )
        .param(ParamDescriptor::new("n", ParamType::Int, "number of items, 0 for endless").default(0i64).min(0.0))
        .param(samp_rate().optional())
        .output(PortDescriptor::fixed("out", U64, "the counter"))
        .source(SourceKind::Replayable)
        .resumable_at_offset()
        .rate_param("samp_rate"),
        BlockDescriptor::new(
            "message_strobe",
            Category::Source,
            "Posts a message every `period` seconds; after `count` messages (0: endless) it ends, \
             and end of stream travels along its message edges.",
        )
        .param(ParamDescriptor::new("message", ParamType::String, "text of the message").default("strobe"))
        .param(ParamDescriptor::new("period", ParamType::Float, "time between messages").unit("s").default(1.0).min(0.0).settable())
        .param(ParamDescriptor::new("count", ParamType::Int, "messages to send, 0 for endless").default(0i64).min(0.0))
        .param(ParamDescriptor::new("numbered", ParamType::Bool, "post maps `{id, message}` with `id` 1, 2, 3, … instead of the bare text (the ids a scalable segment acknowledges and de-duplicates by)").default(false))
        .param(ParamDescriptor::new("payload_bytes", ParamType::Int, "with `numbered`: add a `payload` of this many bytes").unit("B").default(0i64).min(0.0))
        .output(PortDescriptor::message("out", "the messages"))
        .source(SourceKind::Live),
    ]
}
