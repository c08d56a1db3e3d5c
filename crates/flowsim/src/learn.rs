//! The `learn` action: the flow it adds, built from the packet being processed as OVS'
//! `learn_execute` builds it.
//!
//! * A match spec makes the learned flow match the destination bits on a value: an immediate,
//!   or the source bits of the packet (0 for a field the packet lacks, as OVS reads its zeroed
//!   flow). Specs on bits of the same field combine.
//! * A load spec becomes a write of the value into the destination bits (`load` or
//!   `set_field`, in canonical form).
//! * An output spec becomes `output` to the port in the source bits, read as an OpenFlow 1.0
//!   port number; as in OVS, only a physical port, `IN_PORT`, `FLOOD`, `ALL` or `LOCAL` gives
//!   an action.
//! * Table, priority, cookie, idle and hard timeouts and `send_flow_rem` come from the action.
//!   `fin_idle_timeout`/`fin_hard_timeout` (OVS prepends a `fin_timeout` action, which our
//!   actions cannot express) are left out; no timeout ever expires in the simulator.
//!
//! The simulator adds the flow as OVS does, a strict modify-or-add (it replaces the flow with
//! the same table, priority and match), and only once the pass that learned it is over: OVS installs it at once, but a translation looks flows up in the tables as they were
//! when it started, so the flow shows from the next recirculation or packet on.

use openflow::action::{Learn, LearnSpec, LearnSrc, learn_flags};
use openflow::field::{ones, port};
use openflow::flow::flow_flags;
use openflow::matching::port_from_16;
use openflow::{Action, Flow, Instructions, Match};

use crate::packet::Packet;
use crate::sim::{bits_mask, read_subfield, shift_in};

/// The flow `learn` adds for `pkt`.
pub(crate) fn learned_flow(learn: &Learn, pkt: &Packet) -> Flow {
    let value = |src: &LearnSrc, n_bits: u16| match src {
        LearnSrc::Field(sf) => read_subfield(pkt, sf).unwrap_or(0),
        LearnSrc::Imm(v) => v & ones(u32::from(n_bits)),
    };
    let mut match_ = Match::new();
    let mut actions = Vec::new();
    for spec in &learn.specs {
        match spec {
            LearnSpec::Match { src, dst } => {
                let bits = bits_mask(dst);
                let (v, m) = match_.get(dst.field).unwrap_or((0, 0));
                let v = (v & !bits) | shift_in(value(src, dst.n_bits), dst);
                match_.set(dst.field, v, m | bits);
            }
            LearnSpec::Load { src, dst } => actions.push(openflow::text::set_field(
                dst.field,
                shift_in(value(src, dst.n_bits), dst),
                bits_mask(dst),
            )),
            LearnSpec::Output(src) => {
                let Ok(p16) = u16::try_from(value(&LearnSrc::Field(*src), src.n_bits)) else {
                    continue;
                };
                let p = port_from_16(p16);
                if p < port::MAX
                    || [port::IN_PORT, port::FLOOD, port::ALL, port::LOCAL].contains(&p)
                {
                    actions.push(Action::Output {
                        port: p,
                        max_len: 0,
                    });
                }
            }
        }
    }
    Flow {
        table: learn.table,
        priority: learn.priority,
        cookie: learn.cookie,
        match_,
        instructions: Instructions::apply(actions),
        idle_timeout: learn.idle_timeout,
        hard_timeout: learn.hard_timeout,
        flags: if learn.flags & learn_flags::SEND_FLOW_REM != 0 {
            flow_flags::SEND_FLOW_REM
        } else {
            0
        },
    }
}
