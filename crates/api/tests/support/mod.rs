//! Shared helpers of the API integration tests: a Wyvern server on a fresh embedded store.
//!
//! The server runs in-process on its own Tokio runtime and thread, on an ephemeral loopback port, with
//! `ApiConfig::default()` (no auth: every request is admin unless X-Project-Id/X-Roles say otherwise).
//! Its store file lives in a temporary directory that is removed when the [`Server`] is dropped; the
//! server thread ends with the test process.

use std::net::TcpListener;

/// A running server and the directory holding its store.
pub struct Server {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Opens a new embedded store and serves the API on it.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let spec = format!("embedded:{}", dir.path().join("wyvern.redb").display());
        let store = store::open(&spec).expect("open the embedded store");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let base = format!(
            "http://{}",
            listener.local_addr().expect("listener address")
        );
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("build the server runtime");
            let served = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                api::serve(listener, store, api::ApiConfig::default()).await
            });
            if let Err(err) = served {
                eprintln!("wyvern test server stopped: {err}");
            }
        });
        Server { base, _dir: dir }
    }
}
