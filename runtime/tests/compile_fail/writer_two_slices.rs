// A writer hands out one writable slice at a time (they are the same region).
use flowmesh_runtime::buffer::channel;
use flowmesh_runtime::signal::Signal;
use std::sync::Arc;

fn main() {
    let sig = || Arc::new(Signal::new());
    let (mut w, _rs) = channel("x", 4096, 4, sig(), vec![sig()]).unwrap();
    let a = w.slice_mut(1);
    let b = w.slice_mut(1);
    a[0] = b[0];
}
