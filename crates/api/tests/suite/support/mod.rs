//! Shared helpers of the API integration tests: a Wyvern server on a fresh store.
//!
//! The server runs in-process on its own Tokio runtime and thread, on an ephemeral loopback port, with
//! `ApiConfig::default()` (no auth: every request is admin unless X-Project-Id/X-Roles say otherwise)
//! or the configuration a test gives.
//! Its store is a new embedded store in a temporary directory, or, with `WYVERN_TEST_STORE=etcd`, a new
//! 1-member etcd cluster (etcd-fixture), so that the same tests run on both backends. Dropping the
//! [`Server`] stops it and removes its store (the directory, the etcd member and its data). Tests
//! that set up what the API cannot make (objects stored by an earlier version, exhausted number
//! spaces) write to the store directly ([`Server::store`]).

use std::net::TcpListener;
use std::sync::Arc;

use etcd_fixture::EtcdCluster;

/// A running server and the directory holding its store.
pub struct Server {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    /// The server's store.
    pub store: Arc<dyn store::Store>,
    _dir: tempfile::TempDir,
    /// Ends the server thread, which then stops the etcd cluster (if any).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Opens a new store (embedded, or etcd with `WYVERN_TEST_STORE=etcd`) and serves the API on it.
    pub fn start() -> Server {
        Self::start_with(api::ApiConfig::default())
    }

    /// Like [`Server::start`], with `config`.
    pub fn start_with(config: api::ApiConfig) -> Server {
        let etcd = std::env::var("WYVERN_TEST_STORE").is_ok_and(|s| s == "etcd");
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let embedded = format!("embedded:{}", dir.path().join("wyvern.redb").display());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let base = format!(
            "http://{}",
            listener.local_addr().expect("listener address")
        );
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("build the server runtime");
            let served = runtime.block_on(async move {
                // etcd members die with the thread that started them, so this thread starts them.
                let cluster = if etcd {
                    Some(EtcdCluster::start(1).await.expect("start etcd"))
                } else {
                    None
                };
                let spec = cluster.as_ref().map_or(embedded, |c| c.spec("/wyvern"));
                let store = store::open(&spec).expect("open the store");
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let _ = ready.send(store.clone());
                tokio::select! {
                    served = api::serve(listener, store, config) => served,
                    _ = stopped => Ok(()),
                }
            });
            if let Err(err) = served {
                eprintln!("wyvern test server stopped: {err}");
            }
        });
        let store = started.recv().expect("the test server started");
        Server {
            base,
            store,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
