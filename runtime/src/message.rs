//! Message passing: each block has one inbox; message outputs fan out to the
//! inboxes of their subscribers. End of stream travels as an [`InboxItem::Eos`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use flowmesh_model::Pmt;

use crate::signal::Signal;

/// Something delivered to a block outside its streams.
pub enum InboxItem {
    /// A message on message input `port`.
    Msg { port: usize, msg: Pmt },
    /// One sender of message input `port` has ended.
    Eos { port: usize },
    /// A runtime parameter change; the reply is the item offset where it applies.
    Set {
        name: String,
        value: Pmt,
        reply: mpsc::Sender<Result<u64, String>>,
    },
    /// A parameter read.
    Get {
        name: String,
        reply: mpsc::Sender<Result<Pmt, String>>,
    },
}

/// A block's inbox.
pub struct Inbox {
    q: Mutex<VecDeque<InboxItem>>,
    len: AtomicUsize,
    signal: Arc<Signal>,
}

impl Inbox {
    pub fn new(signal: Arc<Signal>) -> Self {
        Inbox {
            q: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            signal,
        }
    }
    pub fn push(&self, item: InboxItem) {
        self.q
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(item);
        self.len.fetch_add(1, Ordering::Release);
        self.signal.notify();
    }
    /// True when something is waiting (cheap, no lock).
    #[inline]
    pub fn pending(&self) -> bool {
        self.len.load(Ordering::Acquire) > 0
    }
    pub fn pop(&self) -> Option<InboxItem> {
        let item = self.q.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        if item.is_some() {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        item
    }
}

/// A message output: the inboxes (and their port numbers) it delivers to.
#[derive(Default)]
pub struct MsgOutPort {
    pub(crate) subscribers: Vec<(Arc<Inbox>, usize)>,
}

impl MsgOutPort {
    /// Delivers `msg` to every subscriber: a copy to each but the last,
    /// which gets `msg` itself (large messages are not copied needlessly).
    pub fn post(&self, msg: Pmt) {
        let Some(((last, last_port), rest)) = self.subscribers.split_last() else {
            return;
        };
        for (inbox, port) in rest {
            inbox.push(InboxItem::Msg {
                port: *port,
                msg: msg.clone(),
            });
        }
        last.push(InboxItem::Msg {
            port: *last_port,
            msg,
        });
    }
    pub fn finish(&self) {
        for (inbox, port) in &self.subscribers {
            inbox.push(InboxItem::Eos { port: *port });
        }
    }
}
