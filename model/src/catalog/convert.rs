//! Catalog entries: type conversions.

use super::*;
use ItemType::*;

pub(super) fn all() -> Vec<BlockDescriptor> {
    let mut v = vec![BlockDescriptor::new(
        "convert",
        Category::Convert,
        "Converts integer or float samples to f32 (real input) or cf32 (complex input), multiplying by \
         `scale`. Default scale maps full scale to ±1: 1/128 for i8 and cs8, 1/32768 for i16 and cs16, \
         1/2147483648 for i32, 1 for f32, f64 and cf64; u8 is offset binary (RTL-SDR): (x − 127.5)/128.",
    )
    .param(ParamDescriptor::new(
        "from",
        ParamType::ItemType(vec![I8, Cs8, I16, Cs16, I32, U8, F32, F64, Cf64]),
        "input item type",
    ))
    .param(ParamDescriptor::vlen())
    .param(ParamDescriptor::new("scale", ParamType::Float, "factor applied after conversion (default: full scale to ±1)").optional())
    .input(PortDescriptor::stream("in", TypeExpr::Param("from"), VlenExpr::Param("vlen"), "samples"))
    .output(PortDescriptor::stream("out", TypeExpr::FloatOf("from"), VlenExpr::Param("vlen"), "converted samples"))];
    for (kind, what) in [
        ("complex_to_real", "real part"),
        ("complex_to_imag", "imaginary part"),
        ("complex_to_mag", "magnitude |z|"),
        ("complex_to_mag_squared", "squared magnitude |z|²"),
        ("complex_to_arg", "phase angle atan2(im, re) in radians"),
    ] {
        v.push(
            BlockDescriptor::new(kind, Category::Convert, what)
                .param(ParamDescriptor::vlen())
                .input(PortDescriptor::stream(
                    "in",
                    TypeExpr::Fixed(Cf32),
                    VlenExpr::Param("vlen"),
                    "complex samples",
                ))
                .output(PortDescriptor::stream(
                    "out",
                    TypeExpr::Fixed(F32),
                    VlenExpr::Param("vlen"),
                    what,
                )),
        );
    }
    v.push(
        BlockDescriptor::new(
            "to_db",
            Category::Convert,
            "Decibels: 10·log10(x) for powers, 20·log10(|x|) for amplitudes, plus `offset`.",
        )
        .param(ParamDescriptor::vlen())
        .param(
            ParamDescriptor::new(
                "quantity",
                ParamType::Enum(vec!["power", "amplitude"]),
                "what the input measures",
            )
            .default("power"),
        )
        .param(
            ParamDescriptor::new("offset", ParamType::Float, "added to the result")
                .unit("dB")
                .default(0.0),
        )
        .input(PortDescriptor::stream(
            "in",
            TypeExpr::Fixed(F32),
            VlenExpr::Param("vlen"),
            "linear values",
        ))
        .output(PortDescriptor::stream(
            "out",
            TypeExpr::Fixed(F32),
            VlenExpr::Param("vlen"),
            "decibels",
        )),
    );
    // Every conversion maps each item on its own.
    v.into_iter().map(BlockDescriptor::item_for_item).collect()
}
