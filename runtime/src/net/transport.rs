//! Transports for network edges, behind one trait: real sockets (TCP, or a
//! Unix-domain socket between processes of one host: an address
//! `unix:/path`), and an in-process pipe so a multi-segment graph can run
//! inside one test.
//!
//! A connection is used in two phases. The handshake runs on helper threads
//! in blocking mode with timeouts ([`Stream`]); the established connection
//! is then handed to the edge block in non-blocking mode ([`Conn`]), whose
//! readiness changes wake the scheduler thread running that block — the
//! block itself never blocks.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::epoll;

use crate::signal::Signal;

/// An established connection in non-blocking mode.
pub trait Conn: Send {
    /// Reads what is there; `WouldBlock` when nothing is; `Ok(0)` at end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes what fits; `WouldBlock` when nothing does.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// `signal` is notified whenever the connection may have become
    /// readable or writable (or closed).
    fn set_waker(&mut self, signal: Arc<Signal>) -> io::Result<()>;
    /// Asks for the next wake-up: when the connection becomes readable
    /// (`read`) or writable (`write`), or closes. A TCP connection's
    /// registration is one-shot, so a block calls this each time it is about
    /// to wait on the socket; not calling it means "do not wake me for this
    /// connection" (the block then relies on its own deadline).
    fn arm(&mut self, read: bool, write: bool) -> io::Result<()> {
        let _ = (read, write);
        Ok(())
    }
    /// The peer's address, as this side sees it.
    fn peer_addr(&self) -> String;
    /// Half-closes: no more writes; reads continue until the peer closes.
    fn shutdown_write(&mut self);
}

/// A connection in blocking mode, for the handshake.
pub trait Stream: Read + Write + Send {
    fn set_timeout(&mut self, t: Option<Duration>) -> io::Result<()>;
    fn peer_addr(&self) -> String;
    fn local_addr(&self) -> String;
    /// Switches to non-blocking mode for the data phase.
    fn into_conn(self: Box<Self>) -> io::Result<Box<dyn Conn>>;
}

/// Called with each accepted connection (on an acceptor thread).
pub type AcceptFn = Arc<dyn Fn(Box<dyn Stream>) + Send + Sync>;

/// A way to reach other segments.
pub trait Transport: Send + Sync {
    /// Accepts connections on `addr`; returns the bound address.
    fn listen(&self, addr: &str, accept: AcceptFn) -> io::Result<String>;
    /// Connects to `addr`.
    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<Box<dyn Stream>>;
}

// ---------------------------------------------------------------- TCP

/// A connection's entry in the reactor: whom to wake, and whether its
/// one-shot registration is armed.
struct Registration {
    signal: Arc<Signal>,
    armed: Arc<AtomicBool>,
}

/// One epoll thread per process: maps readiness to signals. Registrations
/// are one-shot: after an event the socket is silent until its block asks
/// again ([`Conn::arm`]), so a block that is busy anyway costs neither the
/// reactor a wake-up nor the peer's sending thread the wake-up call inside
/// the kernel.
struct Reactor {
    epoll: OwnedFd,
    regs: Mutex<HashMap<u64, Registration>>,
    next: AtomicU64,
}

fn reactor() -> io::Result<&'static Reactor> {
    static R: OnceLock<Result<Reactor, String>> = OnceLock::new();
    static STARTED: Once = Once::new();
    let r = R
        .get_or_init(|| {
            Ok(Reactor {
                epoll: epoll::create(epoll::CreateFlags::CLOEXEC)
                    .map_err(|e| format!("cannot create the network reactor: {e}"))?,
                regs: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
            })
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))?;
    STARTED.call_once(|| {
        if let Err(e) = std::thread::Builder::new()
            .name("flowmesh-reactor".into())
            .spawn(move || r.run())
        {
            tracing::error!("cannot start the network reactor: {e}");
        }
    });
    Ok(r)
}

impl Reactor {
    fn run(&self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        loop {
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!("network reactor stopped: {e}");
                    return;
                }
            }
            let regs = self.regs.lock().unwrap_or_else(|e| e.into_inner());
            for ev in &events {
                if let Some(reg) = regs.get(&ev.data.u64()) {
                    reg.armed.store(false, Ordering::Release);
                    reg.signal.notify();
                }
            }
        }
    }
}

/// A connected socket: TCP, or Unix-domain between processes of one host.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_nonblocking(on),
            Sock::Unix(s) => s.set_nonblocking(on),
        }
    }
    fn shutdown_write(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write_vectored(bufs),
            Sock::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket connection registered with the reactor.
pub struct SockConn {
    stream: Sock,
    token: Option<u64>,
    armed: Arc<AtomicBool>,
    /// The interest of the last arming: (read, write).
    interest: (bool, bool),
    peer: String,
}

impl SockConn {
    fn flags(read: bool, write: bool) -> epoll::EventFlags {
        let mut f = epoll::EventFlags::ONESHOT | epoll::EventFlags::RDHUP;
        if read {
            f |= epoll::EventFlags::IN;
        }
        if write {
            f |= epoll::EventFlags::OUT;
        }
        f
    }
}

impl Conn for SockConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }
    fn set_waker(&mut self, signal: Arc<Signal>) -> io::Result<()> {
        let r = reactor()?;
        let token = match self.token {
            Some(t) => t,
            None => {
                let t = r.next.fetch_add(1, Ordering::Relaxed);
                self.armed.store(true, Ordering::Release);
                self.interest = (true, true);
                epoll::add(
                    &r.epoll,
                    &self.stream,
                    epoll::EventData::new_u64(t),
                    Self::flags(true, true),
                )?;
                self.token = Some(t);
                t
            }
        };
        r.regs.lock().unwrap_or_else(|e| e.into_inner()).insert(
            token,
            Registration {
                signal: signal.clone(),
                armed: self.armed.clone(),
            },
        );
        // Make sure the block looks at least once.
        signal.notify();
        Ok(())
    }
    fn arm(&mut self, read: bool, write: bool) -> io::Result<()> {
        let Some(token) = self.token else {
            return Ok(());
        };
        if self.armed.load(Ordering::Acquire) && self.interest == (read, write) {
            return Ok(());
        }
        // Armed before the call: an event right after it clears the flag
        // again, so the next arm() is not skipped.
        self.armed.store(true, Ordering::Release);
        self.interest = (read, write);
        let r = reactor()?;
        epoll::modify(
            &r.epoll,
            &self.stream,
            epoll::EventData::new_u64(token),
            Self::flags(read, write),
        )?;
        Ok(())
    }
    fn peer_addr(&self) -> String {
        self.peer.clone()
    }
    fn shutdown_write(&mut self) {
        self.stream.shutdown_write();
    }
}

impl Drop for SockConn {
    fn drop(&mut self) {
        if let (Some(t), Ok(r)) = (self.token, reactor()) {
            let _ = epoll::delete(&r.epoll, &self.stream);
            r.regs.lock().unwrap_or_else(|e| e.into_inner()).remove(&t);
        }
    }
}

impl Stream for TcpStream {
    fn set_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
    fn peer_addr(&self) -> String {
        TcpStream::peer_addr(self)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }
    fn local_addr(&self) -> String {
        TcpStream::local_addr(self)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }
    fn into_conn(self: Box<Self>) -> io::Result<Box<dyn Conn>> {
        let peer = Stream::peer_addr(&*self);
        registered(Sock::Tcp(*self), peer)
    }
}

fn registered(stream: Sock, peer: String) -> io::Result<Box<dyn Conn>> {
    stream.set_nonblocking(true)?;
    Ok(Box::new(SockConn {
        stream,
        token: None,
        armed: Arc::new(AtomicBool::new(false)),
        interest: (false, false),
        peer,
    }))
}

/// The path of a `unix:/path` address.
fn unix_path(addr: &str) -> Option<&str> {
    addr.strip_prefix("unix:")
}

/// The `unix:/path` address of a named Unix socket address.
fn unix_name(a: std::os::unix::net::SocketAddr) -> Option<String> {
    a.as_pathname().map(|p| format!("unix:{}", p.display()))
}

impl Stream for UnixStream {
    fn set_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
    fn peer_addr(&self) -> String {
        // The connecting side of a Unix socket is unnamed; name the path.
        UnixStream::peer_addr(self)
            .ok()
            .and_then(unix_name)
            .or_else(|| UnixStream::local_addr(self).ok().and_then(unix_name))
            .unwrap_or_else(|| "unix:?".into())
    }
    fn local_addr(&self) -> String {
        UnixStream::local_addr(self)
            .ok()
            .and_then(unix_name)
            .unwrap_or_else(|| "unix:?".into())
    }
    fn into_conn(self: Box<Self>) -> io::Result<Box<dyn Conn>> {
        let peer = Stream::peer_addr(&*self);
        registered(Sock::Unix(*self), peer)
    }
}

/// Accepts connections (`next`) on a thread of their own for as long as the
/// process runs, and runs `accept` for each on its own short-lived thread,
/// so a slow or hostile peer cannot hold up the others.
fn accept_forever<S: Stream + 'static>(
    mut next: impl FnMut() -> io::Result<S> + Send + 'static,
    accept: AcceptFn,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("flowmesh-accept".into())
        .spawn(move || loop {
            match next() {
                Ok(s) => {
                    let accept = accept.clone();
                    let _ = std::thread::Builder::new()
                        .name("flowmesh-hello".into())
                        .spawn(move || accept(Box::new(s)));
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            }
        })?;
    Ok(())
}

/// Sockets: TCP between hosts (or processes of one host), and Unix-domain
/// sockets for addresses `unix:/path` (processes of one host).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tcp;

impl Transport for Tcp {
    fn listen(&self, addr: &str, accept: AcceptFn) -> io::Result<String> {
        if let Some(path) = unix_path(addr) {
            // A socket file left by an earlier run is replaced, but not one
            // that a running process still listens on.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{path}: another process listens on this socket"),
                    ));
                }
                std::fs::remove_file(path)?;
            }
            let l = UnixListener::bind(path)?;
            accept_forever(move || l.accept().map(|(s, _)| s), accept)?;
            return Ok(addr.to_string());
        }
        let l = TcpListener::bind(addr)?;
        let bound = l.local_addr()?.to_string();
        accept_forever(
            move || {
                let (s, _) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok(s)
            },
            accept,
        )?;
        Ok(bound)
    }

    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<Box<dyn Stream>> {
        if let Some(path) = unix_path(addr) {
            // Connecting to a local socket does not wait on a network.
            let _ = timeout;
            return Ok(Box::new(UnixStream::connect(path)?));
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(Box::new(s));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

// ---------------------------------------------------------------- in-process

/// One direction of an in-process connection.
struct Pipe {
    state: Mutex<PipeState>,
    cv: Condvar,
}

struct PipeState {
    buf: VecDeque<u8>,
    cap: usize,
    closed: bool,
    /// Woken when data arrives (the reading side) or space frees (the writing side).
    reader: Option<Arc<Signal>>,
    writer: Option<Arc<Signal>>,
}

impl Pipe {
    fn new(cap: usize) -> Arc<Pipe> {
        Arc::new(Pipe {
            state: Mutex::new(PipeState {
                buf: VecDeque::new(),
                cap,
                closed: false,
                reader: None,
                writer: None,
            }),
            cv: Condvar::new(),
        })
    }
}

/// One end of an in-process connection: reads `rx`, writes `tx`.
pub struct MemConn {
    rx: Arc<Pipe>,
    tx: Arc<Pipe>,
    blocking: bool,
    timeout: Option<Duration>,
    peer: String,
    local: String,
}

/// A connected pair of in-process ends, each `cap` bytes per direction.
pub fn mem_pair(cap: usize, a: &str, b: &str) -> (MemConn, MemConn) {
    let (p, q) = (Pipe::new(cap), Pipe::new(cap));
    (
        MemConn {
            rx: p.clone(),
            tx: q.clone(),
            blocking: true,
            timeout: None,
            peer: b.into(),
            local: a.into(),
        },
        MemConn {
            rx: q,
            tx: p,
            blocking: true,
            timeout: None,
            peer: a.into(),
            local: b.into(),
        },
    )
}

fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

impl MemConn {
    fn wait<'a>(
        &self,
        pipe: &'a Pipe,
        g: std::sync::MutexGuard<'a, PipeState>,
    ) -> io::Result<std::sync::MutexGuard<'a, PipeState>> {
        if !self.blocking {
            return Err(would_block());
        }
        match self.timeout {
            None => Ok(pipe.cv.wait(g).unwrap_or_else(|e| e.into_inner())),
            Some(t) => {
                let (g, r) = pipe
                    .cv
                    .wait_timeout(g, t)
                    .unwrap_or_else(|e| e.into_inner());
                if r.timed_out() {
                    Err(io::Error::from(io::ErrorKind::TimedOut))
                } else {
                    Ok(g)
                }
            }
        }
    }
}

impl Read for MemConn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let pipe = self.rx.clone();
        let mut g = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !g.buf.is_empty() {
                let n = out.len().min(g.buf.len());
                for (o, b) in out.iter_mut().zip(g.buf.drain(..n)) {
                    *o = b;
                }
                if let Some(w) = &g.writer {
                    w.notify();
                }
                pipe.cv.notify_all();
                return Ok(n);
            }
            if g.closed {
                return Ok(0);
            }
            g = self.wait(&pipe, g)?;
        }
    }
}

impl Write for MemConn {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        Write::write_vectored(self, &[IoSlice::new(data)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let pipe = self.tx.clone();
        let mut g = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.closed {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let room = g.cap - g.buf.len();
            if room > 0 {
                let mut n = 0;
                for b in bufs {
                    let k = b.len().min(room - n);
                    g.buf.extend(&b[..k]);
                    n += k;
                    if n == room {
                        break;
                    }
                }
                if let Some(r) = &g.reader {
                    r.notify();
                }
                pipe.cv.notify_all();
                return Ok(n);
            }
            g = self.wait(&pipe, g)?;
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn for MemConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Write::write_vectored(self, bufs)
    }
    fn shutdown_write(&mut self) {
        let mut g = self.tx.state.lock().unwrap_or_else(|e| e.into_inner());
        g.closed = true;
        if let Some(r) = &g.reader {
            r.notify();
        }
        self.tx.cv.notify_all();
    }
    fn set_waker(&mut self, signal: Arc<Signal>) -> io::Result<()> {
        self.rx
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reader = Some(signal.clone());
        self.tx
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writer = Some(signal.clone());
        signal.notify();
        Ok(())
    }
    fn peer_addr(&self) -> String {
        self.peer.clone()
    }
}

impl Stream for MemConn {
    fn set_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.timeout = t;
        Ok(())
    }
    fn peer_addr(&self) -> String {
        self.peer.clone()
    }
    fn local_addr(&self) -> String {
        self.local.clone()
    }
    fn into_conn(mut self: Box<Self>) -> io::Result<Box<dyn Conn>> {
        self.blocking = false;
        Ok(self)
    }
}

impl Drop for MemConn {
    fn drop(&mut self) {
        for p in [&self.rx, &self.tx] {
            let mut g = p.state.lock().unwrap_or_else(|e| e.into_inner());
            g.closed = true;
            for s in [&g.reader, &g.writer].into_iter().flatten() {
                s.notify();
            }
            p.cv.notify_all();
        }
    }
}

/// In-process transport: addresses are names in one process-local table.
#[derive(Clone, Default)]
pub struct Mem {
    listeners: Arc<Mutex<HashMap<String, AcceptFn>>>,
    /// Bytes buffered per direction of each connection.
    pub capacity: usize,
}

impl Mem {
    pub fn new() -> Self {
        Mem {
            listeners: Arc::default(),
            capacity: 4 << 20,
        }
    }
}

impl Transport for Mem {
    fn listen(&self, addr: &str, accept: AcceptFn) -> io::Result<String> {
        let mut l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if l.contains_key(addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is taken"),
            ));
        }
        l.insert(addr.to_string(), accept);
        Ok(addr.to_string())
    }

    fn connect(&self, addr: &str, _timeout: Duration) -> io::Result<Box<dyn Stream>> {
        let accept = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .cloned()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("nothing listens on {addr}"),
                )
            })?;
        let (ours, theirs) = mem_pair(self.capacity.max(1024), &format!("client-of-{addr}"), addr);
        std::thread::Builder::new()
            .name("flowmesh-hello".into())
            .spawn(move || accept(Box::new(theirs)))?;
        Ok(Box::new(ours))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_roundtrip(t: &dyn Transport, addr: &str) {
        let bound = t
            .listen(
                addr,
                Arc::new(|mut s: Box<dyn Stream>| {
                    let mut b = [0u8; 5];
                    s.read_exact(&mut b).unwrap();
                    s.write_all(&b).unwrap();
                }),
            )
            .unwrap();
        let mut c = t.connect(&bound, Duration::from_secs(2)).unwrap();
        c.set_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        // Non-blocking phase: nothing more to read, and the waker is set.
        let mut conn = c.into_conn().unwrap();
        let sig = Arc::new(Signal::new());
        conn.set_waker(sig).unwrap();
        let mut x = [0u8; 4];
        let r = conn.read(&mut x);
        assert!(
            matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) || matches!(r, Ok(0)),
            "{r:?}"
        );
    }

    #[test]
    fn tcp_unix_and_mem_carry_bytes_both_ways() {
        echo_roundtrip(&Tcp, "127.0.0.1:0");
        let dir = tempfile::tempdir().unwrap();
        let sock = format!("unix:{}", dir.path().join("seg.sock").display());
        echo_roundtrip(&Tcp, &sock);
        // Its listener still runs: a second one on the path is refused...
        let e = Tcp.listen(&sock, Arc::new(|_| {})).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        // ...but a socket file nobody listens on (left by an earlier run)
        // is replaced.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        echo_roundtrip(&Tcp, &format!("unix:{}", stale.display()));
        echo_roundtrip(&Mem::new(), "seg-a");
    }

    #[test]
    fn mem_pipe_applies_backpressure() {
        let (a, mut b) = mem_pair(8, "a", "b");
        let mut a = Box::new(a).into_conn().unwrap();
        let n = a.write_vectored(&[IoSlice::new(&[1u8; 20])]).unwrap();
        assert_eq!(n, 8);
        assert!(a.write_vectored(&[IoSlice::new(&[1u8])]).is_err());
        let mut buf = [0u8; 20];
        assert_eq!(Read::read(&mut b, &mut buf).unwrap(), 8);
        drop(b);
        assert!(a.write_vectored(&[IoSlice::new(&[1u8])]).is_err());
        assert_eq!(a.read(&mut buf).unwrap(), 0);
    }
}
