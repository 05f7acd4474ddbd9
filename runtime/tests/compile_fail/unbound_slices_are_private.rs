// The slices with a caller-chosen lifetime are crate-private (`WorkIo` only).
use flowmesh_runtime::buffer::channel;
use flowmesh_runtime::signal::Signal;
use std::sync::Arc;

fn main() {
    let sig = || Arc::new(Signal::new());
    let (w, rs) = channel("x", 4096, 4, sig(), vec![sig()]).unwrap();
    let a: &'static [u8] = unsafe { rs[0].slice_unbound(1) };
    let b: &'static mut [u8] = unsafe { w.slice_mut_unbound(1) };
    b[0] = a[0];
}
