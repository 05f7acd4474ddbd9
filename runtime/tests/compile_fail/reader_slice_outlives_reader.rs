// The example of issue 10 item 5: a reader's slice may not outlive it.
use flowmesh_runtime::buffer::channel;
use flowmesh_runtime::signal::Signal;
use std::sync::Arc;

fn main() {
    let sig = || Arc::new(Signal::new());
    let (w, mut rs) = channel("x", 4096, 4, sig(), vec![sig()]).unwrap();
    let r = rs.remove(0);
    let s: &'static [u8] = r.slice(0);
    drop(w);
    drop(r);
    println!("{}", s.len());
}
