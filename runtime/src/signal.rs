//! Wake-ups between scheduler threads: a block that produces or consumes
//! notifies the thread that runs the block on the other side of the buffer.
//! A thread with nothing to do parks until notified (no spinning).

use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Instant;

/// The thread to wake for one block. Set once the thread exists; a notify
/// before that is dropped (the thread will poll all its blocks when it starts).
#[derive(Debug, Default)]
pub struct Signal {
    thread: OnceLock<Thread>,
}

impl Signal {
    pub fn new() -> Self {
        Signal::default()
    }
    /// Binds the signal to the current thread.
    pub fn bind_current(&self) {
        let _ = self.thread.set(std::thread::current());
    }
    #[inline]
    pub fn notify(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// Parks the current thread until notified or until `deadline`.
pub fn park(deadline: Option<Instant>) {
    match deadline {
        None => std::thread::park(),
        Some(d) => {
            let now = Instant::now();
            if d > now {
                std::thread::park_timeout(d - now);
            }
        }
    }
}
