// A reader's slice may not be used after `consume` gives its items back.
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
    r.consume(n);
    println!("{}", s[0]);
}
