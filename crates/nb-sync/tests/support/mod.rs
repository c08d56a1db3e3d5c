//! Shared helpers of the replica tests: an in-process server on a given store, and a relay in front
//! of it that can cut the replica off.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Serves the API in-process on `store`, listening on `listener`.
pub fn serve_on(
    listener: TcpListener,
    store: Arc<dyn store::Store>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = api::serve(listener, store, api::ApiConfig::default()).await;
    })
}

/// Serves the API in-process on `store`; returns its base URL.
pub async fn serve(store: Arc<dyn store::Store>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    serve_on(listener, store);
    base
}

/// A TCP relay in front of a server that can drop every connection and refuse new ones.
pub struct Relay {
    pub base: String,
    open: watch::Sender<bool>,
}

impl Relay {
    pub async fn start(target: &str) -> Self {
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (open, _) = watch::channel(true);
        let state = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state_rx = state.subscribe();
                if !*state_rx.borrow() {
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state_rx.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Self { base, open }
    }

    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}
