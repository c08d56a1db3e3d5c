//! A loopback port inside a network namespace that leads to an address outside it: how a
//! program run in a chassis' or VM's namespace (the CNI plugin) reaches a server listening in
//! this process' namespace (the API), without giving the namespace a route out.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Error, Result};

/// Relays every connection to `127.0.0.1:<port>` inside a namespace to a target address, while
/// it lives (dropping it stops accepting; relayed connections finish on their own).
pub struct Relay {
    /// The port it listens on, on the namespace's loopback.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free port of `netns`' loopback (a thread that enters the namespace with
    /// `setns`, binds and ends: the socket stays in the namespace) and relays to `target`.
    pub fn start(netns: &str, target: SocketAddr) -> Result<Relay> {
        let what = format!("listen on the loopback of {netns}");
        let listener = crate::netns::within(netns, || TcpListener::bind("127.0.0.1:0"))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| Error::Io {
                what: what.clone(),
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| Error::Io { what, source })?
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inside, _)) => relay(inside, target),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Relay {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`: the relayed server's URL as seen inside the namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Copies both ways between `inside` and a new connection to `target`, a thread each way.
fn relay(inside: TcpStream, target: SocketAddr) {
    let _ = inside.set_nonblocking(false);
    let Ok(outside) = TcpStream::connect(target) else {
        return;
    };
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    if let (Ok(a), Ok(b)) = (inside.try_clone(), outside.try_clone()) {
        pipe(a, outside);
        pipe(b, inside);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
