// A reader's slice may not be used after `finish` lets the writer lap it.
use flowmesh_runtime::buffer::channel;
use flowmesh_runtime::signal::Signal;
use std::sync::Arc;

fn main() {
    let sig = || Arc::new(Signal::new());
    let (mut w, mut rs) = channel("x", 4096, 4, sig(), vec![sig()]).unwrap();
    w.produce(1);
    let r = &mut rs[0];
    let n = r.available();
    let s = r.slice(n);
    r.finish();
    println!("{}", s[0]);
}
