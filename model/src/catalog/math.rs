//! Catalog entries: arithmetic.

use super::*;
use ItemType::*;

const ARITH: &[ItemType] = &[F32, Cf32, F64, Cf64, I16, I32, U8, U16, U32, U64];

fn real_constant_check(p: &Params) -> Vec<(String, String, String)> {
    let t = p.item_type("type").unwrap_or(F32);
    match p.complex("constant") {
        Some(c) if !t.is_complex() && c.im != 0.0 => vec![(
            "constant".into(),
            format!(
                "is complex ({}) but the stream type {t} is real",
                crate::params::format_complex(c)
            ),
            "use a real constant, or a complex stream type such as cf32".into(),
        )],
        _ => vec![],
    }
}

pub(super) fn all() -> Vec<BlockDescriptor> {
    let constant = |what| ParamDescriptor::new("constant", ParamType::Complex, what).settable();
    let n_inputs = || {
        ParamDescriptor::new("num_inputs", ParamType::Int, "number of inputs")
            .default(2i64)
            .min(2.0)
            .max(32.0)
    };
    vec![
        BlockDescriptor::new(
            "multiply_const",
            Category::Math,
            "Multiplies every item by a constant.",
        )
        .param(ParamDescriptor::item_type(ARITH))
        .param(ParamDescriptor::vlen())
        .param(constant("the factor").default(1.0))
        .input(PortDescriptor::typed("in", "items"))
        .output(PortDescriptor::typed("out", "items × constant"))
        .item_for_item()
        .check(real_constant_check),
        BlockDescriptor::new(
            "add_const",
            Category::Math,
            "Adds a constant to every item.",
        )
        .param(ParamDescriptor::item_type(ARITH))
        .param(ParamDescriptor::vlen())
        .param(constant("the addend").default(0.0))
        .input(PortDescriptor::typed("in", "items"))
        .output(PortDescriptor::typed("out", "items + constant"))
        .item_for_item()
        .check(real_constant_check),
        BlockDescriptor::new(
            "add",
            Category::Math,
            "Adds its inputs item by item. All inputs must have the same sample rate.",
        )
        .param(ParamDescriptor::item_type(ARITH))
        .param(ParamDescriptor::vlen())
        .param(n_inputs())
        .input(PortDescriptor::typed("in", "addends").counted("num_inputs"))
        .output(PortDescriptor::typed("out", "the sum"))
        .item_for_item(),
        BlockDescriptor::new(
            "multiply",
            Category::Math,
            "Multiplies its inputs item by item. All inputs must have the same sample rate.",
        )
        .param(ParamDescriptor::item_type(ARITH))
        .param(ParamDescriptor::vlen())
        .param(n_inputs())
        .input(PortDescriptor::typed("in", "factors").counted("num_inputs"))
        .output(PortDescriptor::typed("out", "the product"))
        .item_for_item(),
    ]
}
