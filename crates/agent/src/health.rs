//! Health checks of load-balancer pool members (Octavia's health monitors), run by the chassis
//! that hosts each member ([`pipeline::apps::load_balancing::health_checks`]).
//!
//! One probe loop per check, as a tokio task: every `delay` seconds it sends a probe built here
//! (an ICMP echo request, a TCP handshake, or an HTTP request over one) from the VIP's address to
//! the member, through the member port's security groups
//! ([`pipeline::apps::load_balancing::probe_actions`]); the frames go to the agent's event loop,
//! which sends them as packet-outs. The member's answers come back as packet-ins
//! ([`pipeline::apps::Punt::HealthReply`]: the pipeline sends a local member's packets to the VIP
//! that answer a probe — for TCP, those to source ports in [`PROBE_PORTS`] and up — to the agent
//! instead of routing them), which the punt dispatcher hands to the checker ([`Inbox`]). A
//! probe not answered within `timeout` seconds fails. `max_retries` successes in a row make the
//! member `ONLINE`, `max_retries_down` failures in a row `ERROR`; each change is logged and
//! reported to the server (`PUT /wyvern/v1/members/<id>/health`), retried until it is delivered
//! (a later verdict replaces one still pending).
//!
//! TCP and HTTP probes are a minimal TCP client over packet-ins ([`Probe`]): SYN from a source port
//! in 65024..=65535 (another than the last probe's), SYN-ACK; for TCP that is success, and a RST
//! (sequence number = the member's acknowledgement) frees the member's connection. For HTTP,
//! ACK and the request (`Connection: close`), the response's data acknowledged as it comes
//! until its first line is complete (or the member closes), the status code checked against the
//! monitor's expected codes, then a RST. A RST from the member fails the probe at once.
//! Checksums are computed here: a userspace switch does not fix them.
//!
//! Nothing here blocks the agent's event loop: the loop only hands frames over bounded channels
//! (dropping what does not fit), and the checks' set is published through a watch channel.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndp::checksum::internet_checksum as checksum;
use openflow::Action;
use pipeline::Pipeline;
use pipeline::apps::load_balancing::{HealthCheck, PROBE_PORTS, health_checks, probe_actions};
use pipeline::model::{Health, MonitorKind, mac_octets};
use tokio::sync::{Notify, mpsc, watch};

use crate::server::Server;

/// A frame to send, with the OpenFlow actions that send it.
pub type Frame = (Vec<Action>, Vec<u8>);

/// Probe frames waiting for the event loop, at most.
pub const FRAMES: usize = 256;
/// Packet-ins waiting for the checker, at most (more are dropped).
const INBOX: usize = 256;
/// Answers waiting for one probe loop, at most.
const ANSWERS: usize = 32;
/// How much of an HTTP response is kept while looking for its first line.
const MAX_STATUS_LINE: usize = 512;
/// How often an unanswered SYN or request is sent again within a probe's timeout.
const RETRANSMIT: Duration = Duration::from_secs(1);
/// Waits between failed reports to the server: the first, and the longest.
const REPORT_RETRY: Duration = Duration::from_millis(250);
const REPORT_RETRY_MAX: Duration = Duration::from_secs(2);

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Where the punt dispatcher hands the member's answers: (in_port, frame).
#[derive(Clone)]
pub struct Inbox(mpsc::Sender<(u32, Vec<u8>)>);

impl Inbox {
    /// Hands an answer to the checker; dropped when the checker is behind.
    pub fn deliver(&self, in_port: u32, frame: &[u8]) {
        let _ = self.0.try_send((in_port, frame.to_vec()));
    }
}

/// The agent's side of the health checks: publishes the checks this chassis runs to the checker
/// task, which keeps one probe loop per check.
pub struct Checker {
    checks: watch::Sender<Vec<HealthCheck>>,
    inbox: Inbox,
    /// What the checks were last computed from: the northbound revision, whether the switch was
    /// in sync.
    computed: Option<(u64, bool)>,
}

impl Checker {
    /// Starts the checker task; probe frames go to `frames`, verdicts to `server`.
    pub fn start(server: Server, frames: mpsc::Sender<Frame>) -> Self {
        let (checks, checks_rx) = watch::channel(Vec::new());
        let (inbox, inbox_rx) = mpsc::channel(INBOX);
        let reporter = Reporter::default();
        tokio::spawn(reporter.clone().run(server));
        tokio::spawn(supervise(checks_rx, inbox_rx, frames, reporter));
        Self {
            checks,
            inbox: Inbox(inbox),
            computed: None,
        }
    }

    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// Recomputes the checks from the topology when it may have changed (flows `changed`, or a
    /// new northbound `revision`); while the switch is not in sync no probe runs (its failures
    /// would be the switch's, not the members').
    pub fn follow(&mut self, pipeline: &Pipeline, revision: u64, changed: bool, in_sync: bool) {
        if !changed && self.computed == Some((revision, in_sync)) {
            return;
        }
        self.computed = Some((revision, in_sync));
        let checks = if in_sync {
            health_checks(pipeline.topology())
        } else {
            Vec::new()
        };
        self.checks.send_if_modified(|held| {
            if *held == checks {
                return false;
            }
            *held = checks;
            true
        });
    }
}

/// A running probe loop: stopped when dropped.
struct Running {
    check: HealthCheck,
    answers: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The checker task: starts, restarts and stops probe loops as the checks change, and routes
/// the member's answers to the loops of its checks.
async fn supervise(
    mut checks: watch::Receiver<Vec<HealthCheck>>,
    mut inbox: mpsc::Receiver<(u32, Vec<u8>)>,
    frames: mpsc::Sender<Frame>,
    reporter: Reporter,
) {
    // By member and pool (a member is in one pool; the key is unique).
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        tokio::select! {
            changed = checks.changed() => {
                if changed.is_err() {
                    return;
                }
                let wanted: BTreeMap<String, HealthCheck> = checks
                    .borrow_and_update()
                    .iter()
                    .map(|c| (c.member_id.clone(), c.clone()))
                    .collect();
                running.retain(|id, r| {
                    let keep = wanted.get(id) == Some(&r.check);
                    if !keep {
                        tracing::info!(member = %id, "health check stopped");
                        if !wanted.contains_key(id) {
                            reporter.forget(id);
                        }
                    }
                    keep
                });
                for (id, check) in wanted {
                    if running.contains_key(&id) {
                        continue;
                    }
                    let (answers, answers_rx) = mpsc::channel(ANSWERS);
                    tracing::info!(member = %id, kind = ?check.monitor.kind, ofport = check.ofport, "health check started");
                    let task = tokio::spawn(probe_loop(
                        check.clone(),
                        answers_rx,
                        frames.clone(),
                        reporter.clone(),
                    ));
                    running.insert(id, Running { check, answers, task });
                }
            }
            Some((in_port, frame)) = inbox.recv() => {
                let Some(src) = ipv4_source(&frame) else { continue };
                for r in running.values() {
                    if r.check.ofport == in_port && r.check.member_ip == src {
                        let _ = r.answers.try_send(frame.clone());
                    }
                }
            }
        }
    }
}

/// Probes one member every `delay` seconds and reports its verdicts.
async fn probe_loop(
    check: HealthCheck,
    mut answers: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<Frame>,
    reporter: Reporter,
) {
    let monitor = &check.monitor;
    let mut counter = Counter::new(monitor.max_retries, monitor.max_retries_down);
    let mut every = tokio::time::interval(Duration::from_secs(monitor.delay.max(1).into()));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = Duration::from_secs(monitor.timeout.max(1).into());
    let mut last_port = 0u16;
    let mut sequence = 0u16;
    loop {
        every.tick().await;
        // Answers to earlier probes are stale.
        while answers.try_recv().is_ok() {}
        let port = source_port(last_port);
        last_port = port;
        sequence = sequence.wrapping_add(1);
        let (mut probe, first) = Probe::start(&check, port, fastrand::u32(..), sequence);
        let outcome = run_probe(&check, &mut probe, first, &mut answers, &frames, timeout).await;
        if let Err(why) = &outcome {
            tracing::debug!(member = %check.member_id, "health probe failed: {why}");
        }
        if let Some((health, reason)) = counter.record(outcome) {
            tracing::info!(
                member = %check.member_id,
                pool = %check.pool_id,
                address = %check.member_ip,
                port = check.member_port,
                verdict = health.as_str(),
                "member health changed: {reason}"
            );
            reporter.report(&check.member_id, health);
        }
    }
}

/// Sends `first` and follows the member's answers until the probe is decided or times out.
async fn run_probe(
    check: &HealthCheck,
    probe: &mut Probe,
    first: Vec<Vec<u8>>,
    answers: &mut mpsc::Receiver<Vec<u8>>,
    frames: &mpsc::Sender<Frame>,
    timeout: Duration,
) -> Outcome {
    let send = |out: Vec<Vec<u8>>| async move {
        for frame in out {
            if frames
                .send((probe_actions(check.ofport), frame))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    };
    if !send(first).await {
        return Err("the agent stopped".into());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut again = tokio::time::interval_at(tokio::time::Instant::now() + RETRANSMIT, RETRANSMIT);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!("no answer within {}s ({})", timeout.as_secs(), probe.waiting_for()));
            }
            _ = again.tick() => {
                send(probe.retransmit()).await;
            }
            answer = answers.recv() => {
                let Some(frame) = answer else {
                    return Err("the checker stopped".into());
                };
                let (out, decided) = probe.answer(&frame);
                send(out).await;
                if let Some(outcome) = decided {
                    return outcome;
                }
            }
        }
    }
}

/// A source port for a probe: in the probe range, not the last one's.
fn source_port(last: u16) -> u16 {
    loop {
        let p = fastrand::u16(PROBE_PORTS..=u16::MAX);
        if p != last {
            return p;
        }
    }
}

/// A probe's result: success with what was seen, or why it failed.
pub type Outcome = Result<String, String>;

/// Successes and failures in a row, and the verdict they lead to.
#[derive(Debug)]
pub struct Counter {
    rise: u32,
    fall: u32,
    successes: u32,
    failures: u32,
    verdict: Option<Health>,
}

impl Counter {
    pub fn new(max_retries: u32, max_retries_down: u32) -> Self {
        Self {
            rise: max_retries.max(1),
            fall: max_retries_down.max(1),
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// Counts one probe; the new verdict and why, when it changes.
    pub fn record(&mut self, outcome: Outcome) -> Option<(Health, String)> {
        let (health, count, reason) = match outcome {
            Ok(seen) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (Health::Online, self.successes >= self.rise, seen)
            }
            Err(why) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                (Health::Error, self.failures >= self.fall, why)
            }
        };
        if !count || self.verdict == Some(health) {
            return None;
        }
        self.verdict = Some(health);
        let n = match health {
            Health::Online => self.successes,
            Health::Error => self.failures,
        };
        let what = if health == Health::Online {
            "succeeded"
        } else {
            "failed"
        };
        Some((
            health,
            format!("{n} probe(s) in a row {what}, last: {reason}"),
        ))
    }
}

/// Verdicts to deliver to the server, the latest per member.
#[derive(Clone, Default)]
struct Reporter {
    pending: Arc<Mutex<BTreeMap<String, Health>>>,
    wake: Arc<Notify>,
}

impl Reporter {
    fn report(&self, member: &str, health: Health) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(member.to_string(), health);
        }
        self.wake.notify_one();
    }

    /// A member no longer checked here: what was not delivered is dropped.
    fn forget(&self, member: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(member);
        }
    }

    /// The next verdict to deliver, after `after` (round robin, so that one member's failing
    /// report does not hold the others back).
    fn next(&self, after: &str) -> Option<(String, Health)> {
        let p = self.pending.lock().ok()?;
        let later = p
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .next();
        later
            .or_else(|| p.iter().next())
            .map(|(m, h)| (m.clone(), *h))
    }

    /// Delivers verdicts, retrying with a growing wait while the server fails.
    async fn run(self, server: Server) {
        let mut wait = REPORT_RETRY;
        let mut last = String::new();
        loop {
            let Some((member, health)) = self.next(&last) else {
                self.wake.notified().await;
                continue;
            };
            last = member.clone();
            match server.member_health(&member, health.as_str()).await {
                Ok(()) => {
                    wait = REPORT_RETRY;
                    if let Ok(mut p) = self.pending.lock()
                        && p.get(&member) == Some(&health)
                    {
                        p.remove(&member);
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        member,
                        verdict = health.as_str(),
                        "health report failed: {e}"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(REPORT_RETRY_MAX);
                }
            }
        }
    }
}

/// One probe's state: what it sent, what it waits for.
#[derive(Debug)]
pub struct Probe {
    header: Header,
    state: State,
}

/// The addresses of a probe's frames.
#[derive(Debug, Clone, Copy)]
struct Header {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

#[derive(Debug)]
enum State {
    /// An echo request with this identifier and sequence number.
    Ping { id: u16, seq: u16 },
    /// A TCP probe: its ports and sequence numbers.
    Tcp(Box<Tcp>),
}

#[derive(Debug)]
struct Tcp {
    sport: u16,
    dport: u16,
    /// Our initial sequence number.
    iss: u32,
    /// The next sequence number we send.
    snd_nxt: u32,
    /// The next sequence number we expect (valid once connected).
    rcv_nxt: u32,
    /// The last acknowledgement the member sent.
    their_ack: u32,
    connected: bool,
    /// The request to send once connected (HTTP); `None` for a TCP probe.
    request: Option<Vec<u8>>,
    /// The response so far (up to its first line).
    response: Vec<u8>,
    /// HTTP: expected status codes.
    expects: Option<pipeline::model::HealthMonitor>,
}

impl Probe {
    /// A new probe of `check` from source port `sport` (TCP) or with echo sequence `seq`
    /// (ICMP), and the frames that start it.
    pub fn start(check: &HealthCheck, sport: u16, iss: u32, seq: u16) -> (Self, Vec<Vec<u8>>) {
        let header = Header {
            src_mac: mac_octets(check.source_mac),
            dst_mac: mac_octets(check.member_mac),
            src: check.source_ip,
            dst: check.member_ip,
        };
        let monitor = &check.monitor;
        let state = match monitor.kind {
            MonitorKind::Ping => State::Ping { id: sport, seq },
            kind => State::Tcp(Box::new(Tcp {
                sport,
                dport: check.member_port,
                iss,
                snd_nxt: iss.wrapping_add(1),
                rcv_nxt: 0,
                their_ack: 0,
                connected: false,
                request: (kind == MonitorKind::Http).then(|| {
                    format!(
                        "{} {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
                        monitor.http_method, monitor.url_path, check.member_ip
                    )
                    .into_bytes()
                }),
                response: Vec::new(),
                expects: (kind == MonitorKind::Http).then(|| monitor.clone()),
            })),
        };
        let probe = Self { header, state };
        let first = probe.retransmit();
        (probe, first)
    }

    /// What the probe waits for (for the log).
    fn waiting_for(&self) -> &'static str {
        match &self.state {
            State::Ping { .. } => "echo reply",
            State::Tcp(t) if !t.connected => "SYN-ACK",
            State::Tcp(_) => "HTTP response",
        }
    }

    /// The frames to send again while waiting: the echo request, the SYN, or the request not
    /// yet acknowledged.
    pub fn retransmit(&self) -> Vec<Vec<u8>> {
        let h = &self.header;
        match &self.state {
            State::Ping { id, seq } => vec![echo_request(h, *id, *seq)],
            State::Tcp(t) if !t.connected => {
                vec![tcp_frame(h, t.sport, t.dport, t.iss, 0, SYN, &[])]
            }
            State::Tcp(t) => match &t.request {
                Some(req) if t.their_ack != t.snd_nxt => {
                    let seq = t.snd_nxt.wrapping_sub(req.len() as u32);
                    vec![tcp_frame(
                        h,
                        t.sport,
                        t.dport,
                        seq,
                        t.rcv_nxt,
                        PSH | ACK,
                        req,
                    )]
                }
                _ => Vec::new(),
            },
        }
    }

    /// Takes one frame from the member: the frames to send in answer, and the outcome once the
    /// probe is decided. Frames that are not answers to this probe change nothing.
    pub fn answer(&mut self, frame: &[u8]) -> (Vec<Vec<u8>>, Option<Outcome>) {
        let h = self.header;
        let Some((proto, payload)) = ipv4_payload(frame, h.dst, h.src) else {
            return (Vec::new(), None);
        };
        match &mut self.state {
            State::Ping { id, seq } => {
                let ok = proto == IPPROTO_ICMP
                    && payload.len() >= 8
                    && payload[0] == 0
                    && payload[4..6] == id.to_be_bytes()
                    && payload[6..8] == seq.to_be_bytes();
                if ok {
                    (Vec::new(), Some(Ok("echo reply".into())))
                } else {
                    (Vec::new(), None)
                }
            }
            State::Tcp(t) => {
                if proto != IPPROTO_TCP {
                    return (Vec::new(), None);
                }
                match Segment::parse(payload) {
                    Some(s) if s.sport == t.dport && s.dport == t.sport => t.segment(&h, &s),
                    _ => (Vec::new(), None),
                }
            }
        }
    }
}

/// A TCP segment from the member.
struct Segment<'a> {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &'a [u8],
}

impl<'a> Segment<'a> {
    fn parse(tcp: &'a [u8]) -> Option<Self> {
        let offset = usize::from(tcp.get(12)? >> 4) * 4;
        if offset < TCP_HLEN {
            return None;
        }
        Some(Self {
            sport: u16::from_be_bytes([tcp[0], tcp[1]]),
            dport: u16::from_be_bytes([tcp[2], tcp[3]]),
            seq: u32::from_be_bytes(tcp[4..8].try_into().ok()?),
            ack: u32::from_be_bytes(tcp[8..12].try_into().ok()?),
            flags: tcp[13],
            data: tcp.get(offset..)?,
        })
    }
}

impl Tcp {
    fn rst(&self, h: &Header) -> Vec<u8> {
        tcp_frame(h, self.sport, self.dport, self.their_ack, 0, RST, &[])
    }

    fn ack(&self, h: &Header) -> Vec<u8> {
        tcp_frame(
            h,
            self.sport,
            self.dport,
            self.snd_nxt,
            self.rcv_nxt,
            ACK,
            &[],
        )
    }

    fn segment(&mut self, h: &Header, s: &Segment<'_>) -> (Vec<Vec<u8>>, Option<Outcome>) {
        if s.flags & RST != 0 {
            // A reset for another connection on these ports (an earlier probe's) is not ours.
            let ours = if self.connected {
                s.seq.wrapping_sub(self.rcv_nxt) < 1 << 30
                    || self.rcv_nxt.wrapping_sub(s.seq) < 1 << 30
            } else {
                s.flags & ACK != 0 && s.ack == self.iss.wrapping_add(1)
            };
            if !ours {
                return (Vec::new(), None);
            }
            let why = if self.connected {
                "connection reset by the member"
            } else {
                "connection refused (RST)"
            };
            return (Vec::new(), Some(Err(why.into())));
        }
        if !self.connected {
            if s.flags & (SYN | ACK) != SYN | ACK || s.ack != self.iss.wrapping_add(1) {
                return (Vec::new(), None);
            }
            self.connected = true;
            self.rcv_nxt = s.seq.wrapping_add(1);
            self.their_ack = s.ack;
            let Some(request) = &self.request else {
                // TCP: the handshake is the check; the member frees the connection on our RST.
                return (vec![self.rst(h)], Some(Ok("connected".into())));
            };
            let ack = self.ack(h);
            let data = tcp_frame(
                h,
                self.sport,
                self.dport,
                self.snd_nxt,
                self.rcv_nxt,
                PSH | ACK,
                request,
            );
            self.snd_nxt = self.snd_nxt.wrapping_add(request.len() as u32);
            return (vec![ack, data], None);
        }
        if s.flags & SYN != 0 {
            // The SYN-ACK again: our ACK was lost.
            return (vec![self.ack(h)], None);
        }
        if s.flags & ACK != 0
            && s.ack.wrapping_sub(self.their_ack) <= self.snd_nxt.wrapping_sub(self.their_ack)
        {
            self.their_ack = s.ack;
        }
        // Data at (or overlapping) the next expected sequence number is taken; a segment from
        // the future or all old is answered with the acknowledgement of what we hold.
        let fin = s.flags & FIN != 0;
        let skip = self.rcv_nxt.wrapping_sub(s.seq) as usize;
        if skip > s.data.len() || (skip == s.data.len() && !s.data.is_empty() && !fin) {
            return (vec![self.ack(h)], None);
        }
        let new = &s.data[skip..];
        let room = MAX_STATUS_LINE.saturating_sub(self.response.len());
        self.response.extend_from_slice(&new[..new.len().min(room)]);
        self.rcv_nxt = self.rcv_nxt.wrapping_add(new.len() as u32);
        if fin {
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
        let closed = fin;
        let line_end = self.response.iter().position(|b| *b == b'\n');
        let decided = match line_end {
            Some(end) => Some(self.status(&self.response[..end])),
            None if closed => {
                if self.response.is_empty() {
                    Some(Err(
                        "the member closed the connection without answering".into()
                    ))
                } else {
                    Some(self.status(&self.response))
                }
            }
            None if self.response.len() >= MAX_STATUS_LINE => Some(Err(
                "no HTTP status line in the response's first bytes".into(),
            )),
            None => None,
        };
        match decided {
            // Done: the member frees the connection on our RST.
            Some(outcome) => (vec![self.rst(h)], Some(outcome)),
            None if new.is_empty() && !closed => (Vec::new(), None),
            None => (vec![self.ack(h)], None),
        }
    }

    /// The verdict on an HTTP response's first line.
    fn status(&self, line: &[u8]) -> Outcome {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end();
        let mut words = line.split_ascii_whitespace();
        let code = match (words.next(), words.next()) {
            (Some(v), Some(c)) if v.starts_with("HTTP/") => c.parse::<u16>().ok(),
            _ => None,
        };
        let Some(code) = code else {
            return Err(format!("not an HTTP status line: {line:?}"));
        };
        match &self.expects {
            Some(m) if m.expects(code) => Ok(format!("HTTP {code}")),
            _ => Err(format!("HTTP {code} is not an expected code")),
        }
    }
}

/// The source address of an IPv4 frame.
fn ipv4_source(frame: &[u8]) -> Option<Ipv4Addr> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let b: [u8; 4] = frame.get(ETH_HLEN + 12..ETH_HLEN + 16)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// The protocol and payload of an IPv4 frame from `src` to `dst` (not a fragment).
fn ipv4_payload(frame: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Option<(u8, &[u8])> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(ETH_HLEN..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_HLEN || ip.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if fragment || total < ihl || ip.len() < total {
        return None;
    }
    if ip[12..16] != src.octets() || ip[16..20] != dst.octets() {
        return None;
    }
    Some((ip[9], &ip[ihl..total]))
}

/// An Ethernet + IPv4 frame carrying `payload`.
fn ipv4_frame(h: &Header, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + IPV4_HLEN + payload.len());
    f.extend_from_slice(&h.dst_mac);
    f.extend_from_slice(&h.src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (IPV4_HLEN + payload.len()) as u16;
    let mut ip = [0u8; IPV4_HLEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&fastrand::u16(..).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&h.src.octets());
    ip[16..20].copy_from_slice(&h.dst.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

/// An ICMP echo request.
fn echo_request(h: &Header, id: u16, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"wyvern health check.....");
    let sum = checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4_frame(h, IPPROTO_ICMP, &icmp)
}

/// A TCP segment (no options) in a frame.
fn tcp_frame(
    h: &Header,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(TCP_HLEN + data.len());
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push((TCP_HLEN as u8 / 4) << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(data);
    let len = (tcp.len() as u16).to_be_bytes();
    let sum = checksum(&[
        &h.src.octets(),
        &h.dst.octets(),
        &[0, IPPROTO_TCP],
        &len,
        &tcp,
    ]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4_frame(h, IPPROTO_TCP, &tcp)
}

#[cfg(test)]
mod tests {
    use pipeline::model::HealthMonitor;

    use super::*;

    const MEMBER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    const MEMBER_MAC: u64 = 0xfa16_3e00_0005;
    const VIP_MAC: u64 = 0xfa16_3e00_0100;

    fn check(kind: MonitorKind) -> HealthCheck {
        HealthCheck {
            member_id: "m1".into(),
            pool_id: "p1".into(),
            ofport: 7,
            member_mac: MEMBER_MAC,
            member_ip: MEMBER,
            member_port: 8080,
            source_ip: VIP,
            source_mac: VIP_MAC,
            monitor: HealthMonitor {
                id: "h1".into(),
                pool_id: "p1".into(),
                kind,
                delay: 2,
                timeout: 1,
                max_retries: 2,
                max_retries_down: 3,
                http_method: "GET".into(),
                url_path: "/healthz".into(),
                expected_codes: vec![(200, 204)],
                admin_up: true,
            },
        }
    }

    /// The member's side: frames from the member to the VIP.
    fn member() -> Header {
        Header {
            src_mac: mac_octets(MEMBER_MAC),
            dst_mac: mac_octets(VIP_MAC),
            src: MEMBER,
            dst: VIP,
        }
    }

    /// Checks a probe frame's addresses and checksums; its IP payload.
    fn valid(frame: &[u8], proto: u8) -> &[u8] {
        assert_eq!(&frame[0..6], &mac_octets(MEMBER_MAC), "to the member's MAC");
        assert_eq!(&frame[6..12], &mac_octets(VIP_MAC), "from the VIP's MAC");
        let ip = &frame[ETH_HLEN..];
        assert_eq!(checksum(&[&ip[..IPV4_HLEN]]), 0, "IPv4 header checksum");
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        let (p, payload) = ipv4_payload(frame, VIP, MEMBER).expect("from the VIP to the member");
        assert_eq!(p, proto);
        let sum = match proto {
            IPPROTO_TCP => {
                let len = (payload.len() as u16).to_be_bytes();
                checksum(&[&VIP.octets(), &MEMBER.octets(), &[0, 6], &len, payload])
            }
            _ => checksum(&[payload]),
        };
        assert_eq!(sum, 0, "transport checksum");
        payload
    }

    struct Sent {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        data: Vec<u8>,
    }

    fn tcp(frame: &[u8]) -> Sent {
        let s = Segment::parse(valid(frame, IPPROTO_TCP)).expect("a TCP segment");
        Sent {
            sport: s.sport,
            dport: s.dport,
            seq: s.seq,
            ack: s.ack,
            flags: s.flags,
            data: s.data.to_vec(),
        }
    }

    /// A segment from the member to the probe's port.
    fn from_member(sport: u16, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
        tcp_frame(&member(), 8080, sport, seq, ack, flags, data)
    }

    #[test]
    fn a_ping_is_an_echo_request_answered_by_its_reply() {
        let (mut probe, first) = Probe::start(&check(MonitorKind::Ping), 0xfe10, 0, 3);
        assert_eq!(first.len(), 1);
        let icmp = valid(&first[0], IPPROTO_ICMP);
        assert_eq!(&icmp[0..2], &[8, 0], "echo request");
        assert_eq!(&icmp[4..8], &[0xfe, 0x10, 0, 3], "identifier and sequence");
        // The member's reply: the same with type 0, from the member to the VIP.
        let mut reply = icmp.to_vec();
        reply[0] = 0;
        reply[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&[&reply]);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut other = reply.clone();
        other[7] = 2;
        assert!(
            probe
                .answer(&ipv4_frame(&member(), IPPROTO_ICMP, &other))
                .1
                .is_none(),
            "another probe's reply"
        );
        let (out, decided) = probe.answer(&ipv4_frame(&member(), IPPROTO_ICMP, &reply));
        assert!(out.is_empty());
        assert!(matches!(decided, Some(Ok(_))));
    }

    #[test]
    fn a_tcp_probe_succeeds_on_syn_ack_and_resets() {
        let (mut probe, first) = Probe::start(&check(MonitorKind::Tcp), 0xff01, 1000, 0);
        let syn = tcp(&first[0]);
        assert_eq!((syn.sport, syn.dport, syn.seq), (0xff01, 8080, 1000));
        assert_eq!(syn.flags, SYN);
        // Not for this probe: another port, a wrong acknowledgement.
        let wrong = from_member(0xff02, 5000, 1001, SYN | ACK, &[]);
        assert!(probe.answer(&wrong).1.is_none());
        let wrong = from_member(0xff01, 5000, 77, SYN | ACK, &[]);
        assert!(probe.answer(&wrong).1.is_none());
        let (out, decided) = probe.answer(&from_member(0xff01, 5000, 1001, SYN | ACK, &[]));
        assert!(matches!(decided, Some(Ok(_))), "{decided:?}");
        assert_eq!(out.len(), 1);
        let rst = tcp(&out[0]);
        assert_eq!(rst.flags, RST);
        assert_eq!(rst.seq, 1001, "at the member's acknowledgement");
    }

    #[test]
    fn a_reset_fails_a_tcp_probe_at_once() {
        let (mut probe, _) = Probe::start(&check(MonitorKind::Tcp), 0xff01, 1000, 0);
        let (out, decided) = probe.answer(&from_member(0xff01, 0, 1001, RST | ACK, &[]));
        assert!(out.is_empty());
        assert!(matches!(decided, Some(Err(_))), "{decided:?}");
    }

    /// An HTTP probe through its handshake: the probe and its request's end.
    fn connected_http(codes: Vec<(u16, u16)>) -> (Probe, u32) {
        let mut c = check(MonitorKind::Http);
        c.monitor.expected_codes = codes;
        let (mut probe, _) = Probe::start(&c, 0xfe00, 1000, 0);
        let (out, decided) = probe.answer(&from_member(0xfe00, 5000, 1001, SYN | ACK, &[]));
        assert!(decided.is_none());
        assert_eq!(out.len(), 2, "ACK, then the request");
        let ack = tcp(&out[0]);
        assert_eq!((ack.flags, ack.seq, ack.ack), (ACK, 1001, 5001));
        assert!(ack.data.is_empty());
        let req = tcp(&out[1]);
        assert_eq!((req.flags, req.seq, req.ack), (PSH | ACK, 1001, 5001));
        assert_eq!(
            String::from_utf8(req.data.clone()).unwrap(),
            "GET /healthz HTTP/1.0\r\nHost: 10.0.0.5\r\nConnection: close\r\n\r\n"
        );
        (probe, 1001 + req.data.len() as u32)
    }

    #[test]
    fn an_http_probe_reads_the_status_line_and_resets() {
        let (mut probe, end) = connected_http(vec![(200, 200)]);
        // The member acknowledges the request: nothing to send.
        let (out, decided) = probe.answer(&from_member(0xfe00, 5001, end, ACK, &[]));
        assert!(out.is_empty() && decided.is_none());
        // The status line in two segments: the first is acknowledged.
        let (out, decided) = probe.answer(&from_member(0xfe00, 5001, end, ACK, b"HTTP/1.0 2"));
        assert!(decided.is_none());
        let ack = tcp(&out[0]);
        assert_eq!((ack.flags, ack.seq, ack.ack), (ACK, end, 5011));
        // Sent again (its ACK was lost): acknowledged again, taken once.
        let (out, _) = probe.answer(&from_member(0xfe00, 5001, end, ACK, b"HTTP/1.0 2"));
        assert_eq!(tcp(&out[0]).ack, 5011);
        let (out, decided) = probe.answer(&from_member(
            0xfe00,
            5011,
            end,
            PSH | ACK,
            b"00 OK\r\nServer: x\r\n\r\n",
        ));
        assert_eq!(decided, Some(Ok("HTTP 200".into())));
        let rst = tcp(&out[0]);
        assert_eq!((rst.flags, rst.seq), (RST, end));
    }

    #[test]
    fn an_unexpected_code_fails_and_a_close_ends_the_response() {
        let (mut probe, end) = connected_http(vec![(200, 204)]);
        let (_, decided) = probe.answer(&from_member(
            0xfe00,
            5001,
            end,
            PSH | ACK,
            b"HTTP/1.1 503 Service Unavailable\r\n",
        ));
        assert!(matches!(decided, Some(Err(_))), "{decided:?}");

        // A response without a line end, closed by the member.
        let (mut probe, end) = connected_http(vec![(200, 204)]);
        let (out, decided) = probe.answer(&from_member(
            0xfe00,
            5001,
            end,
            FIN | PSH | ACK,
            b"HTTP/1.0 204 No Content",
        ));
        assert_eq!(decided, Some(Ok("HTTP 204".into())));
        assert_eq!(tcp(&out[0]).flags, RST);

        // Closed without a word.
        let (mut probe, end) = connected_http(vec![(200, 204)]);
        let (_, decided) = probe.answer(&from_member(0xfe00, 5001, end, FIN | ACK, &[]));
        assert!(matches!(decided, Some(Err(_))));

        // Reset.
        let (mut probe, end) = connected_http(vec![(200, 204)]);
        let (_, decided) = probe.answer(&from_member(0xfe00, 5001, end, RST | ACK, &[]));
        assert!(matches!(decided, Some(Err(_))));
    }

    #[test]
    fn unanswered_frames_are_sent_again() {
        let (probe, first) = Probe::start(&check(MonitorKind::Http), 0xfe00, 1000, 0);
        assert_eq!(tcp(&probe.retransmit()[0]).flags, SYN);
        assert_eq!(tcp(&first[0]).seq, 1000);
        let (mut probe, end) = connected_http(vec![(200, 200)]);
        let again = probe.retransmit();
        assert_eq!(
            tcp(&again[0]).flags,
            PSH | ACK,
            "the request, not acknowledged"
        );
        probe.answer(&from_member(0xfe00, 5001, end, ACK, &[]));
        assert!(probe.retransmit().is_empty(), "acknowledged");
    }

    #[test]
    fn verdicts_come_from_successes_and_failures_in_a_row() {
        let ok = || Ok("fine".to_string());
        let fail = || Err("refused".to_string());
        let mut c = Counter::new(2, 3);
        assert_eq!(c.record(fail()), None);
        assert_eq!(c.record(fail()), None);
        let (h, why) = c.record(fail()).expect("the first verdict at once");
        assert_eq!(h, Health::Error);
        assert!(
            why.contains("3 probe(s)") && why.contains("refused"),
            "{why}"
        );
        assert_eq!(c.record(fail()), None, "no change");
        assert_eq!(c.record(ok()), None);
        assert_eq!(c.record(fail()), None, "the count starts again");
        assert_eq!(c.record(ok()), None);
        assert_eq!(c.record(ok()).map(|v| v.0), Some(Health::Online));
        assert_eq!(c.record(ok()), None);
        assert_eq!(c.record(fail()), None);
        assert_eq!(c.record(fail()), None);
        assert_eq!(c.record(fail()).map(|v| v.0), Some(Health::Error));
        // A healthy member's first verdict.
        let mut c = Counter::new(1, 3);
        assert_eq!(c.record(ok()).map(|v| v.0), Some(Health::Online));
    }

    #[test]
    fn probes_use_new_ports_in_the_probe_range() {
        let mut last = 0;
        for _ in 0..2000 {
            let p = source_port(last);
            assert!(p >= 65024 && p != last);
            last = p;
        }
    }

    #[test]
    fn latest_pending_verdicts_are_delivered_in_turn() {
        let r = Reporter::default();
        r.report("b", Health::Error);
        r.report("a", Health::Error);
        r.report("a", Health::Online);
        assert_eq!(r.next(""), Some(("a".into(), Health::Online)));
        assert_eq!(r.next("a"), Some(("b".into(), Health::Error)));
        assert_eq!(r.next("b"), Some(("a".into(), Health::Online)));
        r.forget("a");
        assert_eq!(r.next("b"), Some(("b".into(), Health::Error)));
    }

    /// A server that answers 503 to its first request and 200 to the others, and tells each
    /// request's path and body.
    async fn fake_server() -> (String, mpsc::UnboundedReceiver<(String, String)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break (String::new(), String::new());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if text.len() >= end + 4 + length {
                            break (text[..end].to_string(), text[end + 4..].to_string());
                        }
                    }
                };
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let status = if first {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                first = false;
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = tx.send((path, body));
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn the_checker_probes_reports_and_stops() {
        let (url, mut requests) = fake_server().await;
        let server = Server::new(nb_sync::Servers::parse(&url));
        let (checks, checks_rx) = watch::channel(Vec::new());
        let (inbox, inbox_rx) = mpsc::channel(INBOX);
        let inbox = Inbox(inbox);
        let (frames, mut sent) = mpsc::channel(FRAMES);
        let reporter = Reporter::default();
        tokio::spawn(reporter.clone().run(server));
        tokio::spawn(supervise(checks_rx, inbox_rx, frames, reporter));
        let mut c = check(MonitorKind::Tcp);
        (
            c.monitor.delay,
            c.monitor.max_retries,
            c.monitor.max_retries_down,
        ) = (1, 1, 1);
        checks.send_replace(vec![c]);
        let wait = Duration::from_secs(5);

        // The first probe is refused: ERROR, reported again after the server's 503.
        let (actions, frame) = tokio::time::timeout(wait, sent.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(actions, probe_actions(7));
        let syn = tcp(&frame);
        assert_eq!(syn.flags, SYN);
        inbox.deliver(7, &from_member(syn.sport, 0, syn.seq + 1, RST | ACK, &[]));
        for _ in 0..2 {
            let (path, body) = tokio::time::timeout(wait, requests.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(path, "/wyvern/v1/members/m1/health");
            assert_eq!(body, r#"{"health":"ERROR"}"#);
        }

        // The next one connects: ONLINE, and the member's connection is reset.
        let (_, frame) = tokio::time::timeout(wait, sent.recv())
            .await
            .unwrap()
            .unwrap();
        let syn2 = tcp(&frame);
        assert_ne!(syn2.sport, syn.sport, "another source port");
        // An answer from another port of the chassis is not the member's.
        inbox.deliver(8, &from_member(syn2.sport, 9, syn2.seq + 1, SYN | ACK, &[]));
        inbox.deliver(7, &from_member(syn2.sport, 9, syn2.seq + 1, SYN | ACK, &[]));
        let (_, frame) = tokio::time::timeout(wait, sent.recv())
            .await
            .unwrap()
            .unwrap();
        let rst = tcp(&frame);
        assert_eq!((rst.flags, rst.seq), (RST, syn2.seq + 1));
        let (_, body) = tokio::time::timeout(wait, requests.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body, r#"{"health":"ONLINE"}"#);

        // Without the check nothing more is sent.
        checks.send_replace(Vec::new());
        while sent.try_recv().is_ok() {}
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), sent.recv())
                .await
                .is_err()
        );
    }
}
