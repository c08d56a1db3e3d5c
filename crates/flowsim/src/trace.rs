//! The result of a simulation: every table visited, the flow hit (or the miss), the actions
//! executed with their effect, nested resubmits, group buckets and conntrack
//! recirculations, and the verdict. `Display` renders it for operators; [`Trace::display`]
//! adds an owner description per cookie, and [`TraceDisplay::tables`] a name per table.

use std::fmt;

use openflow::field::port_name;
use openflow::message::GroupType;
use openflow::{Action, Flow};

use crate::packet::{Packet, Tunnel};

/// One table lookup and what the hit flow did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The table looked up.
    pub table: u8,
    /// The flow hit, `None` for a table miss.
    pub flow: Option<Flow>,
    /// The conjunction id through which the flow was reached, if any.
    pub conjunction: Option<u32>,
    /// What was executed, in order.
    pub ops: Vec<Op>,
}

/// One executed action or instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// An action and its effect in words (empty when it has none worth saying).
    Action {
        /// The action.
        action: Action,
        /// What it did.
        effect: String,
    },
    /// `resubmit`: the nested lookup, after which the actions continued.
    Resubmit {
        /// The resubmit action.
        action: Action,
        /// The nested lookup (`None` when it was refused, see `effect`).
        step: Option<Box<Step>>,
        /// A note (the in_port used, or why it was refused).
        effect: String,
    },
    /// `goto_table`: processing continues in a later table.
    Goto(Box<Step>),
    /// `group:N`: the buckets executed, each on its own copy of the packet.
    Group {
        /// Group id.
        group: u32,
        /// Its type.
        group_type: Option<GroupType>,
        /// The buckets run, with their index.
        buckets: Vec<(usize, Vec<Op>)>,
        /// How the buckets were chosen.
        effect: String,
    },
    /// An output to a patch port whose peer is on this bridge: the packet comes back in at the
    /// peer, in table 0, with what Open vSwitch resets when crossing a patch port reset.
    Patch {
        /// The output action.
        action: Action,
        /// The patch port output to.
        port: u32,
        /// Its peer, where the packet came back in.
        peer: u32,
        /// The lookup from table 0 (`None` when it was refused, see `effect`).
        step: Option<Box<Step>>,
        /// The action set of the peer's pipeline, executed at its end.
        action_set: Vec<Op>,
        /// A note: what was reset, or why the lookup was refused.
        effect: String,
    },
    /// `clear_actions`, `write_actions(...)`, `write_metadata`, or the start of the action set.
    Instruction(String),
}

/// One pass through the pipeline: the ingress pass, or a recirculation after `ct(table=N)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    /// `None` for the ingress pass; the `ct` that recirculated the packet otherwise.
    pub cause: Option<String>,
    /// The packet at the start of the pass.
    pub packet: Packet,
    /// The lookup chain from the first table.
    pub root: Step,
    /// The action set executed at the end of the pass (empty if there was none).
    pub action_set: Vec<Op>,
}

/// A packet sent to a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The port.
    pub port: u32,
    /// The packet as it left.
    pub packet: Packet,
    /// For a tunnel port: the tunnel fields it is sent with.
    pub tunnel: Option<Tunnel>,
}

/// A packet sent to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerPacket {
    /// Packet-in reason (`openflow::action::reason`).
    pub reason: u8,
    /// Controller connection id.
    pub controller_id: u16,
    /// `userdata` of a `controller(...)` action.
    pub userdata: Vec<u8>,
    /// Whether the pipeline was paused (the continuation is not simulated).
    pub pause: bool,
    /// Table of the flow that sent it.
    pub table: u8,
    /// Cookie of the flow that sent it.
    pub cookie: u64,
    /// The packet.
    pub packet: Packet,
}

/// Why nothing left the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// No flow matched in the table.
    TableMiss {
        /// The table.
        table: u8,
    },
    /// The flow hit has no actions.
    DropFlow {
        /// Its table.
        table: u8,
        /// Its cookie.
        cookie: u64,
    },
    /// `output` to the port the packet came in on (OVS skips it unless the port is IN_PORT).
    OutputToInPort {
        /// The port.
        port: u32,
    },
    /// A group had no live bucket.
    NoLiveBucket {
        /// The group.
        group: u32,
    },
    /// More than 64 nested resubmits/goto_tables/groups: OVS drops the whole packet.
    ResubmitDepth,
    /// More than 4096 resubmits in total: OVS drops the whole packet.
    TooManyResubmits,
    /// More recirculations than the datapath allows (6).
    RecirculationDepth,
    /// The pipeline ended without any output action.
    NoOutput,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::TableMiss { table } => write!(f, "no flow matched in table {table}"),
            DropReason::DropFlow { table, cookie } => {
                write!(f, "flow in table {table} (cookie {cookie:#x}) drops")
            }
            DropReason::OutputToInPort { port } => write!(
                f,
                "output to the input port {} is skipped (use IN_PORT)",
                port_name(*port)
            ),
            DropReason::NoLiveBucket { group } => write!(f, "group {group} has no live bucket"),
            DropReason::ResubmitDepth => {
                f.write_str("translation deeper than 64 levels: the whole packet is dropped")
            }
            DropReason::TooManyResubmits => {
                f.write_str("more than 4096 resubmits: the whole packet is dropped")
            }
            DropReason::RecirculationDepth => f.write_str("too many recirculations"),
            DropReason::NoOutput => f.write_str("the pipeline ended without output"),
        }
    }
}

/// What became of the packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Packets sent to ports, in order.
    pub outputs: Vec<Output>,
    /// Packets sent to the controller, in order.
    pub controller: Vec<ControllerPacket>,
    /// Why nothing was sent, when nothing was.
    pub drop: Option<DropReason>,
}

impl Verdict {
    /// The output ports, in order.
    pub fn ports(&self) -> Vec<u32> {
        self.outputs.iter().map(|o| o.port).collect()
    }

    /// Whether nothing was sent anywhere.
    pub fn is_drop(&self) -> bool {
        self.drop.is_some()
    }
}

/// A whole simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The input port.
    pub in_port: u32,
    /// The packet as it came in.
    pub packet: Packet,
    /// The ingress pass then each recirculation.
    pub passes: Vec<Pass>,
    /// The outcome.
    pub verdict: Verdict,
}

impl Trace {
    /// Every step (lookups) of every pass, depth first, in execution order.
    pub fn steps(&self) -> Vec<&Step> {
        fn walk<'a>(s: &'a Step, out: &mut Vec<&'a Step>) {
            out.push(s);
            walk_ops(&s.ops, out);
        }
        fn walk_ops<'a>(ops: &'a [Op], out: &mut Vec<&'a Step>) {
            for op in ops {
                match op {
                    Op::Resubmit { step: Some(s), .. } => walk(s, out),
                    Op::Patch {
                        step, action_set, ..
                    } => {
                        if let Some(s) = step {
                            walk(s, out);
                        }
                        walk_ops(action_set, out);
                    }
                    Op::Goto(s) => walk(s, out),
                    Op::Group { buckets, .. } => {
                        for (_, ops) in buckets {
                            walk_ops(ops, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        for p in &self.passes {
            walk(&p.root, &mut out);
            walk_ops(&p.action_set, &mut out);
        }
        out
    }

    /// `(table, cookie of the flow hit or None for a miss)` for every step, in order.
    pub fn path(&self) -> Vec<(u8, Option<u64>)> {
        self.steps()
            .iter()
            .map(|s| (s.table, s.flow.as_ref().map(|f| f.cookie)))
            .collect()
    }

    /// Renders the trace with `owner(cookie)` describing each flow's owner.
    pub fn display<F: Fn(u64) -> Option<String>>(&self, owner: F) -> TraceDisplay<'_, F> {
        TraceDisplay {
            trace: self,
            owner,
            table: |_| None,
        }
    }
}

/// [`Trace::display`]'s result.
pub struct TraceDisplay<'a, F, G = fn(u8) -> Option<String>> {
    trace: &'a Trace,
    owner: F,
    table: G,
}

impl<'a, F, G> TraceDisplay<'a, F, G> {
    /// Names each table after its number (`table 22 (ip-routing): ...`) with `name(table)`.
    pub fn tables<H: Fn(u8) -> Option<String>>(self, name: H) -> TraceDisplay<'a, F, H> {
        TraceDisplay {
            trace: self.trace,
            owner: self.owner,
            table: name,
        }
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display(|_| None).fmt(f)
    }
}

const INDENT: &str = "    ";

impl<F: Fn(u64) -> Option<String>, G: Fn(u8) -> Option<String>> TraceDisplay<'_, F, G> {
    fn step(&self, f: &mut fmt::Formatter<'_>, s: &Step, depth: usize) -> fmt::Result {
        let pad = INDENT.repeat(depth);
        let table = match (self.table)(s.table) {
            Some(name) => format!("table {} ({name})", s.table),
            None => format!("table {}", s.table),
        };
        match &s.flow {
            None => writeln!(f, "{pad}{table}: no match (table miss)")?,
            Some(flow) => {
                writeln!(f, "{pad}{table}: {}", flow.to_string().trim())?;
                if let Some(id) = s.conjunction {
                    writeln!(f, "{pad}  via conjunction {id}")?;
                }
                if let Some(o) = (self.owner)(flow.cookie) {
                    writeln!(f, "{pad}  owner: {o}")?;
                }
                if flow.instructions.is_drop() {
                    writeln!(f, "{pad}{INDENT}drop")?;
                }
            }
        }
        self.ops(f, &s.ops, depth + 1)
    }

    fn ops(&self, f: &mut fmt::Formatter<'_>, ops: &[Op], depth: usize) -> fmt::Result {
        let pad = INDENT.repeat(depth);
        for op in ops {
            match op {
                Op::Action { action, effect } if effect.is_empty() => writeln!(f, "{pad}{action}")?,
                Op::Action { action, effect } => writeln!(f, "{pad}{action}  -> {effect}")?,
                Op::Resubmit {
                    action,
                    step,
                    effect,
                } => {
                    writeln!(f, "{pad}{action}  -> {effect}")?;
                    if let Some(s) = step {
                        self.step(f, s, depth + 1)?;
                    }
                }
                Op::Patch {
                    action,
                    step,
                    action_set,
                    effect,
                    ..
                } => {
                    writeln!(f, "{pad}{action}  -> {effect}")?;
                    if let Some(s) = step {
                        self.step(f, s, depth + 1)?;
                    }
                    if !action_set.is_empty() {
                        writeln!(f, "{pad}{INDENT}action set:")?;
                        self.ops(f, action_set, depth + 2)?;
                    }
                }
                // A goto continues the same chain: same indentation as the flow's table line.
                Op::Goto(s) => self.step(f, s, depth.saturating_sub(1))?,
                Op::Group {
                    group,
                    group_type,
                    buckets,
                    effect,
                } => {
                    let ty = group_type.map_or("missing", |t| t.name());
                    writeln!(f, "{pad}group {group} (type {ty}): {effect}")?;
                    for (i, ops) in buckets {
                        writeln!(f, "{pad}{INDENT}bucket {i}:")?;
                        self.ops(f, ops, depth + 2)?;
                    }
                }
                Op::Instruction(text) => writeln!(f, "{pad}{text}")?,
            }
        }
        Ok(())
    }
}

impl<F: Fn(u64) -> Option<String>, G: Fn(u8) -> Option<String>> fmt::Display
    for TraceDisplay<'_, F, G>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.trace;
        writeln!(
            f,
            "Packet in on port {}: {}",
            port_name(t.in_port),
            t.packet
        )?;
        for p in &t.passes {
            if let Some(cause) = &p.cause {
                writeln!(f)?;
                writeln!(f, "Recirculation after {cause}: {}", p.packet)?;
            }
            self.step(f, &p.root, 0)?;
            if !p.action_set.is_empty() {
                writeln!(f, "action set:")?;
                self.ops(f, &p.action_set, 1)?;
            }
        }
        writeln!(f)?;
        writeln!(f, "Verdict:")?;
        let v = &t.verdict;
        for o in &v.outputs {
            match &o.tunnel {
                Some(tun) => writeln!(
                    f,
                    "  output to port {} over tunnel ({tun}): {}",
                    port_name(o.port),
                    o.packet
                )?,
                None => writeln!(f, "  output to port {}: {}", port_name(o.port), o.packet)?,
            }
        }
        for c in &v.controller {
            let reason = openflow::action::reason::NAMES
                .get(usize::from(c.reason))
                .copied()
                .unwrap_or("unknown");
            write!(f, "  to controller (reason {reason}")?;
            if !c.userdata.is_empty() {
                write!(f, ", userdata {}", hex(&c.userdata))?;
            }
            if c.pause {
                write!(f, ", paused")?;
            }
            writeln!(
                f,
                ", from table {} cookie {:#x}): {}",
                c.table, c.cookie, c.packet
            )?;
        }
        if let Some(d) = &v.drop {
            writeln!(f, "  drop: {d}")?;
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(".")
}
