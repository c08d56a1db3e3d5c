//! The JSON-RPC connection (RFC 7047 section 4): requests with replies, server-to-client
//! echo, and routing of monitor notifications.
//!
//! A connection runs two tasks: a reader that splits the stream into messages, answers the
//! server's `echo`, resolves pending requests and forwards `update`/`update2`/`update3`
//! notifications to their monitor; and a writer. Malformed input closes the connection with
//! an error for every pending request; well-formed JSON of the wrong shape fails only the
//! request it answers. Dropping the last [`Client`] clone stops both tasks.
//!
//! Memory is bounded: each message by [`ClientOptions::max_message`], and the queues of
//! outgoing messages and of undelivered notifications per monitor by
//! [`ClientOptions::max_queue`]. A server that does not read, or a monitor consumer that
//! falls that far behind, gets the connection closed (a [`crate::Replica`] then resyncs).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::datum::abbreviate;
use crate::framing::Splitter;
use crate::monitor::{MonitorKind, MonitorRequest, TableUpdates};
use crate::ops::{self, OpResult, Operation};
use crate::{DatabaseSchema, Error, Result};

/// Where the server listens: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix domain socket.
    Unix(PathBuf),
    /// A TCP address, `HOST:PORT` (IPv6 as `[ADDR]:PORT`).
    Tcp(String),
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Endpoint> {
        if let Some(p) = s.strip_prefix("unix:")
            && !p.is_empty()
        {
            Ok(Endpoint::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp:")
            && a.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            Ok(Endpoint::Tcp(a.to_owned()))
        } else {
            Err(Error::Endpoint(s.to_owned()))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Largest accepted message in bytes; a larger one closes the connection.
    pub max_message: usize,
    /// How long a request may wait for its reply.
    pub request_timeout: Duration,
    /// Send an `echo` this often and close the connection if it is not answered within
    /// `request_timeout` (`None`: no probes).
    pub probe_interval: Option<Duration>,
    /// Most messages queued for sending, and most notifications queued per monitor.
    pub max_queue: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_message: 64 << 20,
            request_timeout: Duration::from_secs(30),
            probe_interval: None,
            max_queue: 4096,
        }
    }
}

/// A notification of a monitor, in the form the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// `update` (RFC 7047) or `update2` (`monitor_cond`) table updates.
    Updates(TableUpdates),
    /// `update3` (`monitor_cond_since`): updates and the id of the transaction that made them.
    Updates3 {
        /// Transaction id after these updates.
        last_txn_id: Uuid,
        /// The updates.
        updates: TableUpdates,
    },
}

/// An active monitor: its initial contents and the stream of later changes.
#[derive(Debug)]
pub struct Monitor {
    /// Monitor id (for [`Client::monitor_cancel`]).
    pub id: String,
    /// Which method created it.
    pub kind: MonitorKind,
    /// Initial contents, or for `monitor_cond_since` with `found`, the changes since the
    /// given transaction.
    pub initial: TableUpdates,
    /// `monitor_cond_since` only: the server still knew the requested transaction, so
    /// `initial` holds only what changed after it.
    pub found: bool,
    /// `monitor_cond_since` only: the newest transaction id.
    pub last_txn_id: Option<Uuid>,
    /// Later changes; ends when the monitor is cancelled or the connection closes.
    pub updates: mpsc::Receiver<Notification>,
}

struct MonitorRoute {
    kind: MonitorKind,
    tx: mpsc::Sender<Notification>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Result<Json>>>,
    monitors: HashMap<String, MonitorRoute>,
    closed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    out: mpsc::Sender<Json>,
    next_id: AtomicU64,
    closed_tx: watch::Sender<Option<String>>,
    opts: ClientOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent: take it anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection closed and fails everything that waits on it.
    fn close(&self, reason: String) {
        let (pending, monitors) = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason.clone());
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.monitors),
            )
        };
        tracing::debug!("ovsdb connection closed: {reason}");
        for (_, tx) in pending {
            let _ = tx.send(Err(Error::Disconnected(reason.clone())));
        }
        drop(monitors);
        self.closed_tx.send_replace(Some(reason));
    }

    /// Queues a message from the reader task (which must not wait): a full queue means the
    /// server does not read, and ends the connection.
    fn send_now(&self, msg: Json) {
        if let Err(e) = self.out.try_send(msg) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "server is not reading",
                mpsc::error::TrySendError::Closed(_) => "writer stopped",
            };
            self.close(why.into());
        }
    }

    fn handle(&self, msg: Json) {
        let Json::Object(o) = msg else {
            return;
        };
        if let Some(method) = o.get("method") {
            let id = o.get("id").cloned().unwrap_or(Json::Null);
            let params = o.get("params").cloned().unwrap_or(Json::Null);
            match method.as_str() {
                Some("echo") if !id.is_null() => {
                    self.send_now(json!({"id": id, "result": params, "error": null}));
                }
                Some(m @ ("update" | "update2" | "update3")) => self.route(m, &params),
                Some("locked" | "stolen") => tracing::debug!("ovsdb lock notification {method}"),
                _ if !id.is_null() => {
                    self.send_now(json!({"id": id, "result": null, "error": "unknown method"}));
                }
                _ => tracing::warn!("ignoring ovsdb notification {}", abbreviate(method)),
            }
            return;
        }
        let Some(id) = o.get("id").and_then(Json::as_u64) else {
            tracing::warn!(
                "ignoring ovsdb reply with unknown id: {}",
                abbreviate(&Json::Object(o))
            );
            return;
        };
        let Some(tx) = self.lock().pending.remove(&id) else {
            tracing::warn!("ignoring ovsdb reply to unknown request {id}");
            return;
        };
        let reply = match (o.get("error"), o.get("result")) {
            (Some(e), _) if !e.is_null() => Err(ops::rpc_error(e)),
            (_, Some(r)) => Ok(r.clone()),
            (_, None) => Err(Error::protocol("reply without result")),
        };
        let _ = tx.send(reply);
    }

    fn route(&self, method: &str, params: &Json) {
        let parsed = (|| -> Result<(String, Notification)> {
            let p = params
                .as_array()
                .ok_or_else(|| Error::protocol("notification params must be an array"))?;
            let id = p
                .first()
                .and_then(Json::as_str)
                .ok_or_else(|| Error::protocol("unknown monitor id"))?;
            let kind = self
                .lock()
                .monitors
                .get(id)
                .map(|m| m.kind)
                .ok_or_else(|| Error::protocol(format!("no monitor {id:?}")))?;
            let n = match (method, p.len()) {
                ("update", 2) | ("update2", 2) => {
                    let v2 = method == "update2";
                    if v2 != (kind != MonitorKind::Monitor) {
                        return Err(Error::protocol(format!("{method} for a {kind:?} monitor")));
                    }
                    Notification::Updates(TableUpdates::parse(&p[1], v2)?)
                }
                ("update3", 3) => Notification::Updates3 {
                    last_txn_id: parse_uuid(&p[1])?,
                    updates: TableUpdates::parse(&p[2], true)?,
                },
                _ => return Err(Error::protocol(format!("{method} with {} params", p.len()))),
            };
            Ok((id.to_owned(), n))
        })();
        match parsed {
            Ok((id, n)) => {
                let full = {
                    let st = self.lock();
                    st.monitors.get(&id).is_some_and(|m| {
                        matches!(m.tx.try_send(n), Err(mpsc::error::TrySendError::Full(_)))
                    })
                };
                if full {
                    self.close(format!(
                        "monitor {id:?} fell {} updates behind",
                        self.opts.max_queue
                    ));
                }
            }
            Err(e) => {
                // A monitor that missed an update has a wrong picture: end the connection so
                // that the owner resynchronises.
                tracing::warn!("bad {method} notification: {e}");
                self.close(format!("bad {method} notification: {e}"));
            }
        }
    }
}

fn parse_uuid(j: &Json) -> Result<Uuid> {
    j.as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| Error::protocol(format!("expected a uuid string, got {}", abbreviate(j))))
}

struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A connection to an OVSDB server. Cheap to clone; the connection ends when the last clone
/// is dropped, the server closes it, or it breaks.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.shared.lock().closed)
            .finish()
    }
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

impl Client {
    /// Connects to `endpoint`.
    pub async fn connect(endpoint: &Endpoint, opts: ClientOptions) -> Result<Client> {
        let (r, w): (Reader, Writer) = match endpoint {
            Endpoint::Unix(p) => {
                let (r, w) = tokio::net::UnixStream::connect(p).await?.into_split();
                (Box::new(r), Box::new(w))
            }
            Endpoint::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str()).await?;
                s.set_nodelay(true)?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        };
        Ok(Client::from_stream(r, w, opts))
    }

    fn from_stream(r: Reader, w: Writer, opts: ClientOptions) -> Client {
        let (out, out_rx) = mpsc::channel(opts.max_queue.max(1));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            out,
            next_id: AtomicU64::new(1),
            closed_tx: watch::channel(None).0,
            opts,
        });
        let mut tasks = vec![
            tokio::spawn(read_loop(shared.clone(), r)),
            tokio::spawn(write_loop(shared.clone(), w, out_rx)),
        ];
        if let Some(every) = shared.opts.probe_interval {
            tasks.push(tokio::spawn(probe_loop(Arc::downgrade(&shared), every)));
        }
        Client {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        }
    }

    /// Sends a request and waits for its reply's `result`.
    pub async fn call(&self, method: &str, params: Json) -> Result<Json> {
        call(&self.shared, method, params).await
    }

    /// `list_dbs`: names of the databases the server holds.
    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        let r = self.call("list_dbs", json!([])).await?;
        r.as_array()
            .and_then(|a| a.iter().map(|d| d.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| Error::protocol(format!("list_dbs result {}", abbreviate(&r))))
    }

    /// `get_schema`.
    pub async fn get_schema(&self, db: &str) -> Result<DatabaseSchema> {
        DatabaseSchema::from_json(&self.call("get_schema", json!([db])).await?)
    }

    /// `transact`: runs `ops` atomically. The first failing operation is returned as
    /// [`Error::Transaction`]; otherwise one result per operation.
    pub async fn transact(&self, db: &str, operations: &[Operation]) -> Result<Vec<OpResult>> {
        let mut params = vec![json!(db)];
        params.extend(operations.iter().map(Operation::to_json));
        let r = self.call("transact", Json::Array(params)).await?;
        ops::parse_results(&r, operations.len())
    }

    /// `echo`: the server returns `params` unchanged.
    pub async fn echo(&self, params: Json) -> Result<Json> {
        let r = self.call("echo", params.clone()).await?;
        if r == params {
            Ok(r)
        } else {
            Err(Error::protocol("echo reply differs from request"))
        }
    }

    /// Starts a monitor with method `kind`. `last_txn_id` is used by
    /// [`MonitorKind::MonitorCondSince`] only (`None`: no history, send everything).
    /// Conditions in `requests` need `monitor_cond` or `monitor_cond_since`.
    pub async fn monitor(
        &self,
        db: &str,
        id: &str,
        kind: MonitorKind,
        requests: &BTreeMap<String, MonitorRequest>,
        last_txn_id: Option<Uuid>,
    ) -> Result<Monitor> {
        if kind == MonitorKind::Monitor && requests.values().any(|r| r.conditions.is_some()) {
            return Err(Error::Schema("conditions need monitor_cond".into()));
        }
        let (tx, rx) = mpsc::channel(self.shared.opts.max_queue.max(1));
        {
            let mut st = self.shared.lock();
            if st.monitors.contains_key(id) {
                return Err(Error::protocol(format!("monitor id {id:?} in use")));
            }
            st.monitors.insert(id.to_owned(), MonitorRoute { kind, tx });
        }
        let reqs: serde_json::Map<String, Json> = requests
            .iter()
            .map(|(t, r)| (t.clone(), json!([r.to_json(kind)])))
            .collect();
        let mut params = vec![json!(db), json!(id), Json::Object(reqs)];
        if kind == MonitorKind::MonitorCondSince {
            params.push(json!(last_txn_id.unwrap_or_default().to_string()));
        }
        let reply = self.call(kind.method(), Json::Array(params)).await;
        let parsed = reply.and_then(|r| match kind {
            MonitorKind::Monitor => Ok((TableUpdates::parse(&r, false)?, false, None)),
            MonitorKind::MonitorCond => Ok((TableUpdates::parse(&r, true)?, false, None)),
            MonitorKind::MonitorCondSince => match r.as_array().map(Vec::as_slice) {
                Some([Json::Bool(found), last, updates]) => Ok((
                    TableUpdates::parse(updates, true)?,
                    *found,
                    Some(parse_uuid(last)?),
                )),
                _ => Err(Error::protocol(format!(
                    "monitor_cond_since result {}",
                    abbreviate(&r)
                ))),
            },
        });
        match parsed {
            Ok((initial, found, last_txn_id)) => Ok(Monitor {
                id: id.to_owned(),
                kind,
                initial,
                found,
                last_txn_id,
                updates: rx,
            }),
            Err(e) => {
                self.shared.lock().monitors.remove(id);
                Err(e)
            }
        }
    }

    /// `lock`: asks for lock `name`; true if it was granted at once (otherwise the server
    /// grants it later with a `locked` notification).
    pub async fn lock(&self, name: &str) -> Result<bool> {
        self.lock_call("lock", name).await
    }

    /// `steal`: takes lock `name` from its current owner.
    pub async fn steal(&self, name: &str) -> Result<bool> {
        self.lock_call("steal", name).await
    }

    /// `unlock`: releases (or stops waiting for) lock `name`.
    pub async fn unlock(&self, name: &str) -> Result<()> {
        self.call("unlock", json!([name])).await.map(drop)
    }

    async fn lock_call(&self, method: &str, name: &str) -> Result<bool> {
        let r = self.call(method, json!([name])).await?;
        r.get("locked")
            .and_then(Json::as_bool)
            .ok_or_else(|| Error::protocol(format!("{method} result {}", abbreviate(&r))))
    }

    /// `monitor_cancel`: stops monitor `id`; its update stream ends.
    pub async fn monitor_cancel(&self, id: &str) -> Result<()> {
        self.call("monitor_cancel", json!([id])).await?;
        self.shared.lock().monitors.remove(id);
        Ok(())
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Waits until the connection is closed; returns why.
    pub async fn closed(&self) -> String {
        let mut rx = self.shared.closed_tx.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => "client dropped".into(),
        }
    }
}

async fn call(shared: &Shared, method: &str, params: Json) -> Result<Json> {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    {
        let mut st = shared.lock();
        if let Some(r) = &st.closed {
            return Err(Error::Disconnected(r.clone()));
        }
        st.pending.insert(id, tx);
    }
    let exchange = async {
        shared
            .out
            .send(json!({"method": method, "params": params, "id": id}))
            .await
            .map_err(|_| Error::Disconnected("writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Disconnected("reply channel dropped".into()))?
    };
    match tokio::time::timeout(shared.opts.request_timeout, exchange).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            shared.lock().pending.remove(&id);
            Err(e)
        }
        Err(_) => {
            shared.lock().pending.remove(&id);
            Err(Error::Timeout(method.to_owned()))
        }
    }
}

async fn read_loop(shared: Arc<Shared>, mut r: Reader) {
    let mut split = Splitter::new(shared.opts.max_message);
    let mut buf = vec![0u8; 64 * 1024];
    let reason = loop {
        let n = match r.read(&mut buf).await {
            Ok(0) if split.is_partial() => {
                break "connection closed in the middle of a message".into();
            }
            Ok(0) => break "closed by server".to_owned(),
            Ok(n) => n,
            Err(e) => break format!("read: {e}"),
        };
        split.push(&buf[..n]);
        let err = loop {
            match split.next_message() {
                Ok(Some(m)) => shared.handle(m),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = err {
            break e.to_string();
        }
        if shared.lock().closed.is_some() {
            return;
        }
    };
    shared.close(reason);
}

async fn write_loop(shared: Arc<Shared>, mut w: Writer, mut rx: mpsc::Receiver<Json>) {
    while let Some(msg) = rx.recv().await {
        let bytes = msg.to_string();
        if let Err(e) = w.write_all(bytes.as_bytes()).await {
            shared.close(format!("write: {e}"));
            return;
        }
    }
}

async fn probe_loop(shared: std::sync::Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = shared.upgrade() else { return };
        if s.lock().closed.is_some() {
            return;
        }
        if let Err(e) = call(&s, "echo", json!(["probe"])).await {
            s.close(format!("inactivity probe failed: {e}"));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            "tcp:[::1]:6640".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("[::1]:6640".into())
        );
        for bad in [
            "unix:",
            "tcp:1.2.3.4",
            "tcp::1",
            "ssl:1.2.3.4:6640",
            "tcp:h:99999",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
