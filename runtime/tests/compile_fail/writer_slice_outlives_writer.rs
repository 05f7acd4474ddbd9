// A writer's slice may not outlive it.
use flowmesh_runtime::buffer::channel;
use flowmesh_runtime::signal::Signal;
use std::sync::Arc;

fn main() {
    let sig = || Arc::new(Signal::new());
    let (mut w, rs) = channel("x", 4096, 4, sig(), vec![sig()]).unwrap();
    let s: &'static mut [u8] = w.slice_mut(1);
    drop(w);
    drop(rs);
    s[0] = 1;
}
