//! Flows: [`Instructions`], [`Flow`] (what the pipeline computes and diffs) and [`FlowMod`]
//! (the OpenFlow message that installs, changes or deletes flows), with their codecs and text.
//!
//! Text forms: [`Flow`]'s `Display` is the `ovs-ofctl --no-stats dump-flows` line (which
//! `ovs-ofctl add-flow` also accepts) and `FromStr` parses it back; [`FlowMod::ofp_print`] is
//! what `ovs-ofctl ofp-print` shows for the message body.

use std::fmt;

use crate::action::{Action, decode_actions, encode_actions, format_actions};
use crate::error::{DecodeError, invalid};
use crate::field::port;
use crate::matching::Match;
use crate::wire::{Reader, Writer};

pub use crate::ofp::{ALL_TABLES, ANY_GROUP, DEFAULT_PRIORITY, NO_BUFFER};

/// Flow-mod flags.
pub mod flow_flags {
    /// Send a flow-removed message when the flow expires or is deleted.
    pub const SEND_FLOW_REM: u16 = 1;
    /// Refuse to add an overlapping flow.
    pub const CHECK_OVERLAP: u16 = 2;
    /// Reset counters on modify.
    pub const RESET_COUNTS: u16 = 4;
    /// Do not count packets.
    pub const NO_PKT_COUNTS: u16 = 8;
    /// Do not count bytes.
    pub const NO_BYT_COUNTS: u16 = 16;
    /// Names, lowest bit first.
    pub const NAMES: [(u16, &str); 5] = [
        (SEND_FLOW_REM, "send_flow_rem"),
        (CHECK_OVERLAP, "check_overlap"),
        (RESET_COUNTS, "reset_counts"),
        (NO_PKT_COUNTS, "no_packet_counts"),
        (NO_BYT_COUNTS, "no_byte_counts"),
    ];
}

/// The instructions of a flow, in their canonical order. An empty apply list means "no
/// apply-actions instruction"; a flow with no instruction at all drops.
///
/// Apply-actions and `goto_table` are held inline; the instructions a flow rarely has (`meter`,
/// `clear_actions`, `write_actions`, `write_metadata`) in a box of their own, absent when none is
/// set. An agent holds tens of thousands of flows, several times over: with all six inline an
/// `Instructions` was 88 bytes, now 40 (issue 17).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Instructions {
    /// Apply-actions.
    pub apply: Vec<Action>,
    /// `goto_table:N`.
    pub goto_table: Option<u8>,
    /// Never `Some` of all defaults, so that equal instructions compare and hash equal.
    rare: Option<Box<Rare>>,
}

/// The instructions few flows have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Rare {
    meter: Option<u32>,
    clear: bool,
    write: Option<Vec<Action>>,
    write_metadata: Option<(u64, u64)>,
}

mod ofpit {
    pub const GOTO_TABLE: u16 = 1;
    pub const WRITE_METADATA: u16 = 2;
    pub const WRITE_ACTIONS: u16 = 3;
    pub const APPLY_ACTIONS: u16 = 4;
    pub const CLEAR_ACTIONS: u16 = 5;
    pub const METER: u16 = 6;
}

impl Instructions {
    /// Only apply-actions.
    pub fn apply(actions: Vec<Action>) -> Self {
        Instructions {
            apply: actions,
            ..Default::default()
        }
    }

    /// Builder: add `goto_table`.
    pub fn goto(mut self, table: u8) -> Self {
        self.goto_table = Some(table);
        self
    }

    /// `meter:N`.
    pub fn meter(&self) -> Option<u32> {
        self.rare.as_ref()?.meter
    }

    /// `clear_actions`.
    pub fn clear(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.clear)
    }

    /// `write_actions(...)`.
    pub fn write(&self) -> Option<&[Action]> {
        self.rare.as_ref()?.write.as_deref()
    }

    /// `write_metadata:VALUE/MASK`.
    pub fn write_metadata(&self) -> Option<(u64, u64)> {
        self.rare.as_ref()?.write_metadata
    }

    pub fn set_meter(&mut self, meter: Option<u32>) {
        self.change_rare(|r| r.meter = meter);
    }

    pub fn set_clear(&mut self, clear: bool) {
        self.change_rare(|r| r.clear = clear);
    }

    pub fn set_write(&mut self, write: Option<Vec<Action>>) {
        self.change_rare(|r| r.write = write);
    }

    pub fn set_write_metadata(&mut self, value_mask: Option<(u64, u64)>) {
        self.change_rare(|r| r.write_metadata = value_mask);
    }

    /// Changes the rare instructions, keeping them absent when none is set.
    fn change_rare(&mut self, change: impl FnOnce(&mut Rare)) {
        let mut rare = self.rare.take().unwrap_or_default();
        change(&mut rare);
        if *rare != Rare::default() {
            self.rare = Some(rare);
        }
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some(m) = self.meter() {
            out.u16(ofpit::METER);
            out.u16(8);
            out.u32(m);
        }
        let list = |out: &mut Vec<u8>, ty: u16, actions: &[Action]| {
            let s = out.len();
            out.u16(ty);
            out.u16(0);
            out.zeros(4);
            encode_actions(actions, out);
            out.patch_u16(s + 2, out.len() - s);
        };
        if !self.apply.is_empty() {
            list(out, ofpit::APPLY_ACTIONS, &self.apply);
        }
        if self.clear() {
            out.u16(ofpit::CLEAR_ACTIONS);
            out.u16(8);
            out.zeros(4);
        }
        if let Some(w) = self.write() {
            list(out, ofpit::WRITE_ACTIONS, w);
        }
        if let Some((v, m)) = self.write_metadata() {
            out.u16(ofpit::WRITE_METADATA);
            out.u16(24);
            out.zeros(4);
            out.u64(v);
            out.u64(m);
        }
        if let Some(t) = self.goto_table {
            out.u16(ofpit::GOTO_TABLE);
            out.u16(8);
            out.u8(t);
            out.zeros(3);
        }
    }

    /// Decodes instructions filling `buf`.
    pub fn decode(buf: &[u8]) -> Result<Instructions, DecodeError> {
        let mut r = Reader::new(buf, "instruction");
        let mut ins = Instructions::default();
        let mut seen = 0u32;
        while !r.is_empty() {
            let ty = r.u16()?;
            let len = usize::from(r.u16()?);
            if len < 8 || !len.is_multiple_of(8) {
                return Err(DecodeError::BadLength {
                    what: "instruction",
                    len,
                });
            }
            let mut b = r.sub(len - 4, "instruction body")?;
            if ty < 32 {
                if seen & (1 << ty) != 0 {
                    return Err(invalid(
                        "instructions",
                        format!("duplicate instruction {ty}"),
                    ));
                }
                seen |= 1 << ty;
            }
            match ty {
                ofpit::GOTO_TABLE => ins.goto_table = Some(b.u8()?),
                ofpit::WRITE_METADATA => {
                    b.skip(4)?;
                    ins.set_write_metadata(Some((b.u64()?, b.u64()?)));
                }
                ofpit::WRITE_ACTIONS => {
                    b.skip(4)?;
                    ins.set_write(Some(decode_actions(b.rest())?));
                }
                ofpit::APPLY_ACTIONS => {
                    b.skip(4)?;
                    ins.apply = decode_actions(b.rest())?;
                }
                ofpit::CLEAR_ACTIONS => ins.set_clear(true),
                ofpit::METER => ins.set_meter(Some(b.u32()?)),
                _ => {
                    return Err(DecodeError::Unknown {
                        what: "instruction",
                        value: ty.into(),
                    });
                }
            }
        }
        Ok(ins)
    }

    /// Whether there is no instruction (the flow drops).
    pub fn is_drop(&self) -> bool {
        *self == Instructions::default()
    }
}

impl fmt::Display for Instructions {
    /// `ovs-ofctl` form of the instructions (after `actions=`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_drop() {
            return f.write_str("drop");
        }
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !std::mem::take(&mut first) {
                f.write_str(",")?;
            }
            Ok(())
        };
        if let Some(m) = self.meter() {
            sep(f)?;
            write!(f, "meter:{m}")?;
        }
        if !self.apply.is_empty() {
            sep(f)?;
            format_actions(&self.apply, f)?;
        }
        if self.clear() {
            sep(f)?;
            f.write_str("clear_actions")?;
        }
        if let Some(w) = self.write() {
            sep(f)?;
            f.write_str("write_actions(")?;
            format_actions(w, f)?;
            f.write_str(")")?;
        }
        if let Some((v, m)) = self.write_metadata() {
            sep(f)?;
            if m == u64::MAX {
                write!(f, "write_metadata:{v:#x}")?;
            } else {
                write!(f, "write_metadata:{v:#x}/{m:#x}")?;
            }
        }
        if let Some(t) = self.goto_table {
            sep(f)?;
            write!(f, "goto_table:{t}")?;
        }
        Ok(())
    }
}

/// A flow entry: what the pipeline computes and compares with what is installed.
///
/// Equality is total (including timeouts, flags and cookie); use [`Flow::key`] to pair a
/// desired flow with an installed one (OpenFlow identifies a flow by table, priority and match).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Table id.
    pub table: u8,
    /// Priority.
    pub priority: u16,
    /// Cookie.
    pub cookie: u64,
    /// Match.
    pub match_: Match,
    /// Instructions.
    pub instructions: Instructions,
    /// Idle timeout in seconds (0 = none).
    pub idle_timeout: u16,
    /// Hard timeout in seconds (0 = none).
    pub hard_timeout: u16,
    /// [`flow_flags`].
    pub flags: u16,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            match_: Match::new(),
            instructions: Instructions::default(),
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
        }
    }
}

/// The identity of a flow in a switch: table, priority and match.
pub type FlowKey = (u8, u16, Match);

impl Flow {
    /// A flow in `table` at `priority` with `match_` applying `actions`.
    pub fn new(table: u8, priority: u16, match_: Match, actions: Vec<Action>) -> Self {
        Flow {
            table,
            priority,
            match_,
            instructions: Instructions::apply(actions),
            ..Flow::default()
        }
    }

    /// Builder: set the cookie.
    pub fn cookie(mut self, cookie: u64) -> Self {
        self.cookie = cookie;
        self
    }

    /// Builder: replace the instructions.
    pub fn instructions(mut self, ins: Instructions) -> Self {
        self.instructions = ins;
        self
    }

    /// Table, priority and match.
    pub fn key(&self) -> FlowKey {
        (self.table, self.priority, self.match_.clone())
    }

    /// `priority=N,match` as `ovs-ofctl` prints it (priority omitted when it is the default).
    pub fn match_text(&self) -> String {
        let mut t = Vec::new();
        if self.priority != DEFAULT_PRIORITY {
            t.push(format!("priority={}", self.priority));
        }
        self.match_.format_tokens(&mut t);
        t.join(",")
    }
}

fn flag_names(flags: u16) -> impl Iterator<Item = &'static str> {
    flow_flags::NAMES
        .iter()
        .filter(move |(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
}

/// Counters shown by `ovs-ofctl dump-flows` (without `--no-stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowCounters {
    /// Age, seconds part.
    pub duration_sec: u32,
    /// Age, nanoseconds part.
    pub duration_nsec: u32,
    /// Packets.
    pub packet_count: u64,
    /// Bytes.
    pub byte_count: u64,
}

/// A duration as OVS prints it: `12s`, `12.345s`, `3.512345678s` (no trailing zeros).
pub(crate) fn format_duration(sec: u32, nsec: u32) -> String {
    if nsec == 0 {
        format!("{sec}s")
    } else {
        format!("{sec}.{}s", format!("{nsec:09}").trim_end_matches('0'))
    }
}

impl Flow {
    /// The `ovs-ofctl dump-flows` line: with counters, or the `--no-stats` form without.
    pub fn format_line(&self, counters: Option<&FlowCounters>) -> String {
        let mut head = Vec::new();
        if self.cookie != 0 || counters.is_some() {
            head.push(format!("cookie={:#x}", self.cookie));
        }
        if let Some(c) = counters {
            head.push(format!(
                "duration={}",
                format_duration(c.duration_sec, c.duration_nsec)
            ));
        }
        if self.table != 0 || counters.is_some() {
            head.push(format!("table={}", self.table));
        }
        if let Some(c) = counters {
            head.push(format!("n_packets={}", c.packet_count));
            head.push(format!("n_bytes={}", c.byte_count));
        }
        if self.idle_timeout != 0 {
            head.push(format!("idle_timeout={}", self.idle_timeout));
        }
        if self.hard_timeout != 0 {
            head.push(format!("hard_timeout={}", self.hard_timeout));
        }
        let mut s = String::from(" ");
        for h in head {
            s.push_str(&h);
            s.push_str(", ");
        }
        for n in flag_names(self.flags) {
            s.push_str(n);
            s.push(' ');
        }
        let m = self.match_text();
        s.push_str(&m);
        if !m.is_empty() {
            s.push(' ');
        }
        s.push_str("actions=");
        s.push_str(&self.instructions.to_string());
        s
    }
}

impl fmt::Display for Flow {
    /// The `ovs-ofctl --no-stats dump-flows` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format_line(None))
    }
}

/// Flow-mod commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    /// Add (or replace) a flow.
    Add = 0,
    /// Modify matching flows (loose).
    Modify = 1,
    /// Modify the flow with exactly this match and priority.
    ModifyStrict = 2,
    /// Delete matching flows (loose).
    Delete = 3,
    /// Delete the flow with exactly this match and priority.
    DeleteStrict = 4,
}

impl FlowModCommand {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Self::Add,
            1 => Self::Modify,
            2 => Self::ModifyStrict,
            3 => Self::Delete,
            4 => Self::DeleteStrict,
            _ => {
                return Err(DecodeError::Unknown {
                    what: "flow-mod command",
                    value: v.into(),
                });
            }
        })
    }
    fn name(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Modify => "MOD",
            Self::ModifyStrict => "MOD_STRICT",
            Self::Delete => "DEL",
            Self::DeleteStrict => "DEL_STRICT",
        }
    }
}

/// OFPT_FLOW_MOD.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowMod {
    /// Command.
    pub command: FlowModCommand,
    /// The flow (for deletes: table, priority, match and cookie select flows).
    pub flow: Flow,
    /// Cookie mask for modify/delete (0 = cookie not matched).
    pub cookie_mask: u64,
    /// Buffered packet to apply to ([`NO_BUFFER`]).
    pub buffer_id: u32,
    /// Deletes: only flows outputting to this port ([`port::ANY`]).
    pub out_port: u32,
    /// Deletes: only flows outputting to this group ([`ANY_GROUP`]).
    pub out_group: u32,
}

impl FlowMod {
    /// An `ADD` of `flow`.
    pub fn add(flow: Flow) -> Self {
        FlowMod {
            command: FlowModCommand::Add,
            flow,
            cookie_mask: 0,
            buffer_id: NO_BUFFER,
            out_port: port::ANY,
            out_group: ANY_GROUP,
        }
    }

    /// A `DELETE_STRICT` of the flow with `flow`'s key.
    pub fn delete_strict(flow: &Flow) -> Self {
        let f = Flow {
            table: flow.table,
            priority: flow.priority,
            match_: flow.match_.clone(),
            ..Flow::default()
        };
        FlowMod {
            command: FlowModCommand::DeleteStrict,
            ..FlowMod::add(f)
        }
    }

    /// A loose `DELETE` of every flow in `table` (or [`ALL_TABLES`]) whose cookie matches.
    pub fn delete_cookie(table: u8, cookie: u64, cookie_mask: u64) -> Self {
        let f = Flow {
            table,
            cookie,
            ..Flow::default()
        };
        FlowMod {
            command: FlowModCommand::Delete,
            cookie_mask,
            ..FlowMod::add(f)
        }
    }

    /// Appends the body (after the OpenFlow header).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        let f = &self.flow;
        out.u64(f.cookie);
        out.u64(self.cookie_mask);
        out.u8(f.table);
        out.u8(self.command as u8);
        out.u16(f.idle_timeout);
        out.u16(f.hard_timeout);
        out.u16(f.priority);
        out.u32(self.buffer_id);
        out.u32(self.out_port);
        out.u32(self.out_group);
        out.u16(f.flags);
        out.zeros(2);
        f.match_.encode(out);
        f.instructions.encode(out);
    }

    /// Decodes the body.
    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<FlowMod, DecodeError> {
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let table = r.u8()?;
        let command = FlowModCommand::from_u8(r.u8()?)?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        let buffer_id = r.u32()?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        let flags = r.u16()?;
        r.skip(2)?;
        let match_ = Match::decode(r)?;
        let instructions = Instructions::decode(r.rest())?;
        Ok(FlowMod {
            command,
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
            cookie_mask,
            buffer_id,
            out_port,
            out_group,
        })
    }

    /// The text `ovs-ofctl ofp-print` shows after the message header.
    pub fn ofp_print(&self) -> String {
        let f = &self.flow;
        let mut p = vec![self.command.name().to_string()];
        if f.table != 0 {
            p.push(format!("table:{}", f.table));
        }
        let m = f.match_text();
        if !m.is_empty() {
            p.push(m);
        }
        if self.command == FlowModCommand::Add {
            if f.cookie != 0 {
                p.push(format!("cookie:{:#x}", f.cookie));
            }
        } else if self.cookie_mask != 0 {
            p.push(format!("cookie:{:#x}/{:#x}", f.cookie, self.cookie_mask));
        }
        if f.idle_timeout != 0 {
            p.push(format!("idle:{}", f.idle_timeout));
        }
        if f.hard_timeout != 0 {
            p.push(format!("hard:{}", f.hard_timeout));
        }
        if self.buffer_id != NO_BUFFER {
            p.push(format!("buf:{:#x}", self.buffer_id));
        }
        if self.out_port != port::ANY {
            p.push(format!(
                "out_port:{}",
                crate::field::port_name(self.out_port)
            ));
        }
        p.extend(flag_names(f.flags).map(str::to_string));
        p.push(format!("actions={}", f.instructions));
        p.join(" ")
    }
}

/// The flow-mods that turn the `installed` flows into the `desired` ones: a strict delete for
/// every installed flow whose [`Flow::key`] is not desired, then an add for every desired flow
/// that is missing or differs (an add replaces the flow with the same key, cookie, timeouts and
/// flags included). Deterministic order: deletes, then adds, each sorted by key. Send the
/// result in one bundle to apply it atomically.
pub fn diff<'a>(
    desired: impl IntoIterator<Item = &'a Flow>,
    installed: impl IntoIterator<Item = &'a Flow>,
) -> Vec<FlowMod> {
    use std::collections::HashMap;
    let want: HashMap<FlowKey, &Flow> = desired.into_iter().map(|f| (f.key(), f)).collect();
    let have: HashMap<FlowKey, &Flow> = installed.into_iter().map(|f| (f.key(), f)).collect();
    let mut deletes: Vec<(&FlowKey, &Flow)> = have
        .iter()
        .filter(|(k, _)| !want.contains_key(*k))
        .map(|(k, f)| (k, *f))
        .collect();
    let mut adds: Vec<(&FlowKey, &Flow)> = want
        .iter()
        .filter(|(k, f)| have.get(*k) != Some(*f))
        .map(|(k, f)| (k, *f))
        .collect();
    deletes.sort_by(|a, b| a.0.cmp(b.0));
    adds.sort_by(|a, b| a.0.cmp(b.0));
    deletes
        .into_iter()
        .map(|(_, f)| FlowMod::delete_strict(f))
        .chain(adds.into_iter().map(|(_, f)| FlowMod::add(f.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Field;

    fn flow(reg: u128, out: u32) -> Flow {
        Flow::new(
            0,
            10,
            Match::new().with(Field::Reg(0), reg),
            vec![Action::Output {
                port: out,
                max_len: 0,
            }],
        )
    }

    #[test]
    fn diff_deletes_adds_and_replaces() {
        let installed = [flow(1, 1), flow(2, 2), flow(3, 3)];
        let desired = [flow(1, 1), flow(2, 9), flow(4, 4)];
        let mods = diff(&desired, &installed);
        let summary: Vec<(FlowModCommand, u128)> = mods
            .iter()
            .map(|m| (m.command, m.flow.match_.exact(Field::Reg(0)).unwrap()))
            .collect();
        assert_eq!(
            summary,
            [
                (FlowModCommand::DeleteStrict, 3),
                (FlowModCommand::Add, 2),
                (FlowModCommand::Add, 4)
            ]
        );
        assert_eq!(mods[1].flow, desired[1]);
        assert!(diff(&desired, &desired).is_empty());
    }

    #[test]
    fn flow_text_round_trips() {
        let text = " cookie=0x5, table=1, idle_timeout=10, send_flow_rem priority=7,tcp,tp_dst=80 actions=ct(commit,table=2),goto_table:3";
        let f: Flow = text.parse().unwrap();
        assert_eq!(f.to_string(), text);
        assert_eq!(f.instructions.goto_table, Some(3));
    }
}
