//! A small TCP proxy for fault-injection tests: put it between the collector and
//! PostgreSQL, then make the "network" pass traffic, delay it, or black-hole it.
//!
//! It runs on plain threads (no async runtime) so any test can use it. A black hole
//! holds bytes rather than dropping them, as a real partition does with TCP: when
//! the mode goes back to [`Mode::Pass`], held traffic flows again and sessions that
//! did not time out on either side carry on. [`Proxy::sever_all`] cuts every open
//! connection, as a crashed router or a firewall reset would.
//!
//! ```no_run
//! use testkit::proxy::{Mode, Proxy};
//! use std::time::Duration;
//! let proxy = Proxy::start(([127, 0, 0, 1], 5432).into()).unwrap();
//! // point the collector at 127.0.0.1:{proxy.port()} instead of 5432 ...
//! proxy.set_mode(Mode::Delay(Duration::from_millis(500)));
//! proxy.set_mode(Mode::BlackHole);
//! proxy.set_mode(Mode::Pass);
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes as they come.
    Pass,
    /// Forward each chunk only after this delay (in both directions), like a slow link
    /// or a database that answers slowly.
    Delay(Duration),
    /// Accept connections but forward nothing in either direction until the mode
    /// changes: the peer sees a hung server.
    BlackHole,
}

/// How often waiting threads look at the mode and the stop flag.
const POLL: Duration = Duration::from_millis(10);

struct Shared {
    mode: Mutex<Mode>,
    stop: AtomicBool,
    /// Both ends of every live connection, so they can be cut on command.
    open: Mutex<Vec<(u64, TcpStream)>>,
    accepted: AtomicU64,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    /// Block while black-holed; false when the proxy is stopping.
    fn wait_while_black_hole(&self) -> bool {
        while self.mode() == Mode::BlackHole {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            thread::sleep(POLL);
        }
        !self.stop.load(Ordering::Relaxed)
    }
}

/// A running proxy on a free loopback port. Stops and cuts its connections on drop.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listen on `127.0.0.1:<free port>` and forward to `upstream`, in [`Mode::Pass`].
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name("testkit-proxy-accept".into())
            .spawn(move || accept_loop(listener, upstream, s))?;
        Ok(Proxy {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// The port clients should connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// How many client connections the proxy has accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Cut every open connection (both sides see a reset or EOF). New connections are
    /// still accepted afterwards.
    pub fn sever_all(&self) {
        for (_, s) in self.shared.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.sever_all();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let id = shared.accepted.fetch_add(1, Ordering::Relaxed);
                let s = shared.clone();
                let _ = thread::Builder::new().name("testkit-proxy-conn".into()).spawn(move || {
                    connect_and_pump(id, client, upstream, &s);
                    s.open.lock().unwrap().retain(|(i, _)| *i != id);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

fn connect_and_pump(id: u64, client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    // A black hole also swallows new connections: the client's connect succeeds
    // (the proxy accepted it) but the server never says a word.
    if let Ok(c) = client.try_clone() {
        shared.open.lock().unwrap().push((id, c));
    }
    if !shared.wait_while_black_hole() {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let server = match TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    if let Ok(s) = server.try_clone() {
        shared.open.lock().unwrap().push((id, s));
    }
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let s = shared.clone();
    let up = thread::Builder::new()
        .name("testkit-proxy-up".into())
        .spawn(move || pump(client2, server2, s));
    pump(server, client, shared.clone());
    if let Ok(t) = up {
        let _ = t.join();
    }
}

/// Copy `from` → `to` chunk by chunk, obeying the mode, until EOF or an error; then
/// close both directions so the other pump ends too.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    // A read timeout lets the loop notice `stop` even on an idle connection.
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !shared.wait_while_black_hole() {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Mode::Delay(d) = shared.mode() {
            thread::sleep(d);
        }
        // Bytes read just before a black hole began are held, not lost.
        if !shared.wait_while_black_hole() {
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on a free port; each connection echoes until EOF.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(c: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        c.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn passes_delays_black_holes_and_severs() {
        let proxy = Proxy::start(echo_server()).unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(round_trip(&mut c, b"hello").unwrap(), b"hello");

        proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
        let t = Instant::now();
        assert_eq!(round_trip(&mut c, b"slow").unwrap(), b"slow");
        // One chunk each way, each delayed.
        assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());

        proxy.set_mode(Mode::BlackHole);
        c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        c.write_all(b"held").unwrap();
        let mut buf = [0u8; 4];
        let err = c.read_exact(&mut buf).unwrap_err();
        assert!(
            matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
            "{err:?}"
        );

        // Held bytes arrive once the hole closes.
        proxy.set_mode(Mode::Pass);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"held");

        proxy.sever_all();
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).unwrap_or(0), 0, "severed connection must end");
        // A new connection works after severing.
        let mut c2 = TcpStream::connect(proxy.addr()).unwrap();
        c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(round_trip(&mut c2, b"again").unwrap(), b"again");
        assert_eq!(proxy.connections_accepted(), 2);
    }
}
