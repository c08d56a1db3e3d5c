//! OpenFlow 1.3 messages (plus the Nicira and ONF extensions OVS uses) and their codec.
//!
//! [`Message::encode`] produces one complete message with the given xid; [`Message::decode`]
//! takes exactly one message (use [`frame_len`] to cut a byte stream into messages). Decoding
//! checks every length against its container and never allocates more than the input's size.

use crate::action::{Action, decode_actions, encode_actions, prop, read_prop};
use crate::error::{DecodeError, invalid};
use crate::field::{ONF_EXPERIMENTER, port};
use crate::flow::{Flow, FlowMod, Instructions};
use crate::matching::Match;
use crate::wire::{Reader, Writer, round8};

/// OpenFlow 1.3 wire version.
pub const OFP13_VERSION: u8 = 0x04;
/// Size of the OpenFlow header.
pub const HEADER_LEN: usize = 8;
/// Nicira experimenter id.
pub const NX_EXPERIMENTER: u32 = 0x0000_2320;

/// Message type numbers.
pub mod ofpt {
    #![allow(missing_docs)]
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const EXPERIMENTER: u8 = 4;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const GET_CONFIG_REQUEST: u8 = 7;
    pub const GET_CONFIG_REPLY: u8 = 8;
    pub const SET_CONFIG: u8 = 9;
    pub const PACKET_IN: u8 = 10;
    pub const FLOW_REMOVED: u8 = 11;
    pub const PORT_STATUS: u8 = 12;
    pub const PACKET_OUT: u8 = 13;
    pub const FLOW_MOD: u8 = 14;
    pub const GROUP_MOD: u8 = 15;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
    pub const ROLE_REQUEST: u8 = 24;
    pub const ROLE_REPLY: u8 = 25;
    pub const SET_ASYNC: u8 = 28;
    pub const METER_MOD: u8 = 29;
}

const NXT_SET_PACKET_IN_FORMAT: u32 = 16;
const NXT_TLV_TABLE_MOD: u32 = 24;
const NXT_RESUME: u32 = 28;
const NXT_PACKET_IN2: u32 = 30;
const ONFT_BUNDLE_CONTROL: u32 = 2300;
const ONFT_BUNDLE_ADD: u32 = 2301;

/// Length of the message starting at `buf`, once its header is complete.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| usize::from(u16::from_be_bytes([buf[2], buf[3]])))
}

/// An error reply. `data` holds (the start of) the request that failed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorMsg {
    /// Error type (0xffff = experimenter).
    pub ty: u16,
    /// Error code (experimenter code for experimenter errors).
    pub code: u16,
    /// Experimenter id for experimenter errors.
    pub experimenter: Option<u32>,
    /// The failed request (at least its first 64 bytes).
    pub data: Vec<u8>,
}

impl ErrorMsg {
    /// `OFPBMC_BAD_PREREQ`-style name.
    pub fn name(&self) -> String {
        crate::errors::error_name(self.ty, self.code, self.experimenter)
    }
}

/// FEATURES_REPLY body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// Datapath id.
    pub datapath_id: u64,
    /// Packet buffers.
    pub n_buffers: u32,
    /// Number of tables.
    pub n_tables: u8,
    /// Auxiliary connection id.
    pub auxiliary_id: u8,
    /// Capability bits.
    pub capabilities: u32,
}

/// GET_CONFIG_REPLY / SET_CONFIG body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SwitchConfig {
    /// Fragment handling flags.
    pub flags: u16,
    /// Bytes of a table-miss packet sent to the controller.
    pub miss_send_len: u16,
}

/// SET_ASYNC body: `[master/equal, slave]` masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AsyncConfig {
    /// Packet-in reasons wanted.
    pub packet_in_mask: [u32; 2],
    /// Port-status reasons wanted.
    pub port_status_mask: [u32; 2],
    /// Flow-removed reasons wanted.
    pub flow_removed_mask: [u32; 2],
}

/// ROLE_REQUEST / ROLE_REPLY body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Role {
    /// 0 nochange, 1 equal, 2 master, 3 slave.
    pub role: u32,
    /// Generation id.
    pub generation_id: u64,
}

/// Group types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupType {
    /// Every bucket.
    All = 0,
    /// One bucket, by hash.
    Select = 1,
    /// The single bucket.
    Indirect = 2,
    /// The first live bucket.
    FastFailover = 3,
}

impl GroupType {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Self::All,
            1 => Self::Select,
            2 => Self::Indirect,
            3 => Self::FastFailover,
            _ => {
                return Err(DecodeError::Unknown {
                    what: "group type",
                    value: v.into(),
                });
            }
        })
    }
    /// `ovs-ofctl` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Select => "select",
            Self::Indirect => "indirect",
            Self::FastFailover => "ff",
        }
    }
}

/// A group bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// Weight (select groups).
    pub weight: u16,
    /// Liveness port (fast-failover), [`port::ANY`] if none.
    pub watch_port: u32,
    /// Liveness group (fast-failover), `ANY_GROUP` if none.
    pub watch_group: u32,
    /// Actions.
    pub actions: Vec<Action>,
}

impl Bucket {
    /// A bucket with `actions` and no weight/watch.
    pub fn new(actions: Vec<Action>) -> Self {
        Bucket {
            weight: 0,
            watch_port: port::ANY,
            watch_group: crate::flow::ANY_GROUP,
            actions,
        }
    }
}

/// A group (GROUP_MOD body and group-description entry).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    /// Group id.
    pub group_id: u32,
    /// Type.
    pub group_type: GroupType,
    /// Buckets.
    pub buckets: Vec<Bucket>,
}

/// GROUP_MOD commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupModCommand {
    /// Add.
    Add = 0,
    /// Replace buckets.
    Modify = 1,
    /// Delete.
    Delete = 2,
}

/// GROUP_MOD.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupMod {
    /// Command.
    pub command: GroupModCommand,
    /// The group.
    pub group: Group,
}

/// A meter band.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MeterBand {
    /// `None` = drop; `Some(prec_level)` = DSCP remark.
    pub dscp_remark: Option<u8>,
    /// Rate (kbps or pktps per meter flags).
    pub rate: u32,
    /// Burst size.
    pub burst_size: u32,
}

/// Meter flags.
pub mod meter_flags {
    /// Rate in kb/s.
    pub const KBPS: u16 = 1;
    /// Rate in packets/s.
    pub const PKTPS: u16 = 2;
    /// Use burst size.
    pub const BURST: u16 = 4;
    /// Collect statistics.
    pub const STATS: u16 = 8;
}

/// METER_MOD.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeterMod {
    /// 0 add, 1 modify, 2 delete.
    pub command: u16,
    /// [`meter_flags`].
    pub flags: u16,
    /// Meter id.
    pub meter_id: u32,
    /// Bands.
    pub bands: Vec<MeterBand>,
}

/// Standard PACKET_IN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PacketIn {
    /// Buffer id (`NO_BUFFER` if none).
    pub buffer_id: u32,
    /// Full length of the frame.
    pub total_len: u16,
    /// Reason.
    pub reason: u8,
    /// Table of the flow that sent it.
    pub table_id: u8,
    /// Cookie of that flow.
    pub cookie: u64,
    /// Pipeline metadata (in_port, registers, …).
    pub match_: Match,
    /// The frame.
    pub data: Vec<u8>,
}

/// Nicira packet-in2 (and the body of NXT_RESUME).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PacketIn2 {
    /// The frame (possibly truncated).
    pub packet: Vec<u8>,
    /// Length before truncation, if truncated.
    pub full_len: Option<u32>,
    /// Buffer id, if buffered.
    pub buffer_id: Option<u32>,
    /// Table id.
    pub table_id: u8,
    /// Flow cookie.
    pub cookie: u64,
    /// Reason.
    pub reason: u8,
    /// Pipeline metadata.
    pub metadata: Match,
    /// `controller(userdata=...)`.
    pub userdata: Option<Vec<u8>>,
    /// Opaque continuation (`controller(pause)`), sent back in NXT_RESUME.
    pub continuation: Option<Vec<u8>>,
}

/// PACKET_OUT.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PacketOut {
    /// Buffer id or `NO_BUFFER`.
    pub buffer_id: u32,
    /// Input port to pretend ([`port::CONTROLLER`] for none).
    pub in_port: u32,
    /// Actions.
    pub actions: Vec<Action>,
    /// Frame (if not buffered).
    pub data: Vec<u8>,
}

/// A port description.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Port {
    /// Port number.
    pub port_no: u32,
    /// MAC address.
    pub hw_addr: [u8; 6],
    /// Name.
    pub name: String,
    /// Config bits.
    pub config: u32,
    /// State bits.
    pub state: u32,
    /// Current features.
    pub curr: u32,
    /// Advertised features.
    pub advertised: u32,
    /// Supported features.
    pub supported: u32,
    /// Peer features.
    pub peer: u32,
    /// Current speed (kbps).
    pub curr_speed: u32,
    /// Max speed (kbps).
    pub max_speed: u32,
}

/// `PORT_STATUS` reasons.
pub mod port_reason {
    /// The port was added.
    pub const ADD: u8 = 0;
    /// The port was deleted.
    pub const DELETE: u8 = 1;
}

/// PORT_STATUS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortStatus {
    /// 0 add ([`port_reason::ADD`]), 1 delete ([`port_reason::DELETE`]), 2 modify.
    pub reason: u8,
    /// The port.
    pub port: Port,
}

/// FLOW_REMOVED: a flow with `send_flow_rem` expired or was deleted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowRemoved {
    /// Cookie.
    pub cookie: u64,
    /// Priority.
    pub priority: u16,
    /// 0 idle timeout, 1 hard timeout, 2 delete, 3 group delete, 4 meter delete, 5 eviction.
    pub reason: u8,
    /// Table.
    pub table_id: u8,
    /// Age, seconds part.
    pub duration_sec: u32,
    /// Age, nanoseconds part.
    pub duration_nsec: u32,
    /// Idle timeout.
    pub idle_timeout: u16,
    /// Hard timeout.
    pub hard_timeout: u16,
    /// Packets.
    pub packet_count: u64,
    /// Bytes.
    pub byte_count: u64,
    /// Match.
    pub match_: Match,
}

/// One Geneve option ↔ `tun_metadataN` mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlvMapping {
    /// Option class.
    pub class: u16,
    /// Option type.
    pub ty: u8,
    /// Option length in bytes (use 4 with this crate's 32-bit `tun_metadata`).
    pub len: u8,
    /// `N` of `tun_metadataN`.
    pub index: u16,
}

/// NXT_TLV_TABLE_MOD: maps Geneve options to `tun_metadataN` fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlvTableMod {
    /// 0 add, 1 delete, 2 clear.
    pub command: u16,
    /// Mappings.
    pub mappings: Vec<TlvMapping>,
}

/// Flow/aggregate stats request filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowStatsRequest {
    /// Table or `ALL_TABLES`.
    pub table: u8,
    /// Output port filter.
    pub out_port: u32,
    /// Output group filter.
    pub out_group: u32,
    /// Cookie.
    pub cookie: u64,
    /// Cookie mask.
    pub cookie_mask: u64,
    /// Match (loose).
    pub match_: Match,
}

impl Default for FlowStatsRequest {
    fn default() -> Self {
        FlowStatsRequest {
            table: crate::flow::ALL_TABLES,
            out_port: port::ANY,
            out_group: crate::flow::ANY_GROUP,
            cookie: 0,
            cookie_mask: 0,
            match_: Match::new(),
        }
    }
}

/// One flow-stats entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowStats {
    /// The flow.
    pub flow: Flow,
    /// Age, seconds part.
    pub duration_sec: u32,
    /// Age, nanoseconds part.
    pub duration_nsec: u32,
    /// Packets.
    pub packet_count: u64,
    /// Bytes.
    pub byte_count: u64,
}

/// Multipart requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MultipartRequest {
    /// Flow statistics.
    Flow(FlowStatsRequest),
    /// Aggregate statistics.
    Aggregate(FlowStatsRequest),
    /// Group descriptions.
    GroupDesc,
    /// Port descriptions.
    PortDesc,
}

/// Multipart replies (one part; see the connection for reassembly).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MultipartReply {
    /// Flow statistics.
    Flow(Vec<FlowStats>),
    /// Aggregate statistics.
    Aggregate {
        /// Packets.
        packet_count: u64,
        /// Bytes.
        byte_count: u64,
        /// Flows.
        flow_count: u32,
    },
    /// Group descriptions.
    GroupDesc(Vec<Group>),
    /// Port descriptions.
    PortDesc(Vec<Port>),
}

/// Bundle control types.
pub mod bundle_ctrl {
    #![allow(missing_docs)]
    pub const OPEN_REQUEST: u16 = 0;
    pub const OPEN_REPLY: u16 = 1;
    pub const CLOSE_REQUEST: u16 = 2;
    pub const CLOSE_REPLY: u16 = 3;
    pub const COMMIT_REQUEST: u16 = 4;
    pub const COMMIT_REPLY: u16 = 5;
    pub const DISCARD_REQUEST: u16 = 6;
    pub const DISCARD_REPLY: u16 = 7;
    /// Flag: all or nothing.
    pub const ATOMIC: u16 = 1;
    /// Flag: apply in order.
    pub const ORDERED: u16 = 2;
}

/// Bundle control (ONF extension 2300 in OpenFlow 1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BundleCtrl {
    /// Bundle id.
    pub bundle_id: u32,
    /// [`bundle_ctrl`] type.
    pub ctrl_type: u16,
    /// [`bundle_ctrl`] flags.
    pub flags: u16,
}

/// A message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// HELLO; `Some(bitmap)` carries a version-bitmap element.
    Hello(Option<u32>),
    /// ERROR.
    Error(ErrorMsg),
    /// ECHO_REQUEST with payload.
    EchoRequest(Vec<u8>),
    /// ECHO_REPLY with payload.
    EchoReply(Vec<u8>),
    /// FEATURES_REQUEST.
    FeaturesRequest,
    /// FEATURES_REPLY.
    FeaturesReply(Features),
    /// GET_CONFIG_REQUEST.
    GetConfigRequest,
    /// GET_CONFIG_REPLY.
    GetConfigReply(SwitchConfig),
    /// SET_CONFIG.
    SetConfig(SwitchConfig),
    /// SET_ASYNC.
    SetAsync(AsyncConfig),
    /// ROLE_REQUEST.
    RoleRequest(Role),
    /// ROLE_REPLY.
    RoleReply(Role),
    /// BARRIER_REQUEST.
    BarrierRequest,
    /// BARRIER_REPLY.
    BarrierReply,
    /// FLOW_MOD.
    FlowMod(FlowMod),
    /// GROUP_MOD.
    GroupMod(GroupMod),
    /// METER_MOD.
    MeterMod(MeterMod),
    /// PACKET_IN.
    PacketIn(PacketIn),
    /// Nicira NXT_PACKET_IN2.
    PacketIn2(PacketIn2),
    /// Nicira NXT_RESUME (continue a paused pipeline).
    Resume(PacketIn2),
    /// Nicira NXT_TLV_TABLE_MOD.
    TlvTableMod(TlvTableMod),
    /// Nicira NXT_SET_PACKET_IN_FORMAT (0 standard, 2 packet-in2).
    SetPacketInFormat(u32),
    /// PACKET_OUT.
    PacketOut(PacketOut),
    /// PORT_STATUS.
    PortStatus(PortStatus),
    /// FLOW_REMOVED.
    FlowRemoved(FlowRemoved),
    /// MULTIPART_REQUEST with flags.
    MultipartRequest(u16, MultipartRequest),
    /// MULTIPART_REPLY with flags (bit 0 = more to come).
    MultipartReply(u16, MultipartReply),
    /// Bundle control.
    BundleCtrl(BundleCtrl),
    /// Bundle add: `(bundle_id, flags, message)`; the inner message uses the outer xid.
    BundleAdd(u32, u16, Box<Message>),
}

fn header(out: &mut Vec<u8>, ty: u8, xid: u32) -> usize {
    let s = out.len();
    out.u8(OFP13_VERSION);
    out.u8(ty);
    out.u16(0);
    out.u32(xid);
    s
}

fn exp_header(out: &mut Vec<u8>, xid: u32, exp: u32, sub: u32) -> usize {
    let s = header(out, ofpt::EXPERIMENTER, xid);
    out.u32(exp);
    out.u32(sub);
    s
}

fn encode_port(out: &mut Vec<u8>, p: &Port) {
    out.u32(p.port_no);
    out.zeros(4);
    out.extend_from_slice(&p.hw_addr);
    out.zeros(2);
    let mut name = [0u8; 16];
    let n = p.name.len().min(15);
    name[..n].copy_from_slice(&p.name.as_bytes()[..n]);
    out.extend_from_slice(&name);
    for v in [
        p.config,
        p.state,
        p.curr,
        p.advertised,
        p.supported,
        p.peer,
        p.curr_speed,
        p.max_speed,
    ] {
        out.u32(v);
    }
}

fn decode_port(r: &mut Reader<'_>) -> Result<Port, DecodeError> {
    let port_no = r.u32()?;
    r.skip(4)?;
    let mut hw_addr = [0u8; 6];
    hw_addr.copy_from_slice(r.bytes(6)?);
    r.skip(2)?;
    let raw = r.bytes(16)?;
    let end = raw.iter().position(|b| *b == 0).unwrap_or(16);
    let name = String::from_utf8_lossy(&raw[..end]).into_owned();
    Ok(Port {
        port_no,
        hw_addr,
        name,
        config: r.u32()?,
        state: r.u32()?,
        curr: r.u32()?,
        advertised: r.u32()?,
        supported: r.u32()?,
        peer: r.u32()?,
        curr_speed: r.u32()?,
        max_speed: r.u32()?,
    })
}

fn encode_buckets(out: &mut Vec<u8>, buckets: &[Bucket]) {
    for b in buckets {
        let s = out.len();
        out.u16(0);
        out.u16(b.weight);
        out.u32(b.watch_port);
        out.u32(b.watch_group);
        out.zeros(4);
        encode_actions(&b.actions, out);
        out.patch_u16(s, out.len() - s);
    }
}

fn decode_buckets(buf: &[u8]) -> Result<Vec<Bucket>, DecodeError> {
    let mut r = Reader::new(buf, "bucket");
    let mut v = Vec::new();
    while !r.is_empty() {
        let len = usize::from(r.u16()?);
        if len < 16 || !len.is_multiple_of(8) {
            return Err(DecodeError::BadLength {
                what: "bucket",
                len,
            });
        }
        let mut b = r.sub(len - 2, "bucket body")?;
        let weight = b.u16()?;
        let watch_port = b.u32()?;
        let watch_group = b.u32()?;
        b.skip(4)?;
        v.push(Bucket {
            weight,
            watch_port,
            watch_group,
            actions: decode_actions(b.rest())?,
        });
    }
    Ok(v)
}

fn encode_flow_stats_request(out: &mut Vec<u8>, f: &FlowStatsRequest) {
    out.u8(f.table);
    out.zeros(3);
    out.u32(f.out_port);
    out.u32(f.out_group);
    out.zeros(4);
    out.u64(f.cookie);
    out.u64(f.cookie_mask);
    f.match_.encode(out);
}

fn decode_flow_stats_request(r: &mut Reader<'_>) -> Result<FlowStatsRequest, DecodeError> {
    let table = r.u8()?;
    r.skip(3)?;
    let out_port = r.u32()?;
    let out_group = r.u32()?;
    r.skip(4)?;
    Ok(FlowStatsRequest {
        table,
        out_port,
        out_group,
        cookie: r.u64()?,
        cookie_mask: r.u64()?,
        match_: Match::decode(r)?,
    })
}

fn encode_pin2_props(out: &mut Vec<u8>, p: &PacketIn2) {
    prop(out, 0, &p.packet);
    if let Some(l) = p.full_len {
        prop(out, 1, &l.to_be_bytes());
    }
    if let Some(b) = p.buffer_id {
        prop(out, 2, &b.to_be_bytes());
    }
    prop(out, 3, &[p.table_id]);
    let mut ck = vec![0u8; 4];
    ck.extend_from_slice(&p.cookie.to_be_bytes());
    prop(out, 4, &ck);
    prop(out, 5, &[p.reason]);
    let mut md = Vec::new();
    p.metadata.encode_oxms(&mut md);
    prop(out, 6, &md);
    if let Some(u) = &p.userdata {
        prop(out, 7, u);
    }
    if let Some(c) = &p.continuation {
        prop(out, 8, c);
    }
}

fn decode_pin2(r: &mut Reader<'_>) -> Result<PacketIn2, DecodeError> {
    let mut p = PacketIn2::default();
    while !r.is_empty() {
        let (ty, v) = read_prop(r)?;
        let mut pr = Reader::new(v, "packet-in2 property");
        match ty {
            0 => p.packet = v.to_vec(),
            1 => p.full_len = Some(pr.u32()?),
            2 => p.buffer_id = Some(pr.u32()?),
            3 => p.table_id = pr.u8()?,
            4 => {
                if v.len() == 12 {
                    pr.skip(4)?;
                }
                p.cookie = pr.u64()?;
            }
            5 => p.reason = pr.u8()?,
            6 => p.metadata = Match::decode_oxms(v)?,
            7 => p.userdata = Some(v.to_vec()),
            8 => p.continuation = Some(v.to_vec()),
            _ if ty & 0x8000 != 0 => {}
            _ => {
                return Err(DecodeError::Unknown {
                    what: "packet-in2 property",
                    value: ty.into(),
                });
            }
        }
    }
    Ok(p)
}

impl Message {
    /// Encodes the message with `xid`.
    pub fn encode(&self, xid: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(xid, &mut out);
        out
    }

    /// Appends the encoded message to `out`.
    pub fn encode_into(&self, xid: u32, out: &mut Vec<u8>) {
        let s = match self {
            Message::Hello(bitmap) => {
                let s = header(out, ofpt::HELLO, xid);
                if let Some(b) = bitmap {
                    out.u16(1);
                    out.u16(8);
                    out.u32(*b);
                }
                s
            }
            Message::Error(e) => {
                let s = header(out, ofpt::ERROR, xid);
                match e.experimenter {
                    Some(exp) => {
                        out.u16(0xffff);
                        out.u16(e.code);
                        out.u32(exp);
                    }
                    None => {
                        out.u16(e.ty);
                        out.u16(e.code);
                    }
                }
                out.extend_from_slice(&e.data);
                s
            }
            Message::EchoRequest(d) | Message::EchoReply(d) => {
                let ty = if matches!(self, Message::EchoRequest(_)) {
                    ofpt::ECHO_REQUEST
                } else {
                    ofpt::ECHO_REPLY
                };
                let s = header(out, ty, xid);
                out.extend_from_slice(d);
                s
            }
            Message::FeaturesRequest => header(out, ofpt::FEATURES_REQUEST, xid),
            Message::FeaturesReply(f) => {
                let s = header(out, ofpt::FEATURES_REPLY, xid);
                out.u64(f.datapath_id);
                out.u32(f.n_buffers);
                out.u8(f.n_tables);
                out.u8(f.auxiliary_id);
                out.zeros(2);
                out.u32(f.capabilities);
                out.u32(0);
                s
            }
            Message::GetConfigRequest => header(out, ofpt::GET_CONFIG_REQUEST, xid),
            Message::GetConfigReply(c) | Message::SetConfig(c) => {
                let ty = if matches!(self, Message::SetConfig(_)) {
                    ofpt::SET_CONFIG
                } else {
                    ofpt::GET_CONFIG_REPLY
                };
                let s = header(out, ty, xid);
                out.u16(c.flags);
                out.u16(c.miss_send_len);
                s
            }
            Message::SetAsync(a) => {
                let s = header(out, ofpt::SET_ASYNC, xid);
                for v in a
                    .packet_in_mask
                    .iter()
                    .chain(&a.port_status_mask)
                    .chain(&a.flow_removed_mask)
                {
                    out.u32(*v);
                }
                s
            }
            Message::RoleRequest(r) | Message::RoleReply(r) => {
                let ty = if matches!(self, Message::RoleRequest(_)) {
                    ofpt::ROLE_REQUEST
                } else {
                    ofpt::ROLE_REPLY
                };
                let s = header(out, ty, xid);
                out.u32(r.role);
                out.zeros(4);
                out.u64(r.generation_id);
                s
            }
            Message::BarrierRequest => header(out, ofpt::BARRIER_REQUEST, xid),
            Message::BarrierReply => header(out, ofpt::BARRIER_REPLY, xid),
            Message::FlowMod(fm) => {
                let s = header(out, ofpt::FLOW_MOD, xid);
                fm.encode_body(out);
                s
            }
            Message::GroupMod(gm) => {
                let s = header(out, ofpt::GROUP_MOD, xid);
                out.u16(gm.command as u16);
                out.u8(gm.group.group_type as u8);
                out.u8(0);
                out.u32(gm.group.group_id);
                encode_buckets(out, &gm.group.buckets);
                s
            }
            Message::MeterMod(mm) => {
                let s = header(out, ofpt::METER_MOD, xid);
                out.u16(mm.command);
                out.u16(mm.flags);
                out.u32(mm.meter_id);
                for b in &mm.bands {
                    out.u16(if b.dscp_remark.is_some() { 2 } else { 1 });
                    out.u16(16);
                    out.u32(b.rate);
                    out.u32(b.burst_size);
                    out.u8(b.dscp_remark.unwrap_or(0));
                    out.zeros(3);
                }
                s
            }
            Message::PacketIn(p) => {
                let s = header(out, ofpt::PACKET_IN, xid);
                out.u32(p.buffer_id);
                out.u16(p.total_len);
                out.u8(p.reason);
                out.u8(p.table_id);
                out.u64(p.cookie);
                p.match_.encode(out);
                out.zeros(2);
                out.extend_from_slice(&p.data);
                s
            }
            Message::PacketIn2(p) | Message::Resume(p) => {
                let sub = if matches!(self, Message::PacketIn2(_)) {
                    NXT_PACKET_IN2
                } else {
                    NXT_RESUME
                };
                let s = exp_header(out, xid, NX_EXPERIMENTER, sub);
                encode_pin2_props(out, p);
                s
            }
            Message::TlvTableMod(t) => {
                let s = exp_header(out, xid, NX_EXPERIMENTER, NXT_TLV_TABLE_MOD);
                out.u16(t.command);
                out.zeros(6);
                for m in &t.mappings {
                    out.u16(m.class);
                    out.u8(m.ty);
                    out.u8(m.len);
                    out.u16(m.index);
                    out.zeros(2);
                }
                s
            }
            Message::SetPacketInFormat(f) => {
                let s = exp_header(out, xid, NX_EXPERIMENTER, NXT_SET_PACKET_IN_FORMAT);
                out.u32(*f);
                s
            }
            Message::PacketOut(p) => {
                let s = header(out, ofpt::PACKET_OUT, xid);
                out.u32(p.buffer_id);
                out.u32(p.in_port);
                let al = out.len();
                out.u16(0);
                out.zeros(6);
                let a0 = out.len();
                encode_actions(&p.actions, out);
                let alen = out.len() - a0;
                out.patch_u16(al, alen);
                out.extend_from_slice(&p.data);
                s
            }
            Message::FlowRemoved(f) => {
                let s = header(out, ofpt::FLOW_REMOVED, xid);
                out.u64(f.cookie);
                out.u16(f.priority);
                out.u8(f.reason);
                out.u8(f.table_id);
                out.u32(f.duration_sec);
                out.u32(f.duration_nsec);
                out.u16(f.idle_timeout);
                out.u16(f.hard_timeout);
                out.u64(f.packet_count);
                out.u64(f.byte_count);
                f.match_.encode(out);
                s
            }
            Message::PortStatus(p) => {
                let s = header(out, ofpt::PORT_STATUS, xid);
                out.u8(p.reason);
                out.zeros(7);
                encode_port(out, &p.port);
                s
            }
            Message::MultipartRequest(flags, req) => {
                let s = header(out, ofpt::MULTIPART_REQUEST, xid);
                let ty = match req {
                    MultipartRequest::Flow(_) => 1,
                    MultipartRequest::Aggregate(_) => 2,
                    MultipartRequest::GroupDesc => 7,
                    MultipartRequest::PortDesc => 13,
                };
                out.u16(ty);
                out.u16(*flags);
                out.zeros(4);
                if let MultipartRequest::Flow(f) | MultipartRequest::Aggregate(f) = req {
                    encode_flow_stats_request(out, f);
                }
                s
            }
            Message::MultipartReply(flags, rep) => {
                let s = header(out, ofpt::MULTIPART_REPLY, xid);
                let ty = match rep {
                    MultipartReply::Flow(_) => 1,
                    MultipartReply::Aggregate { .. } => 2,
                    MultipartReply::GroupDesc(_) => 7,
                    MultipartReply::PortDesc(_) => 13,
                };
                out.u16(ty);
                out.u16(*flags);
                out.zeros(4);
                match rep {
                    MultipartReply::Flow(stats) => {
                        for st in stats {
                            let e = out.len();
                            let f = &st.flow;
                            out.u16(0);
                            out.u8(f.table);
                            out.u8(0);
                            out.u32(st.duration_sec);
                            out.u32(st.duration_nsec);
                            out.u16(f.priority);
                            out.u16(f.idle_timeout);
                            out.u16(f.hard_timeout);
                            out.u16(f.flags);
                            out.zeros(4);
                            out.u64(f.cookie);
                            out.u64(st.packet_count);
                            out.u64(st.byte_count);
                            f.match_.encode(out);
                            f.instructions.encode(out);
                            out.patch_u16(e, out.len() - e);
                        }
                    }
                    MultipartReply::Aggregate {
                        packet_count,
                        byte_count,
                        flow_count,
                    } => {
                        out.u64(*packet_count);
                        out.u64(*byte_count);
                        out.u32(*flow_count);
                        out.zeros(4);
                    }
                    MultipartReply::GroupDesc(groups) => {
                        for g in groups {
                            let e = out.len();
                            out.u16(0);
                            out.u8(g.group_type as u8);
                            out.u8(0);
                            out.u32(g.group_id);
                            encode_buckets(out, &g.buckets);
                            out.patch_u16(e, out.len() - e);
                        }
                    }
                    MultipartReply::PortDesc(ports) => {
                        for p in ports {
                            encode_port(out, p);
                        }
                    }
                }
                s
            }
            Message::BundleCtrl(b) => {
                let s = exp_header(out, xid, ONF_EXPERIMENTER, ONFT_BUNDLE_CONTROL);
                out.u32(b.bundle_id);
                out.u16(b.ctrl_type);
                out.u16(b.flags);
                s
            }
            Message::BundleAdd(id, flags, inner) => {
                let s = exp_header(out, xid, ONF_EXPERIMENTER, ONFT_BUNDLE_ADD);
                out.u32(*id);
                out.zeros(2);
                out.u16(*flags);
                inner.encode_into(xid, out);
                s
            }
        };
        out.patch_u16(s + 2, out.len() - s);
    }

    /// Decodes one complete message; returns its xid and the message.
    pub fn decode(buf: &[u8]) -> Result<(u32, Message), DecodeError> {
        Self::decode_depth(buf, 0)
    }

    fn decode_depth(buf: &[u8], depth: u8) -> Result<(u32, Message), DecodeError> {
        let mut r = Reader::new(buf, "openflow header");
        let version = r.u8()?;
        let ty = r.u8()?;
        let len = usize::from(r.u16()?);
        let xid = r.u32()?;
        if version != OFP13_VERSION && ty != ofpt::HELLO {
            return Err(DecodeError::BadVersion(version));
        }
        if len < HEADER_LEN || len != buf.len() {
            return Err(DecodeError::BadLength {
                what: "openflow message",
                len,
            });
        }
        let msg = match ty {
            ofpt::HELLO => {
                let mut bitmap = None;
                while r.remaining() >= 4 {
                    let ety = r.u16()?;
                    let elen = usize::from(r.u16()?);
                    if elen < 4 {
                        return Err(DecodeError::BadLength {
                            what: "hello element",
                            len: elen,
                        });
                    }
                    let mut e = r.sub(elen - 4, "hello element")?;
                    r.skip((round8(elen) - elen).min(r.remaining()))?;
                    if ety == 1 && bitmap.is_none() {
                        bitmap = Some(e.u32()?);
                    }
                }
                Message::Hello(bitmap)
            }
            ofpt::ERROR => {
                let t = r.u16()?;
                let code = r.u16()?;
                let experimenter = if t == 0xffff { Some(r.u32()?) } else { None };
                Message::Error(ErrorMsg {
                    ty: t,
                    code,
                    experimenter,
                    data: r.rest().to_vec(),
                })
            }
            ofpt::ECHO_REQUEST => Message::EchoRequest(r.rest().to_vec()),
            ofpt::ECHO_REPLY => Message::EchoReply(r.rest().to_vec()),
            ofpt::FEATURES_REQUEST => Message::FeaturesRequest,
            ofpt::FEATURES_REPLY => {
                let datapath_id = r.u64()?;
                let n_buffers = r.u32()?;
                let n_tables = r.u8()?;
                let auxiliary_id = r.u8()?;
                r.skip(2)?;
                Message::FeaturesReply(Features {
                    datapath_id,
                    n_buffers,
                    n_tables,
                    auxiliary_id,
                    capabilities: r.u32()?,
                })
            }
            ofpt::GET_CONFIG_REQUEST => Message::GetConfigRequest,
            ofpt::GET_CONFIG_REPLY | ofpt::SET_CONFIG => {
                let c = SwitchConfig {
                    flags: r.u16()?,
                    miss_send_len: r.u16()?,
                };
                if ty == ofpt::SET_CONFIG {
                    Message::SetConfig(c)
                } else {
                    Message::GetConfigReply(c)
                }
            }
            ofpt::SET_ASYNC => Message::SetAsync(AsyncConfig {
                packet_in_mask: [r.u32()?, r.u32()?],
                port_status_mask: [r.u32()?, r.u32()?],
                flow_removed_mask: [r.u32()?, r.u32()?],
            }),
            ofpt::ROLE_REQUEST | ofpt::ROLE_REPLY => {
                let role = r.u32()?;
                r.skip(4)?;
                let ro = Role {
                    role,
                    generation_id: r.u64()?,
                };
                if ty == ofpt::ROLE_REQUEST {
                    Message::RoleRequest(ro)
                } else {
                    Message::RoleReply(ro)
                }
            }
            ofpt::BARRIER_REQUEST => Message::BarrierRequest,
            ofpt::BARRIER_REPLY => Message::BarrierReply,
            ofpt::FLOW_MOD => Message::FlowMod(FlowMod::decode_body(&mut r)?),
            ofpt::GROUP_MOD => {
                let command = match r.u16()? {
                    0 => GroupModCommand::Add,
                    1 => GroupModCommand::Modify,
                    2 => GroupModCommand::Delete,
                    c => {
                        return Err(DecodeError::Unknown {
                            what: "group-mod command",
                            value: c.into(),
                        });
                    }
                };
                let group_type = GroupType::from_u8(r.u8()?)?;
                r.skip(1)?;
                let group_id = r.u32()?;
                Message::GroupMod(GroupMod {
                    command,
                    group: Group {
                        group_id,
                        group_type,
                        buckets: decode_buckets(r.rest())?,
                    },
                })
            }
            ofpt::METER_MOD => {
                let command = r.u16()?;
                let flags = r.u16()?;
                let meter_id = r.u32()?;
                let mut bands = Vec::new();
                while !r.is_empty() {
                    let bty = r.u16()?;
                    let blen = usize::from(r.u16()?);
                    if blen != 16 {
                        return Err(DecodeError::BadLength {
                            what: "meter band",
                            len: blen,
                        });
                    }
                    let rate = r.u32()?;
                    let burst_size = r.u32()?;
                    let prec = r.u8()?;
                    r.skip(3)?;
                    let dscp_remark = match bty {
                        1 => None,
                        2 => Some(prec),
                        _ => {
                            return Err(DecodeError::Unknown {
                                what: "meter band type",
                                value: bty.into(),
                            });
                        }
                    };
                    bands.push(MeterBand {
                        dscp_remark,
                        rate,
                        burst_size,
                    });
                }
                Message::MeterMod(MeterMod {
                    command,
                    flags,
                    meter_id,
                    bands,
                })
            }
            ofpt::PACKET_IN => {
                let buffer_id = r.u32()?;
                let total_len = r.u16()?;
                let reason = r.u8()?;
                let table_id = r.u8()?;
                let cookie = r.u64()?;
                let match_ = Match::decode(&mut r)?;
                r.skip(2)?;
                Message::PacketIn(PacketIn {
                    buffer_id,
                    total_len,
                    reason,
                    table_id,
                    cookie,
                    match_,
                    data: r.rest().to_vec(),
                })
            }
            ofpt::PACKET_OUT => {
                let buffer_id = r.u32()?;
                let in_port = r.u32()?;
                let alen = usize::from(r.u16()?);
                r.skip(6)?;
                let actions = decode_actions(r.bytes(alen)?)?;
                Message::PacketOut(PacketOut {
                    buffer_id,
                    in_port,
                    actions,
                    data: r.rest().to_vec(),
                })
            }
            ofpt::FLOW_REMOVED => Message::FlowRemoved(FlowRemoved {
                cookie: r.u64()?,
                priority: r.u16()?,
                reason: r.u8()?,
                table_id: r.u8()?,
                duration_sec: r.u32()?,
                duration_nsec: r.u32()?,
                idle_timeout: r.u16()?,
                hard_timeout: r.u16()?,
                packet_count: r.u64()?,
                byte_count: r.u64()?,
                match_: Match::decode(&mut r)?,
            }),
            ofpt::PORT_STATUS => {
                let reason = r.u8()?;
                r.skip(7)?;
                Message::PortStatus(PortStatus {
                    reason,
                    port: decode_port(&mut r)?,
                })
            }
            ofpt::MULTIPART_REQUEST => {
                let mty = r.u16()?;
                let flags = r.u16()?;
                r.skip(4)?;
                let req = match mty {
                    1 => MultipartRequest::Flow(decode_flow_stats_request(&mut r)?),
                    2 => MultipartRequest::Aggregate(decode_flow_stats_request(&mut r)?),
                    7 => MultipartRequest::GroupDesc,
                    13 => MultipartRequest::PortDesc,
                    _ => {
                        return Err(DecodeError::Unknown {
                            what: "multipart type",
                            value: mty.into(),
                        });
                    }
                };
                Message::MultipartRequest(flags, req)
            }
            ofpt::MULTIPART_REPLY => {
                let mty = r.u16()?;
                let flags = r.u16()?;
                r.skip(4)?;
                Message::MultipartReply(flags, decode_multipart_reply(mty, &mut r)?)
            }
            ofpt::EXPERIMENTER => {
                let exp = r.u32()?;
                let sub = r.u32()?;
                match (exp, sub) {
                    (NX_EXPERIMENTER, NXT_PACKET_IN2) => Message::PacketIn2(decode_pin2(&mut r)?),
                    (NX_EXPERIMENTER, NXT_RESUME) => Message::Resume(decode_pin2(&mut r)?),
                    (NX_EXPERIMENTER, NXT_TLV_TABLE_MOD) => {
                        let command = r.u16()?;
                        r.skip(6)?;
                        let mut mappings = Vec::new();
                        while !r.is_empty() {
                            let class = r.u16()?;
                            let ty = r.u8()?;
                            let len = r.u8()?;
                            let index = r.u16()?;
                            r.skip(2)?;
                            mappings.push(TlvMapping {
                                class,
                                ty,
                                len,
                                index,
                            });
                        }
                        Message::TlvTableMod(TlvTableMod { command, mappings })
                    }
                    (NX_EXPERIMENTER, NXT_SET_PACKET_IN_FORMAT) => {
                        Message::SetPacketInFormat(r.u32()?)
                    }
                    (ONF_EXPERIMENTER, ONFT_BUNDLE_CONTROL) => {
                        let b = BundleCtrl {
                            bundle_id: r.u32()?,
                            ctrl_type: r.u16()?,
                            flags: r.u16()?,
                        };
                        Message::BundleCtrl(b)
                    }
                    (ONF_EXPERIMENTER, ONFT_BUNDLE_ADD) => {
                        if depth > 0 {
                            return Err(invalid("bundle add", "nested bundle"));
                        }
                        let id = r.u32()?;
                        r.skip(2)?;
                        let flags = r.u16()?;
                        let inner = r.rest();
                        let ilen = frame_len(inner).ok_or(DecodeError::Truncated {
                            what: "bundled message",
                            need: 4,
                            have: inner.len(),
                        })?;
                        let inner = inner.get(..ilen).ok_or(DecodeError::BadLength {
                            what: "bundled message",
                            len: ilen,
                        })?;
                        let (_, m) = Self::decode_depth(inner, depth + 1)?;
                        Message::BundleAdd(id, flags, Box::new(m))
                    }
                    _ => {
                        return Err(DecodeError::Unknown {
                            what: "experimenter message",
                            value: (u64::from(exp) << 32) | u64::from(sub),
                        });
                    }
                }
            }
            _ => {
                return Err(DecodeError::Unknown {
                    what: "message type",
                    value: ty.into(),
                });
            }
        };
        Ok((xid, msg))
    }
}

fn decode_multipart_reply(mty: u16, r: &mut Reader<'_>) -> Result<MultipartReply, DecodeError> {
    Ok(match mty {
        1 => {
            let mut v = Vec::new();
            while !r.is_empty() {
                let len = usize::from(r.u16()?);
                if len < 56 {
                    return Err(DecodeError::BadLength {
                        what: "flow stats",
                        len,
                    });
                }
                let mut e = r.sub(len - 2, "flow stats")?;
                let table = e.u8()?;
                e.skip(1)?;
                let duration_sec = e.u32()?;
                let duration_nsec = e.u32()?;
                let priority = e.u16()?;
                let idle_timeout = e.u16()?;
                let hard_timeout = e.u16()?;
                let flags = e.u16()?;
                e.skip(4)?;
                let cookie = e.u64()?;
                let packet_count = e.u64()?;
                let byte_count = e.u64()?;
                let match_ = Match::decode(&mut e)?;
                let instructions = Instructions::decode(e.rest())?;
                v.push(FlowStats {
                    flow: Flow {
                        table,
                        priority,
                        cookie,
                        match_,
                        instructions,
                        idle_timeout,
                        hard_timeout,
                        flags,
                    },
                    duration_sec,
                    duration_nsec,
                    packet_count,
                    byte_count,
                });
            }
            MultipartReply::Flow(v)
        }
        2 => {
            let packet_count = r.u64()?;
            let byte_count = r.u64()?;
            MultipartReply::Aggregate {
                packet_count,
                byte_count,
                flow_count: r.u32()?,
            }
        }
        7 => {
            let mut v = Vec::new();
            while !r.is_empty() {
                let len = usize::from(r.u16()?);
                if len < 8 {
                    return Err(DecodeError::BadLength {
                        what: "group desc",
                        len,
                    });
                }
                let mut e = r.sub(len - 2, "group desc")?;
                let group_type = GroupType::from_u8(e.u8()?)?;
                e.skip(1)?;
                let group_id = e.u32()?;
                v.push(Group {
                    group_id,
                    group_type,
                    buckets: decode_buckets(e.rest())?,
                });
            }
            MultipartReply::GroupDesc(v)
        }
        13 => {
            let mut v = Vec::new();
            while !r.is_empty() {
                v.push(decode_port(r)?);
            }
            MultipartReply::PortDesc(v)
        }
        _ => {
            return Err(DecodeError::Unknown {
                what: "multipart type",
                value: mty.into(),
            });
        }
    })
}
