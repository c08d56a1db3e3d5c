//! An asynchronous connection to a switch (tokio): `unix:PATH` (a bridge's `.mgmt` socket) or
//! `tcp:HOST:PORT`.
//!
//! A supervisor task connects, negotiates OpenFlow 1.3 (HELLO with a version bitmap), answers
//! echo requests, sends its own echoes when the line is idle and drops a silent peer, and
//! reconnects with exponential backoff. Requests are matched to replies by xid; multipart
//! replies are reassembled; messages sent without waiting ([`Connection::send`]) are remembered
//! until the next barrier so that an error the switch sends for one of them is returned by
//! [`Connection::barrier`] together with the request that caused it. Unsolicited messages
//! (packet-in, port-status, …) and connection state changes arrive on [`Events`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use crate::error::DecodeError;
use crate::message::{
    AsyncConfig, BundleCtrl, ErrorMsg, Features, FlowStats, FlowStatsRequest, Group, HEADER_LEN,
    Message, MultipartReply, MultipartRequest, OFP13_VERSION, SwitchConfig, bundle_ctrl,
};

/// A switch error together with the request that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// Xid of the failed request.
    pub xid: u32,
    /// The request, if it was sent through this connection and still remembered.
    pub request: Option<Message>,
    /// The error.
    pub error: ErrorMsg,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (xid {:#x})", self.error.name(), self.xid)?;
        if let Some(r) = &self.request {
            write!(f, " for: {}", crate::print::ofp_print(self.xid, r))?;
        }
        Ok(())
    }
}

/// Connection failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnError {
    /// A bad target string.
    #[error("bad target {0:?} (want unix:PATH or tcp:HOST:PORT)")]
    BadTarget(String),
    /// Socket error.
    #[error("i/o error: {0}")]
    Io(String),
    /// Version negotiation failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The connection dropped (or is down) before the request completed.
    #[error("not connected")]
    Disconnected,
    /// No reply in time.
    #[error("timed out waiting for the switch")]
    Timeout,
    /// The switch answered the request with an error.
    #[error("switch error: {0}")]
    Switch(Box<RequestError>),
    /// Earlier fire-and-forget requests failed (reported at a barrier or commit).
    #[error("{} request(s) failed; first: {}", .0.len(), .0[0])]
    Rejected(Vec<RequestError>),
    /// The switch sent a reply of an unexpected kind.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// Events delivered to the owner of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// (Re)connected and negotiated; the switch's features. Resynchronise state here.
    Connected(Features),
    /// The connection was lost; the supervisor will reconnect.
    Disconnected(String),
    /// An unsolicited message (packet-in, packet-in2, port-status, unmatched error, …).
    Message(u32, Message),
    /// A message from the switch could not be decoded (the connection stays up).
    Undecodable(DecodeError),
    /// This many events were dropped because the queue was full: whoever follows the switch's
    /// state through events (port status) should read it again.
    Lost(u64),
}

/// Hands events to the owner without ever blocking the reader; what does not fit is counted and
/// reported as [`Event::Lost`] as soon as there is room again.
struct Delivery<'a> {
    events: &'a mpsc::Sender<Event>,
    lost: u64,
}

impl Delivery<'_> {
    fn deliver(&mut self, ev: Event) {
        if self.lost > 0 {
            if self.events.try_send(Event::Lost(self.lost)).is_err() {
                self.lost += 1;
                return;
            }
            self.lost = 0;
        }
        if self.events.try_send(ev).is_err() {
            self.lost += 1;
        }
    }
}

/// Connection options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Idle time after which an echo request is sent; a peer silent for twice this is dropped.
    pub echo_interval: Duration,
    /// Time to wait for a reply.
    pub request_timeout: Duration,
    /// First reconnect delay (doubled after each failure).
    pub backoff_min: Duration,
    /// Maximum reconnect delay.
    pub backoff_max: Duration,
    /// Capacity of the event queue (new events are dropped while it is full).
    pub event_capacity: usize,
    /// Sent right after the handshake. OVS gives management ("service") connections no
    /// asynchronous messages until asked, so the default asks for packet-ins of every reason,
    /// port-status and flow-removed, with whole packets on table misses.
    pub on_connect: Vec<Message>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            echo_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            event_capacity: 4096,
            on_connect: vec![
                Message::SetConfig(SwitchConfig {
                    flags: 0,
                    miss_send_len: u16::MAX,
                }),
                Message::SetAsync(AsyncConfig {
                    packet_in_mask: [0x3f, 0x3f],
                    port_status_mask: [0x7, 0x7],
                    flow_removed_mask: [0xf, 0xf],
                }),
            ],
        }
    }
}

type Reply = Result<Message, ConnError>;

struct Pending {
    tx: oneshot::Sender<Reply>,
    parts: Option<MultipartReply>,
}

#[derive(Default)]
struct State {
    writer: Option<mpsc::Sender<Vec<u8>>>,
    pending: HashMap<u32, Pending>,
    /// Fire-and-forget requests since the last barrier: xid → encoded request.
    outstanding: HashMap<u32, Vec<u8>>,
    /// Errors for outstanding requests outside any bundle in flight, reported at the next
    /// barrier (the most recent [`MAX_UNCLAIMED_ERRORS`]).
    errors: Vec<RequestError>,
    /// Bundles in flight, by the first xid of their range, with the errors reported for them.
    bundles: BTreeMap<u32, BundleErrors>,
}

/// The xid range of a bundle in flight and the errors the switch reported within it.
#[derive(Default)]
struct BundleErrors {
    /// One past the bundle's last xid, once all of it is on the wire.
    end: Option<u32>,
    errors: Vec<RequestError>,
}

/// Whether xid `x` was sent before xid `later`: xids grow by one per message and wrap, so "before"
/// is within half the space behind.
fn sent_before(x: u32, later: u32) -> bool {
    later.wrapping_sub(x).wrapping_sub(1) < u32::MAX / 2
}

/// Errors kept for fire-and-forget sends nobody has asked about yet (a barrier does).
const MAX_UNCLAIMED_ERRORS: usize = 256;

impl State {
    /// The bundle in flight whose xid range holds `xid`.
    fn bundle_of(&mut self, xid: u32) -> Option<&mut BundleErrors> {
        let within = |first: u32, b: &BundleErrors| {
            let offset = xid.wrapping_sub(first);
            offset < u32::MAX / 2 && b.end.is_none_or(|end| offset < end.wrapping_sub(first))
        };
        // The nearest start at or below `xid`, or (xids having wrapped) the highest one.
        let key = self
            .bundles
            .range(..=xid)
            .next_back()
            .or_else(|| self.bundles.iter().next_back())
            .filter(|(first, b)| within(**first, b))
            .map(|(first, _)| *first)?;
        self.bundles.get_mut(&key)
    }
}

struct Inner {
    target: String,
    opts: Options,
    xid: AtomicU32,
    /// Handshakes completed so far (see [`Connection::session`]).
    sessions: AtomicU64,
    state: Mutex<State>,
}

/// A handle to a switch connection; cheap to clone. Dropping every handle stops the supervisor.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The stream of [`Event`]s.
pub struct Events(mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

async fn dial(target: &str) -> Result<(BoxRead, BoxWrite), ConnError> {
    let io = |e: std::io::Error| ConnError::Io(e.to_string());
    if let Some(path) = target.strip_prefix("unix:") {
        let s = tokio::net::UnixStream::connect(path).await.map_err(io)?;
        let (r, w) = s.into_split();
        Ok((Box::new(r), Box::new(w)))
    } else if let Some(addr) = target.strip_prefix("tcp:") {
        let s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        let (r, w) = s.into_split();
        Ok((Box::new(r), Box::new(w)))
    } else {
        Err(ConnError::BadTarget(target.to_string()))
    }
}

/// Reads one OpenFlow frame (at most 64 KiB, as the length field allows).
async fn read_frame(r: &mut BoxRead) -> Result<Vec<u8>, ConnError> {
    let mut buf = vec![0u8; HEADER_LEN];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| ConnError::Io(e.to_string()))?;
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len < HEADER_LEN {
        return Err(ConnError::Io(format!("bad message length {len}")));
    }
    buf.resize(len, 0);
    r.read_exact(&mut buf[HEADER_LEN..])
        .await
        .map_err(|e| ConnError::Io(e.to_string()))?;
    Ok(buf)
}

fn merge(acc: &mut Option<MultipartReply>, part: MultipartReply) -> Result<(), ConnError> {
    match (acc.as_mut(), part) {
        (None, p) => *acc = Some(p),
        (Some(MultipartReply::Flow(a)), MultipartReply::Flow(b)) => a.extend(b),
        (Some(MultipartReply::GroupDesc(a)), MultipartReply::GroupDesc(b)) => a.extend(b),
        (Some(MultipartReply::PortDesc(a)), MultipartReply::PortDesc(b)) => a.extend(b),
        (Some(_), p) => {
            return Err(ConnError::Unexpected(format!(
                "mixed multipart reply {p:?}"
            )));
        }
    }
    Ok(())
}

impl Connection {
    /// Starts a connection to `target` (`unix:PATH` or `tcp:HOST:PORT`) with default options.
    /// Returns at once; the first [`Event::Connected`] says when the switch is ready
    /// ([`Connection::wait_connected`] waits for it).
    pub fn start(target: &str) -> Result<(Connection, Events), ConnError> {
        Self::start_with(target, Options::default())
    }

    /// Like [`Connection::start`] with options.
    pub fn start_with(target: &str, opts: Options) -> Result<(Connection, Events), ConnError> {
        if !(target.starts_with("unix:") || target.starts_with("tcp:")) {
            return Err(ConnError::BadTarget(target.to_string()));
        }
        let (etx, erx) = mpsc::channel(opts.event_capacity.max(1));
        let inner = Arc::new(Inner {
            target: target.to_string(),
            opts,
            xid: AtomicU32::new(1),
            sessions: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        });
        let task = tokio::spawn(supervise(inner.clone(), etx));
        Ok((
            Connection {
                inner,
                _stop: Arc::new(StopOnDrop(task.abort_handle())),
            },
            Events(erx),
        ))
    }

    /// Connects and waits until the switch is ready (skipping other events), with a timeout.
    pub async fn connect(
        target: &str,
        timeout: Duration,
    ) -> Result<(Connection, Events, Features), ConnError> {
        let (c, mut ev) = Self::start(target)?;
        let f = tokio::time::timeout(timeout, async {
            loop {
                match ev.recv().await {
                    Some(Event::Connected(f)) => return Ok(f),
                    Some(_) => {}
                    None => return Err(ConnError::Disconnected),
                }
            }
        })
        .await
        .map_err(|_| ConnError::Timeout)??;
        Ok((c, ev, f))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of the current (or last) session with the switch: each completed handshake
    /// starts the next one, so two reads in the same session saw one connection (0: never
    /// connected yet).
    pub fn session(&self) -> u64 {
        self.inner.sessions.load(Ordering::SeqCst)
    }

    /// A fresh transaction id.
    pub fn next_xid(&self) -> u32 {
        self.inner.xid.fetch_add(1, Ordering::Relaxed)
    }

    async fn write(&self, bytes: Vec<u8>) -> Result<(), ConnError> {
        let w = self.lock().writer.clone().ok_or(ConnError::Disconnected)?;
        w.send(bytes).await.map_err(|_| ConnError::Disconnected)
    }

    /// Sends a message without waiting for a reply; a switch error for it is reported by the
    /// next [`Connection::barrier`]. Returns the xid used. The encoded message is kept until
    /// that barrier (so the error can name it): send barriers regularly.
    pub async fn send(&self, msg: &Message) -> Result<u32, ConnError> {
        let xid = self.next_xid();
        let bytes = msg.encode(xid);
        self.lock().outstanding.insert(xid, bytes.clone());
        self.write(bytes).await?;
        Ok(xid)
    }

    /// Sends a request and waits for its reply (multipart replies reassembled). An error reply
    /// becomes [`ConnError::Switch`].
    pub async fn request(&self, msg: &Message) -> Result<Message, ConnError> {
        let (xid, rx) = self.submit(msg).await?;
        self.wait_reply(msg, xid, rx).await
    }

    /// Puts a request on the wire and registers for its reply (see [`Connection::wait_reply`]).
    async fn submit(&self, msg: &Message) -> Result<(u32, oneshot::Receiver<Reply>), ConnError> {
        let xid = self.next_xid();
        let (tx, rx) = oneshot::channel();
        self.lock().pending.insert(xid, Pending { tx, parts: None });
        if let Err(e) = self.write(msg.encode(xid)).await {
            self.lock().pending.remove(&xid);
            return Err(e);
        }
        Ok((xid, rx))
    }

    /// Waits for the reply to a submitted request.
    async fn wait_reply(
        &self,
        msg: &Message,
        xid: u32,
        rx: oneshot::Receiver<Reply>,
    ) -> Result<Message, ConnError> {
        match tokio::time::timeout(self.inner.opts.request_timeout, rx).await {
            Ok(Ok(r)) => r.map_err(|e| match e {
                ConnError::Switch(mut re) => {
                    re.request = Some(msg.clone());
                    ConnError::Switch(re)
                }
                e => e,
            }),
            Ok(Err(_)) => Err(ConnError::Disconnected),
            Err(_) => {
                self.lock().pending.remove(&xid);
                Err(ConnError::Timeout)
            }
        }
    }

    /// Sends a barrier and waits for it: every message sent before has been processed. Errors
    /// the switch reported for earlier [`Connection::send`]s come back as [`ConnError::Rejected`].
    pub async fn barrier(&self) -> Result<(), ConnError> {
        let (xid, rx) = self.submit(&Message::BarrierRequest).await?;
        let reply = self.wait_reply(&Message::BarrierRequest, xid, rx).await;
        let errors = {
            let mut st = self.lock();
            Self::forget_before(&mut st, xid);
            let (mine, later) = std::mem::take(&mut st.errors)
                .into_iter()
                .partition(|e| sent_before(e.xid, xid));
            st.errors = later;
            mine
        };
        Self::barrier_outcome(reply, errors)
    }

    /// Forgets the fire-and-forget requests sent before barrier `barrier_xid`: every answer to
    /// them has arrived.
    fn forget_before(st: &mut State, barrier_xid: u32) {
        st.outstanding.retain(|x, _| !sent_before(*x, barrier_xid));
    }

    /// What a barrier's reply means, given the errors reported for the sends it covers.
    fn barrier_outcome(
        reply: Result<Message, ConnError>,
        errors: Vec<RequestError>,
    ) -> Result<(), ConnError> {
        match reply? {
            Message::BarrierReply if errors.is_empty() => Ok(()),
            Message::BarrierReply => Err(ConnError::Rejected(errors)),
            m => Err(ConnError::Unexpected(format!("{m:?}"))),
        }
    }

    /// Runs a multipart request and returns the reassembled reply.
    pub async fn multipart(&self, req: MultipartRequest) -> Result<MultipartReply, ConnError> {
        match self.request(&Message::MultipartRequest(0, req)).await? {
            Message::MultipartReply(_, r) => Ok(r),
            m => Err(ConnError::Unexpected(format!("{m:?}"))),
        }
    }

    /// Flow statistics (all flows matching the filter).
    pub async fn dump_flows(&self, filter: FlowStatsRequest) -> Result<Vec<FlowStats>, ConnError> {
        match self.multipart(MultipartRequest::Flow(filter)).await? {
            MultipartReply::Flow(v) => Ok(v),
            r => Err(ConnError::Unexpected(format!("{r:?}"))),
        }
    }

    /// Group descriptions.
    pub async fn dump_groups(&self) -> Result<Vec<Group>, ConnError> {
        match self.multipart(MultipartRequest::GroupDesc).await? {
            MultipartReply::GroupDesc(v) => Ok(v),
            r => Err(ConnError::Unexpected(format!("{r:?}"))),
        }
    }

    fn ctrl_message(bundle_id: u32, ctrl_type: u16, flags: u16) -> Message {
        Message::BundleCtrl(BundleCtrl {
            bundle_id,
            ctrl_type,
            flags,
        })
    }

    /// Checks a bundle control reply: the reply type to `ctrl_type` for `bundle_id`.
    fn ctrl_outcome(
        reply: Result<Message, ConnError>,
        bundle_id: u32,
        ctrl_type: u16,
    ) -> Result<(), ConnError> {
        match reply? {
            Message::BundleCtrl(b) if b.ctrl_type == ctrl_type + 1 && b.bundle_id == bundle_id => {
                Ok(())
            }
            m => Err(ConnError::Unexpected(format!("{m:?}"))),
        }
    }

    async fn bundle_ctrl(
        &self,
        bundle_id: u32,
        ctrl_type: u16,
        flags: u16,
    ) -> Result<(), ConnError> {
        let reply = self
            .request(&Self::ctrl_message(bundle_id, ctrl_type, flags))
            .await;
        Self::ctrl_outcome(reply, bundle_id, ctrl_type)
    }

    /// Opens a bundle (atomic and ordered).
    pub async fn bundle_open(&self) -> Result<Bundle, ConnError> {
        let id = self.next_xid();
        let flags = bundle_ctrl::ATOMIC | bundle_ctrl::ORDERED;
        self.bundle_ctrl(id, bundle_ctrl::OPEN_REQUEST, flags)
            .await?;
        Ok(Bundle {
            conn: self.clone(),
            id,
            flags,
        })
    }

    /// Installs `msgs` atomically through one bundle (open, add each, commit). Everything goes out
    /// back to back, followed by a barrier, and the replies are awaited together: one round trip
    /// to the switch. On failure the error names the bundled message(s) the switch rejected. (A
    /// failure at commit applies nothing; Open vSwitch refuses a message that is invalid on its
    /// own as it is added, and then commits the others.)
    pub async fn bundle<'a>(
        &self,
        msgs: impl IntoIterator<Item = &'a Message>,
    ) -> Result<(), ConnError> {
        self.bundle_send(msgs).await?.confirmed().await
    }

    /// Puts a whole bundle (open, each message, commit, barrier) on the wire and returns without
    /// waiting: the switch applies bundles in the order they were sent, so several may be in
    /// flight; [`SentBundle::confirmed`] gives each one's outcome, with the errors of its own
    /// messages only.
    pub async fn bundle_send<'a>(
        &self,
        msgs: impl IntoIterator<Item = &'a Message>,
    ) -> Result<SentBundle, ConnError> {
        // The bundle id is the first xid of the bundle's range; errors for xids in the range
        // are kept for it.
        let id = self.next_xid();
        self.lock().bundles.insert(id, BundleErrors::default());
        let mut sent = SentBundle {
            conn: self.clone(),
            id,
            open: None,
            commit: None,
            barrier: None,
        };
        let flags = bundle_ctrl::ATOMIC | bundle_ctrl::ORDERED;
        let open = Self::ctrl_message(id, bundle_ctrl::OPEN_REQUEST, flags);
        let (xid, rx) = self.submit(&open).await?;
        sent.open = Some((open, xid, rx));
        let bundle = Bundle {
            conn: self.clone(),
            id,
            flags,
        };
        for m in msgs {
            bundle.add(m).await?;
        }
        let commit = Self::ctrl_message(id, bundle_ctrl::COMMIT_REQUEST, flags);
        let (xid, rx) = self.submit(&commit).await?;
        sent.commit = Some((commit, xid, rx));
        let (xid, rx) = self.submit(&Message::BarrierRequest).await?;
        sent.barrier = Some((xid, rx));
        if let Some(b) = self.lock().bundles.get_mut(&id) {
            b.end = Some(xid.wrapping_add(1));
        }
        Ok(sent)
    }

    /// A commit's result together with the errors its barrier collected for the bundled messages.
    fn commit_outcome(
        committed: Result<(), ConnError>,
        late: Result<(), ConnError>,
    ) -> Result<(), ConnError> {
        let mut errors = match late {
            Err(ConnError::Rejected(e)) => Connection::unwrap_bundled(e),
            Err(e) => return Err(e),
            Ok(()) => vec![],
        };
        match committed {
            Ok(()) if errors.is_empty() => Ok(()),
            Ok(()) => Err(ConnError::Rejected(errors)),
            Err(ConnError::Switch(e)) => {
                errors.push(*e);
                Err(ConnError::Rejected(errors))
            }
            Err(e) => Err(e),
        }
    }

    fn unwrap_bundled(errs: Vec<RequestError>) -> Vec<RequestError> {
        errs.into_iter()
            .map(|mut e| {
                if let Some(Message::BundleAdd(_, _, inner)) = e.request.take() {
                    e.request = Some(*inner);
                }
                e
            })
            .collect()
    }
}

/// A request on the wire and where its reply will come.
type Submitted = (Message, u32, oneshot::Receiver<Reply>);

/// A bundle on its way to the switch (see [`Connection::bundle_send`]). Dropping it unawaited
/// forgets its outcome.
pub struct SentBundle {
    conn: Connection,
    id: u32,
    open: Option<Submitted>,
    commit: Option<Submitted>,
    barrier: Option<(u32, oneshot::Receiver<Reply>)>,
}

impl SentBundle {
    /// Waits until the switch has applied the bundle (or refused it: then the error names the
    /// bundled message(s) it rejected).
    pub async fn confirmed(mut self) -> Result<(), ConnError> {
        let (Some(open), Some(commit), Some((barrier_xid, barrier_rx))) =
            (self.open.take(), self.commit.take(), self.barrier.take())
        else {
            return Err(ConnError::Disconnected);
        };
        let conn = self.conn.clone();
        let opened = conn.wait_reply(&open.0, open.1, open.2).await;
        Connection::ctrl_outcome(opened, self.id, bundle_ctrl::OPEN_REQUEST)?;
        let committed = conn.wait_reply(&commit.0, commit.1, commit.2).await;
        let committed = Connection::ctrl_outcome(committed, self.id, bundle_ctrl::COMMIT_REQUEST);
        let reply = conn
            .wait_reply(&Message::BarrierRequest, barrier_xid, barrier_rx)
            .await;
        let errors = {
            let mut st = conn.lock();
            Connection::forget_before(&mut st, barrier_xid);
            st.bundles
                .remove(&self.id)
                .map(|b| b.errors)
                .unwrap_or_default()
        };
        Connection::commit_outcome(committed, Connection::barrier_outcome(reply, errors))
    }
}

impl Drop for SentBundle {
    fn drop(&mut self) {
        self.conn.lock().bundles.remove(&self.id);
    }
}

/// An open bundle.
pub struct Bundle {
    conn: Connection,
    id: u32,
    flags: u16,
}

impl Bundle {
    /// The bundle id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Adds a message (flow-mod, group-mod, …) to the bundle without waiting.
    pub async fn add(&self, msg: &Message) -> Result<(), ConnError> {
        self.conn
            .send(&Message::BundleAdd(
                self.id,
                self.flags,
                Box::new(msg.clone()),
            ))
            .await
            .map(|_| ())
    }

    /// Commits; the switch applies every added message or none (a message it refused as it was
    /// added is not among them: Open vSwitch commits the others).
    pub async fn commit(self) -> Result<(), ConnError> {
        let committed = self
            .conn
            .bundle_ctrl(self.id, bundle_ctrl::COMMIT_REQUEST, self.flags)
            .await;
        let late = self.conn.barrier().await;
        Connection::commit_outcome(committed, late)
    }

    /// Discards the bundle.
    pub async fn discard(self) -> Result<(), ConnError> {
        self.conn
            .bundle_ctrl(self.id, bundle_ctrl::DISCARD_REQUEST, self.flags)
            .await?;
        self.conn.barrier().await.or_else(|e| match e {
            ConnError::Rejected(_) => Ok(()),
            e => Err(e),
        })
    }
}

fn fail_all(inner: &Inner, why: &ConnError) {
    let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
    st.writer = None;
    st.outstanding.clear();
    st.errors.clear();
    for b in st.bundles.values_mut() {
        b.errors.clear();
    }
    for (_, p) in st.pending.drain() {
        let _ = p.tx.send(Err(why.clone()));
    }
}

async fn supervise(inner: Arc<Inner>, events: mpsc::Sender<Event>) {
    let mut delay = None::<Duration>;
    loop {
        run_once(&inner, &events, &mut delay).await;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }
}

async fn run_once(inner: &Arc<Inner>, events: &mpsc::Sender<Event>, delay: &mut Option<Duration>) {
    let opts = &inner.opts;
    let next_delay =
        |d: Option<Duration>| Some(d.map_or(opts.backoff_min, |d| (d * 2).min(opts.backoff_max)));
    let (mut r, mut w) =
        match tokio::time::timeout(opts.request_timeout, handshake(&inner.target)).await {
            Ok(Ok(x)) => x,
            Ok(Err(_)) | Err(_) => {
                *delay = next_delay(*delay);
                return;
            }
        };
    // Features request, answered before anything else is let through.
    let fx = inner.xid.fetch_add(1, Ordering::Relaxed);
    let mut hello = Message::FeaturesRequest.encode(fx);
    for m in &opts.on_connect {
        m.encode_into(inner.xid.fetch_add(1, Ordering::Relaxed), &mut hello);
    }
    if w.write_all(&hello).await.is_err() || w.flush().await.is_err() {
        *delay = next_delay(*delay);
        return;
    }
    let features = loop {
        match tokio::time::timeout(opts.request_timeout, read_frame(&mut r)).await {
            Ok(Ok(frame)) => match Message::decode(&frame) {
                Ok((_, Message::FeaturesReply(f))) => break f,
                Ok((x, Message::EchoRequest(d))) => {
                    let _ = w.write_all(&Message::EchoReply(d).encode(x)).await;
                    let _ = w.flush().await;
                }
                _ => {}
            },
            _ => {
                *delay = next_delay(*delay);
                return;
            }
        }
    };
    *delay = None;
    let (wtx, wrx) = mpsc::channel::<Vec<u8>>(4096);
    inner.state.lock().unwrap_or_else(|p| p.into_inner()).writer = Some(wtx.clone());
    inner.sessions.fetch_add(1, Ordering::SeqCst);
    let _ = events.send(Event::Connected(features)).await;
    let writer = tokio::spawn(write_loop(w, wrx));
    let why = read_loop(inner, &mut r, &wtx, events).await;
    writer.abort();
    fail_all(inner, &ConnError::Disconnected);
    let _ = events.send(Event::Disconnected(why)).await;
    *delay = next_delay(*delay);
}

async fn handshake(target: &str) -> Result<(BoxRead, BoxWrite), ConnError> {
    let (mut r, mut w) = dial(target).await?;
    let io = |e: std::io::Error| ConnError::Io(e.to_string());
    w.write_all(&Message::Hello(Some(1 << OFP13_VERSION)).encode(0))
        .await
        .map_err(io)?;
    w.flush().await.map_err(io)?;
    let frame = read_frame(&mut r).await?;
    match Message::decode(&frame) {
        Ok((_, Message::Hello(Some(bitmap)))) if bitmap & (1 << OFP13_VERSION) != 0 => Ok((r, w)),
        Ok((_, Message::Hello(None))) if frame[0] >= OFP13_VERSION => Ok((r, w)),
        Ok((_, m)) => Err(ConnError::Handshake(format!(
            "peer does not speak OpenFlow 1.3: {m:?}"
        ))),
        Err(e) => Err(ConnError::Handshake(format!("bad hello: {e}"))),
    }
}

async fn write_loop(w: BoxWrite, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    while let Some(buf) = rx.recv().await {
        if w.write_all(&buf).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if w.write_all(&more).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

/// Bytes received but not yet cut into frames (`buf[start..]`).
#[derive(Default)]
struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuffer {
    /// Reads whatever is available (at least one byte) from `r`.
    async fn fill(&mut self, r: &mut BoxRead) -> Result<(), ConnError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        match r.read(&mut chunk).await {
            Ok(0) => Err(ConnError::Io("connection closed by peer".into())),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(ConnError::Io(e.to_string())),
        }
    }

    /// The next complete frame, if one has arrived.
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ConnError> {
        let avail = &self.buf[self.start..];
        let Some(len) = crate::message::frame_len(avail) else {
            return Ok(None);
        };
        if len < HEADER_LEN {
            return Err(ConnError::Io(format!("bad message length {len}")));
        }
        if avail.len() < len {
            return Ok(None);
        }
        let frame = avail[..len].to_vec();
        self.start += len;
        Ok(Some(frame))
    }
}

async fn read_loop(
    inner: &Arc<Inner>,
    r: &mut BoxRead,
    wtx: &mpsc::Sender<Vec<u8>>,
    events: &mpsc::Sender<Event>,
) -> String {
    let echo = inner.opts.echo_interval;
    let mut echo_outstanding = false;
    let mut frames = FrameBuffer::default();
    let mut delivery = Delivery { events, lost: 0 };
    loop {
        // `read` is cancel-safe, so the echo timer never loses part of a frame.
        let frame = match frames.next_frame() {
            Ok(Some(f)) => f,
            Err(e) => return e.to_string(),
            Ok(None) => {
                match tokio::time::timeout(echo, frames.fill(r)).await {
                    Ok(Ok(())) => echo_outstanding = false,
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) if echo_outstanding => return "echo timeout".to_string(),
                    Err(_) => {
                        echo_outstanding = true;
                        let x = inner.xid.fetch_add(1, Ordering::Relaxed);
                        if wtx
                            .send(Message::EchoRequest(vec![]).encode(x))
                            .await
                            .is_err()
                        {
                            return "writer closed".to_string();
                        }
                    }
                }
                continue;
            }
        };
        let (xid, msg) = match Message::decode(&frame) {
            Ok(x) => x,
            Err(e) => {
                let xid = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(p) = st.pending.remove(&xid) {
                    let _ = p.tx.send(Err(ConnError::Unexpected(format!(
                        "undecodable reply: {e}"
                    ))));
                } else {
                    drop(st);
                    delivery.deliver(Event::Undecodable(e));
                }
                continue;
            }
        };
        match msg {
            Message::EchoRequest(d) => {
                if wtx.send(Message::EchoReply(d).encode(xid)).await.is_err() {
                    return "writer closed".to_string();
                }
            }
            Message::EchoReply(_) => {}
            msg => {
                if let Some(ev) = dispatch(inner, xid, msg) {
                    delivery.deliver(ev);
                }
            }
        }
    }
}

/// Routes a message to a waiting request, the outstanding-error list or the event stream.
fn dispatch(inner: &Inner, xid: u32, msg: Message) -> Option<Event> {
    let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
    if let Message::Error(e) = &msg {
        if let Some(p) = st.pending.remove(&xid) {
            let re = RequestError {
                xid,
                request: None,
                error: e.clone(),
            };
            let _ = p.tx.send(Err(ConnError::Switch(Box::new(re))));
            return None;
        }
        if let Some(bytes) = st.outstanding.get(&xid) {
            let request = Message::decode(bytes).ok().map(|(_, m)| m);
            let re = RequestError {
                xid,
                request,
                error: e.clone(),
            };
            match st.bundle_of(xid) {
                Some(b) => b.errors.push(re),
                None => {
                    if st.errors.len() >= MAX_UNCLAIMED_ERRORS {
                        st.errors.remove(0);
                    }
                    st.errors.push(re);
                }
            }
            return None;
        }
        return Some(Event::Message(xid, msg));
    }
    let Some(mut p) = st.pending.remove(&xid) else {
        return Some(Event::Message(xid, msg));
    };
    match msg {
        Message::MultipartReply(flags, part) => {
            if let Err(e) = merge(&mut p.parts, part) {
                let _ = p.tx.send(Err(e));
            } else if flags & 1 != 0 {
                st.pending.insert(xid, p);
            } else if let Some(all) = p.parts.take() {
                let _ = p.tx.send(Ok(Message::MultipartReply(0, all)));
            }
        }
        m => {
            let _ = p.tx.send(Ok(m));
        }
    }
    None
}
