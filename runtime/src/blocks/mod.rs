//! Block implementations, one module per family, and [`build`]: the registry
//! from catalog kind to implementation.
//!
//! Every implementation states its own ports; a test checks them against the
//! catalog for every kind, in both directions.

use flowmesh_model::{ItemType, Params, StreamType};
use num_complex::{Complex, Complex64};

use crate::block::BuiltBlock;

pub mod convert;
pub mod debug;
pub mod file;
pub mod filter;
pub mod flow;
pub mod math;
pub mod network;
pub mod signal;
pub mod sinks;
pub mod sources;
pub mod spectrum;

/// What blocks may need from the process they run in.
#[derive(Clone)]
pub struct Env {
    /// Network environment for edge blocks.
    pub net: std::sync::Arc<crate::net::env::NetEnv>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            net: crate::net::env::NetEnv::in_process(),
        }
    }
}

/// Builds block `kind` from coerced parameters in a default (in-process)
/// environment. The error is a sentence for the user (it is reported with
/// the block's name).
pub fn build(kind: &str, p: &Params) -> Result<BuiltBlock, String> {
    build_in(kind, p, &Env::default())
}

/// Builds block `kind` in environment `env`.
pub fn build_in(kind: &str, p: &Params, env: &Env) -> Result<BuiltBlock, String> {
    let b = match kind {
        "net_sink" => network::net_sink(p, env)?,
        "net_source" => network::net_source(p, env)?,
        "net_message_sink" => network::net_message_sink(p, env)?,
        "net_message_source" => network::net_message_source(p, env)?,
        "stream_checker" => network::stream_checker(p)?,
        "null_source" => sources::null_source(p)?,
        "counter_source" => sources::counter_source(p)?,
        "vector_source" => sources::vector_source(p)?,
        "null_sink" => sinks::null_sink(p)?,
        "vector_sink" => sinks::vector_sink(p)?,
        "head" => flow::head(p)?,
        "throttle" => flow::throttle(p)?,
        "tagger" => flow::tagger(p)?,
        "latency_probe" => flow::latency_probe(p)?,
        "multiply_const" => math::multiply_const(p)?,
        "add_const" => math::add_const(p)?,
        "add" => math::add(p)?,
        "multiply" => math::multiply(p)?,
        "signal_source" => signal::signal_source(p)?,
        "noise_source" => signal::noise_source(p)?,
        "file_source" => file::file_source(p)?,
        "file_sink" => file::file_sink(p)?,
        "convert" => convert::convert(p)?,
        "complex_to_real" => convert::complex_to_real(p)?,
        "complex_to_imag" => convert::complex_to_imag(p)?,
        "complex_to_mag" => convert::complex_to_mag(p)?,
        "complex_to_mag_squared" => convert::complex_to_mag_squared(p)?,
        "complex_to_arg" => convert::complex_to_arg(p)?,
        "to_db" => convert::to_db(p)?,
        "fir_filter" => filter::fir_filter(p)?,
        "low_pass_filter" => filter::low_pass_filter(p)?,
        "freq_xlating_fir" => filter::freq_xlating_fir(p)?,
        "rational_resampler" => filter::rational_resampler(p)?,
        "fft" => spectrum::fft(p)?,
        "psd" => spectrum::psd(p)?,
        "threshold_detector" => spectrum::threshold_detector(p)?,
        "tag_debug" => debug::tag_debug(p)?,
        "message_debug" => debug::message_debug(p)?,
        "rate_probe" => debug::rate_probe(p)?,
        "jsonl_sink" => debug::jsonl_sink(p)?,
        "message_strobe" => debug::message_strobe(p)?,
        _ => return Err(format!("block kind `{kind}` has no implementation")),
    };
    Ok(b)
}

/// Every kind [`build`] knows (checked against the catalog by a test).
pub const KINDS: &[&str] = &[
    "net_sink",
    "net_source",
    "net_message_sink",
    "net_message_source",
    "stream_checker",
    "null_source",
    "counter_source",
    "vector_source",
    "null_sink",
    "vector_sink",
    "head",
    "throttle",
    "tagger",
    "latency_probe",
    "multiply_const",
    "add_const",
    "add",
    "multiply",
    "signal_source",
    "noise_source",
    "file_source",
    "file_sink",
    "convert",
    "complex_to_real",
    "complex_to_imag",
    "complex_to_mag",
    "complex_to_mag_squared",
    "complex_to_arg",
    "to_db",
    "fir_filter",
    "low_pass_filter",
    "freq_xlating_fir",
    "rational_resampler",
    "fft",
    "psd",
    "threshold_detector",
    "tag_debug",
    "message_debug",
    "rate_probe",
    "jsonl_sink",
    "message_strobe",
];

/// The `type`/`vlen` stream type of a block.
pub fn stream_type(p: &Params) -> StreamType {
    StreamType {
        item: p.item_type("type").unwrap_or(ItemType::F32),
        vlen: p.u64("vlen").unwrap_or(1).max(1) as usize,
    }
}

/// Numeric item types that a complex constant converts to.
pub trait FromComplex: Copy {
    fn from_c64(c: Complex64) -> Self;
}
macro_rules! from_complex_real {
    ($($t:ty),*) => {$(
        impl FromComplex for $t {
            fn from_c64(c: Complex64) -> Self { c.re as $t }
        }
    )*};
}
from_complex_real!(f32, f64, i8, i16, i32, u8, u16, u32, u64);
impl FromComplex for Complex<f32> {
    fn from_c64(c: Complex64) -> Self {
        Complex::new(c.re as f32, c.im as f32)
    }
}
impl FromComplex for Complex<f64> {
    fn from_c64(c: Complex64) -> Self {
        c
    }
}
impl FromComplex for Complex<i8> {
    fn from_c64(c: Complex64) -> Self {
        Complex::new(c.re as i8, c.im as i8)
    }
}
impl FromComplex for Complex<i16> {
    fn from_c64(c: Complex64) -> Self {
        Complex::new(c.re as i16, c.im as i16)
    }
}

/// Calls `$f::<T>($args)` with `T` the Rust type of item type `$t`.
#[macro_export]
macro_rules! dispatch_item {
    ($t:expr, $f:ident ( $($a:expr),* )) => {{
        use num_complex::Complex;
        match $t {
            $crate::ItemType::F32 => $f::<f32>($($a),*),
            $crate::ItemType::F64 => $f::<f64>($($a),*),
            $crate::ItemType::Cf32 => $f::<Complex<f32>>($($a),*),
            $crate::ItemType::Cf64 => $f::<Complex<f64>>($($a),*),
            $crate::ItemType::I8 => $f::<i8>($($a),*),
            $crate::ItemType::Cs8 => $f::<Complex<i8>>($($a),*),
            $crate::ItemType::I16 => $f::<i16>($($a),*),
            $crate::ItemType::Cs16 => $f::<Complex<i16>>($($a),*),
            $crate::ItemType::I32 => $f::<i32>($($a),*),
            $crate::ItemType::U8 => $f::<u8>($($a),*),
            $crate::ItemType::U16 => $f::<u16>($($a),*),
            $crate::ItemType::U32 => $f::<u32>($($a),*),
            $crate::ItemType::U64 => $f::<u64>($($a),*),
        }
    }};
}
