// A writer's slice may not be written after `produce` hands it to readers.
use flowmesh_runtime::buffer::channel;
use flowmesh_runtime::signal::Signal;
use std::sync::Arc;

fn main() {
    let sig = || Arc::new(Signal::new());
    let (mut w, _rs) = channel("x", 4096, 4, sig(), vec![sig()]).unwrap();
    let s = w.slice_mut(1);
    w.produce(1);
    s[0] = 1;
}
