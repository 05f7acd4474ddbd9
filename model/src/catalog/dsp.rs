//! Catalog entries: filters and spectrum blocks.

use super::*;
use ItemType::*;

fn windows() -> ParamType {
    ParamType::Enum(vec![
        "hamming",
        "hann",
        "blackman",
        "blackman_harris",
        "rectangular",
    ])
}

fn taps_check(p: &Params) -> Vec<(String, String, String)> {
    let mut out = vec![];
    if let Some(Pmt::Vector(v)) = p.get("taps") {
        if v.is_empty() {
            out.push((
                "taps".into(),
                "must not be empty".into(),
                "give at least one tap".into(),
            ));
        }
        let t = p.item_type("type").unwrap_or(Cf32);
        if !t.is_complex() && matches!(v, crate::TypedVec::Cf64(c) if c.iter().any(|c| c.im != 0.0))
        {
            out.push((
                "taps".into(),
                format!("are complex but the stream type {t} is real"),
                "use real taps, or type: cf32".into(),
            ));
        }
    }
    out
}

fn lowpass_check(p: &Params) -> Vec<(String, String, String)> {
    let (Some(fs), Some(fc)) = (p.f64("samp_rate"), p.f64("cutoff")) else {
        return vec![];
    };
    if fc >= fs / 2.0 {
        return vec![(
            "cutoff".into(),
            format!(
                "must be below half the sample rate ({}), got {fc}",
                fs / 2.0
            ),
            "lower the cutoff or raise samp_rate".into(),
        )];
    }
    vec![]
}

/// `fir_filter` reads `taps − 1` earlier inputs and carries nothing else
/// over (its decimation phase follows the input count, which a resume
/// aligns). `freq_xlating_fir` reads the same, and its mixer phase follows
/// its output index (declared `output_indexed`); `rational_resampler` reads
/// nothing before its output's window and its polyphase branch follows the
/// output index, which a start on a multiple of `D/gcd(I, D)` continues.
fn fir_history(p: &Params) -> Option<u64> {
    Some(p.complex_list("taps")?.len().saturating_sub(1) as u64)
}

/// `low_pass_filter` reads `taps − 1` earlier inputs, the tap count being
/// the one its design gets ([`crate::firdes::compute_ntaps`]).
fn low_pass_history(p: &Params) -> Option<u64> {
    let att = crate::firdes::window_max_attenuation(p.str("window").unwrap_or("hamming"))?;
    let ntaps =
        crate::firdes::compute_ntaps(att, p.f64("samp_rate")?, p.f64("transition")?).ok()?;
    Some(ntaps.saturating_sub(1) as u64)
}

fn resampler_check(p: &Params) -> Vec<(String, String, String)> {
    taps_check(p)
}

pub(super) fn all() -> Vec<BlockDescriptor> {
    let decimation = || {
        ParamDescriptor::new(
            "decimation",
            ParamType::Int,
            "keep one output per `decimation` inputs",
        )
        .default(1i64)
        .min(1.0)
        .max(65536.0)
    };
    let samp_rate = || {
        ParamDescriptor::new("samp_rate", ParamType::Float, "input sample rate")
            .unit("Hz")
            .min(0.0)
    };
    let fft_size = || {
        ParamDescriptor::new("fft_size", ParamType::Int, "FFT length (bins)")
            .default(1024i64)
            .min(2.0)
            .max(1048576.0)
            .power_of_two()
    };
    vec![
        BlockDescriptor::new(
            "fir_filter",
            Category::Filter,
            "FIR filter with real or complex taps and decimation: the convolution y[i] = Σ_k taps[k]·x[i·D − k] \
             (GNU Radio's fir_filter_xxx, including its initial zero history).",
        )
        .param(ParamDescriptor::item_type(&[Cf32, F32]))
        .param(ParamDescriptor::new("taps", ParamType::ComplexList, "filter taps (real numbers or complex literals)").settable())
        .param(decimation())
        .input(PortDescriptor::scalar("in", "samples"))
        .output(PortDescriptor::scalar("out", "filtered samples"))
        .rate(Rate::decim("decimation"))
        .check(taps_check)
        .history(fir_history),
        BlockDescriptor::new(
            "low_pass_filter",
            Category::Filter,
            "Windowed-sinc low-pass FIR designed like GNU Radio's firdes.low_pass (Hamming window by default), with decimation.",
        )
        .param(ParamDescriptor::item_type(&[Cf32, F32]))
        .param(samp_rate())
        .param(ParamDescriptor::new("cutoff", ParamType::Float, "cutoff frequency (−6 dB)").unit("Hz").min(1e-9).settable())
        .param(ParamDescriptor::new("transition", ParamType::Float, "transition width").unit("Hz").min(1e-9).settable())
        .param(ParamDescriptor::new("window", windows(), "design window").default("hamming"))
        .param(ParamDescriptor::new("gain", ParamType::Float, "passband gain").default(1.0))
        .param(decimation())
        .input(PortDescriptor::scalar("in", "samples"))
        .output(PortDescriptor::scalar("out", "filtered samples"))
        .rate(Rate::decim("decimation"))
        .rate_param("samp_rate")
        .check(lowpass_check)
        .history(low_pass_history),
        BlockDescriptor::new(
            "freq_xlating_fir",
            Category::Filter,
            "Shifts `center_freq` down to 0 Hz, filters and decimates (GNU Radio's freq_xlating_fir_filter_ccf/ccc: \
             the N taps are rotated to center_freq, taps[k]·exp(jω₀k) with ω₀ = 2π·center_freq/fs, and output n \
             is mixed by exp(−jω₀·(D·n + (N−1)/2)); ω₀ in single precision, as GNU Radio has it).",
        )
        .param(ParamDescriptor::new("taps", ParamType::ComplexList, "low-pass prototype taps"))
        .param(ParamDescriptor::new("center_freq", ParamType::Float, "frequency moved to 0 Hz").unit("Hz").default(0.0).settable())
        .param(samp_rate())
        .param(decimation())
        .input(PortDescriptor::fixed("in", Cf32, "samples"))
        .output(PortDescriptor::fixed("out", Cf32, "shifted, filtered samples"))
        .rate(Rate::decim("decimation"))
        .rate_param("samp_rate")
        .check(taps_check)
        .history(fir_history)
        .output_indexed(),
        BlockDescriptor::new(
            "rational_resampler",
            Category::Filter,
            "Polyphase resampler by interpolation/decimation (GNU Radio's rational_resampler). Without taps, \
             reduces I/D by their gcd and designs a Kaiser low-pass with fractional bandwidth `fractional_bw` as \
             GNU Radio does. As GNU Radio's, it has no zero history: its first output needs ⌈taps/I⌉ inputs, and \
             N inputs give ⌈(N − ⌈taps/I⌉ + 1)·I/D⌉ outputs; tags move to round(offset·I/D).",
        )
        .param(ParamDescriptor::item_type(&[Cf32, F32]))
        .param(ParamDescriptor::new("interpolation", ParamType::Int, "interpolation factor").default(1i64).min(1.0).max(65536.0))
        .param(decimation())
        .param(ParamDescriptor::new("taps", ParamType::ComplexList, "prototype filter taps (default: designed)").optional())
        .param(ParamDescriptor::new("fractional_bw", ParamType::Float, "passband as a fraction of the output Nyquist band").default(0.4).min(0.01).max(0.499))
        .input(PortDescriptor::scalar("in", "samples"))
        .output(PortDescriptor::scalar("out", "resampled samples"))
        .rate(Rate {
            interp: RateExpr::param("interpolation"),
            decim: RateExpr::param("decimation"),
        })
        .check(resampler_check)
        .history(|_| Some(0)),
        BlockDescriptor::new(
            "fft",
            Category::Spectrum,
            "Windowed FFT of consecutive blocks of `fft_size` samples, one vector item per block.",
        )
        .param(ParamDescriptor::item_type(&[Cf32, F32]))
        .param(fft_size())
        .param(ParamDescriptor::new("window", windows(), "window applied before the FFT").default("blackman_harris"))
        .param(ParamDescriptor::new("shift", ParamType::Bool, "put 0 Hz in the middle bin").default(true))
        .input(PortDescriptor::scalar("in", "samples"))
        .output(PortDescriptor::stream("out", TypeExpr::Fixed(Cf32), VlenExpr::Param("fft_size"), "spectra"))
        .rate(Rate::decim("fft_size")),
        BlockDescriptor::new(
            "psd",
            Category::Spectrum,
            "Averaged power spectrum in dB: `average` windowed FFTs averaged in linear power, scaled so a \
             full-scale complex tone on a bin centre reads 0 dB; 0 Hz in the middle bin.",
        )
        .param(fft_size())
        .param(ParamDescriptor::new("average", ParamType::Int, "FFTs averaged per output").default(16i64).min(1.0).max(65536.0))
        .param(ParamDescriptor::new("window", windows(), "window applied before each FFT").default("blackman_harris"))
        .input(PortDescriptor::fixed("in", Cf32, "samples"))
        .output(PortDescriptor::stream("out", TypeExpr::Fixed(F32), VlenExpr::Param("fft_size"), "power spectra in dB"))
        .rate(Rate {
            interp: RateExpr::one(),
            decim: RateExpr { constant: 1, params: vec!["fft_size", "average"] },
        }),
        BlockDescriptor::new(
            "threshold_detector",
            Category::Spectrum,
            "Finds carriers in dB power spectra: runs of bins more than `threshold` dB above the noise floor \
             (the median bin). Posts a message when a carrier appears ({event: start, id, center_freq, bandwidth, \
             power_db, snr_db, offset}) and when it disappears ({event: end, id, …}); id numbers carriers 1, 2, 3… \
             in order of start and the end of a carrier carries the id of its start; offset is the input sample \
             offset of the spectrum's first sample.",
        )
        .param(ParamDescriptor::new("fft_size", ParamType::Int, "bins per spectrum").default(1024i64).min(2.0).max(1048576.0))
        .param(ParamDescriptor::new("threshold", ParamType::Float, "detection threshold above the noise floor").unit("dB").default(6.0).min(0.0).settable())
        .param(ParamDescriptor::new("samp_rate", ParamType::Float, "sample rate of the analysed signal").unit("Hz").min(0.0))
        .param(ParamDescriptor::new("center_freq", ParamType::Float, "RF frequency of the middle bin").unit("Hz").default(0.0))
        .param(ParamDescriptor::new("spectrum_samples", ParamType::Int, "input samples per spectrum (fft_size × average of the psd)").default(0i64).min(0.0))
        .input(PortDescriptor::stream("in", TypeExpr::Fixed(F32), VlenExpr::Param("fft_size"), "power spectra in dB"))
        .output(PortDescriptor::message("detections", "carrier start/end events"))
        .tags(TagPolicy::None),
        BlockDescriptor::new(
            "detection_snippet",
            Category::Spectrum,
            "Cuts the IQ samples of each detection out of the stream: for a threshold_detector carrier with start \
             offset s and end offset e, the samples [s − pre, e + post) (clamped to the stream, at most max_len), \
             posted once its end has arrived and the stream has passed e + post (or ended) as {id, center_freq, \
             bandwidth, stream_center_freq, samp_rate, start, end, offset (of the first sample), samples (cf32 \
             vector), truncated (cut at max_len), clamped (cut at the stream's start or end, or no end event), lost \
             (samples at the front already gone from history when the start arrived late)}. Messages come out in \
             the order of the end events, the same whatever the chunking.",
        )
        .param(ParamDescriptor::new("samp_rate", ParamType::Float, "sample rate of the IQ stream").unit("Hz").min(0.0))
        .param(ParamDescriptor::new("center_freq", ParamType::Float, "RF frequency of the IQ stream's 0 Hz").unit("Hz").default(0.0))
        .param(ParamDescriptor::new("pre", ParamType::Int, "samples kept before a detection's start offset").default(0i64).min(0.0))
        .param(ParamDescriptor::new("post", ParamType::Int, "samples kept after a detection's end offset").default(0i64).min(0.0))
        .param(ParamDescriptor::new("max_len", ParamType::Int, "most samples per snippet (longer ones are cut and marked truncated; at most 4194304, 32 MiB, so a snippet stays well under the 64 MiB message limit)").default(1i64 << 20).min(1.0).max(4194304.0))
        .param(ParamDescriptor::new(
            "history",
            ParamType::Int,
            "samples of the stream kept for start events that arrive after the stream passed them (above the \
             detector's lag plus pre nothing is lost)",
        ).default(1i64 << 20).min(0.0).max((1u64 << 32) as f64))
        .input(PortDescriptor::fixed("in", Cf32, "the IQ stream the detector analysed"))
        .input(PortDescriptor::message("detections", "the threshold_detector's start/end events"))
        .output(PortDescriptor::message("out", "one snippet per detection"))
        .rate_param("samp_rate")
        .tags(TagPolicy::None),
        BlockDescriptor::new(
            "snippet_analyzer",
            Category::Spectrum,
            "Measures each detection_snippet message: mixes the carrier to 0 Hz (phase from the absolute offset), \
             low-pass filters (cutoff span·bandwidth/2) and decimates, then reports power_dbfs (whole snippet), \
             band_power_dbfs, noise_density_dbfs_hz, snr_db (carrier over noise within ±bandwidth/2), \
             occupied_bandwidth (99 %, noise subtracted) and frequency (Hann periodogram peak with parabolic \
             interpolation, absolute Hz), with the snippet's metadata but not its samples. Exactly one output per \
             input (an `error` field when a snippet cannot be measured).",
        )
        .param(ParamDescriptor::new("span", ParamType::Float, "analysis band as a multiple of the detection bandwidth").default(4.0).min(2.5).max(1e6))
        .param(ParamDescriptor::new("min_bandwidth", ParamType::Float, "floor on the bandwidth used for the analysis").unit("Hz").default(0.0).min(0.0))
        .param(ParamDescriptor::new("max_decimation", ParamType::Int, "largest decimation before the analysis").default(1024i64).min(1.0).max(1048576.0))
        .input(PortDescriptor::message("in", "detection_snippet messages"))
        .output(PortDescriptor::message("out", "one measurement map per snippet"))
        .tags(TagPolicy::None),
    ]
}
