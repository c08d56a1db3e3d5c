//! Parsing of the `ovs-ofctl` flow and action syntax (the printers live next to the types).
//!
//! Accepts what the printers emit (`ovs-ofctl --no-stats dump-flows` lines, `ofp-print`
//! action lists) plus the usual `ovs-ofctl add-flow` spellings of the same things.

use std::net::IpAddr;

use crate::action::{
    Action, Controller, Ct, CtZone, Learn, LearnSpec, LearnSrc, MULTIPATH_ALGS, MULTIPATH_FIELDS,
    Nat, NatAddr, Subfield, learn_flags, reason,
};
use crate::error::ParseError;
use crate::field::{Field, ones, parse_int, parse_port, port};
use crate::flow::{Flow, Instructions, flow_flags};
use crate::lexer::{key_value, split, split_top};
use crate::matching::Match;

fn num<T: TryFrom<u128>>(s: &str) -> Result<T, ParseError> {
    T::try_from(parse_int(s)?).map_err(|_| ParseError::new("number out of range", s))
}

/// Parses a flow in `ovs-ofctl` syntax (`dump-flows` or `add-flow` style).
pub fn parse_flow(s: &str) -> Result<Flow, ParseError> {
    let (head, actions) = match find_actions(s) {
        Some(i) => (&s[..i], &s[i + "actions=".len()..]),
        None => return Err(ParseError::new("missing actions=", s)),
    };
    let mut flow = Flow::default();
    let mut match_tokens = Vec::new();
    for tok in split_top(head) {
        let (k, v) = key_value(tok);
        let val = || v.ok_or_else(|| ParseError::new("needs a value", tok));
        match k {
            "table" => flow.table = num(val()?)?,
            "priority" => flow.priority = num(val()?)?,
            "cookie" => flow.cookie = num(val()?)?,
            "idle_timeout" => flow.idle_timeout = num(val()?)?,
            "hard_timeout" => flow.hard_timeout = num(val()?)?,
            "duration" | "n_packets" | "n_bytes" | "idle_age" | "hard_age" | "importance" => {}
            _ => {
                if let Some((bit, _)) = flow_flags::NAMES.iter().find(|(_, n)| *n == k) {
                    flow.flags |= bit;
                } else {
                    match_tokens.push((k, v));
                }
            }
        }
    }
    flow.match_ = Match::parse_tokens(match_tokens)?;
    flow.instructions = parse_instructions(actions)?;
    Ok(flow)
}

/// Position of the top-level `actions=`.
fn find_actions(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let b = s.as_bytes();
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            'a' if depth == 0
                && s[i..].starts_with("actions=")
                && (i == 0 || matches!(b[i - 1], b' ' | b',' | b'\t')) =>
            {
                return Some(i);
            }
            _ => {}
        }
    }
    None
}

/// Parses an instruction/action list (`output:1,goto_table:3`, `drop`, …).
pub fn parse_instructions(s: &str) -> Result<Instructions, ParseError> {
    let mut ins = Instructions::default();
    for tok in split(s, false) {
        let (name, arg) = split_action(tok);
        match name {
            "drop" => {}
            "meter" => ins.set_meter(Some(num(arg_or(arg, tok)?)?)),
            "clear_actions" => ins.set_clear(true),
            "write_actions" => ins.set_write(Some(parse_actions(arg_or(arg, tok)?)?)),
            "apply_actions" => ins.apply.extend(parse_actions(arg_or(arg, tok)?)?),
            "goto_table" => ins.goto_table = Some(num(arg_or(arg, tok)?)?),
            "write_metadata" => {
                let a = arg_or(arg, tok)?;
                let (v, m) = match a.split_once('/') {
                    Some((v, m)) => (num(v)?, num(m)?),
                    None => (num(a)?, u64::MAX),
                };
                ins.set_write_metadata(Some((v, m)));
            }
            _ => ins.apply.push(parse_action(tok)?),
        }
    }
    Ok(ins)
}

/// Parses a comma-separated action list.
pub fn parse_actions(s: &str) -> Result<Vec<Action>, ParseError> {
    split(s, false)
        .into_iter()
        .filter(|t| *t != "drop")
        .map(parse_action)
        .collect()
}

/// `name:arg`, `name(arg)` or `name`.
fn split_action(tok: &str) -> (&str, Option<&str>) {
    let colon = tok.find(':');
    let paren = tok.find('(');
    match (colon, paren) {
        (Some(c), Some(p)) if c < p => (&tok[..c], Some(&tok[c + 1..])),
        (_, Some(p)) if tok.ends_with(')') => (&tok[..p], Some(&tok[p + 1..tok.len() - 1])),
        (Some(c), _) => (&tok[..c], Some(&tok[c + 1..])),
        _ => (tok, None),
    }
}

fn arg_or<'a>(arg: Option<&'a str>, tok: &str) -> Result<&'a str, ParseError> {
    arg.ok_or_else(|| ParseError::new("action needs an argument", tok))
}

/// Parses a subfield (`NXM_NX_REG0[0..3]`, `reg0[]`, `NXM_OF_ETH_SRC[]`).
pub fn parse_subfield(s: &str) -> Result<Subfield, ParseError> {
    let (name, range) = s
        .strip_suffix(']')
        .and_then(|x| x.split_once('['))
        .ok_or_else(|| ParseError::new("subfield needs [..]", s))?;
    let field = Field::from_nxm_name(name)
        .or_else(|| Field::from_name(name))
        .ok_or_else(|| ParseError::new("unknown field", name))?;
    let sf = if range.is_empty() {
        Subfield::whole(field)
    } else if let Some((lo, hi)) = range.split_once("..") {
        let (lo, hi): (u16, u16) = (num(lo)?, num(hi)?);
        if hi < lo {
            return Err(ParseError::new("bad bit range", s));
        }
        Subfield::range(field, lo, hi)
    } else {
        let b: u16 = num(range)?;
        Subfield {
            field,
            ofs: b,
            n_bits: 1,
        }
    };
    if u32::from(sf.ofs) + u32::from(sf.n_bits) > field.bits() {
        return Err(ParseError::new("bit range exceeds field", s));
    }
    Ok(sf)
}

fn hex_bytes(s: &str) -> Result<Vec<u8>, ParseError> {
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'.').collect();
    if !digits.len().is_multiple_of(2) {
        return Err(ParseError::new("odd number of hex digits", s));
    }
    digits
        .chunks(2)
        .map(|p| match (nibble(p[0]), nibble(p[1])) {
            (Some(h), Some(l)) => Ok((h << 4) | l),
            _ => Err(ParseError::new("bad hex", s)),
        })
        .collect()
}

/// Parses one action.
pub fn parse_action(tok: &str) -> Result<Action, ParseError> {
    let (name, arg) = split_action(tok);
    let a = || arg_or(arg, tok);
    let lname = name.to_ascii_lowercase();
    Ok(match lname.as_str() {
        "output" => {
            let a = a()?;
            if let Some(rest) = a.strip_prefix("port=") {
                let (p, ml) = rest.split_once(",max_len=").unwrap_or((rest, "65535"));
                Action::OutputReg {
                    src: parse_subfield(p)?,
                    max_len: num(ml)?,
                }
            } else if a.contains('[') {
                Action::OutputReg {
                    src: parse_subfield(a)?,
                    max_len: u16::MAX,
                }
            } else {
                output(parse_port(a)?, None)
            }
        }
        "in_port" | "local" | "normal" | "flood" | "all" | "table" if arg.is_none() => {
            output(parse_port(name)?, None)
        }
        "controller" if arg.is_none() => output(port::CONTROLLER, None),
        "controller" if tok.contains('(') => parse_controller(a()?)?,
        "controller" => output(port::CONTROLLER, Some(num(a()?)?)),
        "group" => Action::Group(num(a()?)?),
        "set_queue" => Action::SetQueue(num(a()?)?),
        "push_vlan" => Action::PushVlan(num(a()?)?),
        "pop_vlan" | "strip_vlan" => Action::PopVlan,
        "push_mpls" => Action::PushMpls(num(a()?)?),
        "pop_mpls" => Action::PopMpls(num(a()?)?),
        "set_mpls_ttl" => Action::SetMplsTtl(num(a()?)?),
        "set_mpls_label" => set_field(Field::MplsLabel, parse_int(a()?)?, u128::MAX),
        "dec_mpls_ttl" => Action::DecMplsTtl,
        "dec_ttl" => Action::DecTtl,
        "set_field" => {
            let (v, f) = a()?
                .split_once("->")
                .ok_or_else(|| ParseError::new("set_field needs ->", tok))?;
            let field = Field::from_name(f).ok_or_else(|| ParseError::new("unknown field", f))?;
            let (value, mask) = field.parse_value(v)?;
            set_field(field, value, mask)
        }
        "load" => {
            let (v, d) = a()?
                .split_once("->")
                .ok_or_else(|| ParseError::new("load needs ->", tok))?;
            let dst = parse_subfield(d)?;
            let value = parse_int(v)?;
            if value & !ones(u32::from(dst.n_bits)) != 0 {
                return Err(ParseError::new("value wider than destination", tok));
            }
            load(dst, value)
        }
        "move" => {
            let (s, d) = a()?
                .split_once("->")
                .ok_or_else(|| ParseError::new("move needs ->", tok))?;
            let (src, dst) = (parse_subfield(s)?, parse_subfield(d)?);
            if src.n_bits != dst.n_bits {
                return Err(ParseError::new("move between different widths", tok));
            }
            Action::Move { src, dst }
        }
        "resubmit" if !tok.contains('(') => Action::Resubmit {
            port: parse_port(a()?)?,
            table: None,
            ct: false,
        },
        "resubmit" => {
            let parts: Vec<&str> = a()?.split(',').map(str::trim).collect();
            let port = match parts.first() {
                Some(p) if !p.is_empty() => parse_port(p)?,
                _ => port::IN_PORT,
            };
            let table = match parts.get(1) {
                Some(t) if !t.is_empty() => Some(num(t)?),
                _ => None,
            };
            let ct = match parts.get(2) {
                Some(&"ct") => true,
                None => false,
                Some(_) => return Err(ParseError::new("bad resubmit", tok)),
            };
            Action::Resubmit { port, table, ct }
        }
        "ct" => parse_ct(arg.unwrap_or(""))?,
        "ct_clear" => Action::CtClear,
        "conjunction" => {
            let (id, cl) = a()?
                .split_once(',')
                .ok_or_else(|| ParseError::new("bad conjunction", tok))?;
            let (k, n) = cl
                .split_once('/')
                .ok_or_else(|| ParseError::new("bad conjunction", tok))?;
            Action::Conjunction {
                id: num(id.trim())?,
                clause: num(k.trim())?,
                n_clauses: num(n.trim())?,
            }
        }
        "note" => {
            let mut b = hex_bytes(a()?)?;
            while b.last() == Some(&0) {
                b.pop();
            }
            Action::Note(b)
        }
        "learn" => parse_learn(a()?)?,
        "multipath" => {
            let p: Vec<&str> = a()?.split(',').map(str::trim).collect();
            if p.len() != 6 {
                return Err(ParseError::new("multipath needs 6 arguments", tok));
            }
            let idx = |names: &[&str], s: &str| {
                names
                    .iter()
                    .position(|n| *n == s)
                    .map(|i| i as u16)
                    .ok_or_else(|| ParseError::new("unknown name", s))
            };
            let n_links: u32 = num(p[3])?;
            if n_links == 0 || n_links > 65536 {
                return Err(ParseError::new("bad n_links", tok));
            }
            Action::Multipath {
                fields: idx(&MULTIPATH_FIELDS, p[0])?,
                basis: num(p[1])?,
                algorithm: idx(&MULTIPATH_ALGS, p[2])?,
                max_link: (n_links - 1) as u16,
                arg: num(p[4])?,
                dst: parse_subfield(p[5])?,
            }
        }
        "sample" => {
            let (mut probability, mut c, mut d, mut o) = (0u16, 0u32, 0u32, 0u32);
            for kv in split(a()?, false) {
                match key_value(kv) {
                    ("probability", Some(v)) => probability = num(v)?,
                    ("collector_set_id", Some(v)) => c = num(v)?,
                    ("obs_domain_id", Some(v)) => d = num(v)?,
                    ("obs_point_id", Some(v)) => o = num(v)?,
                    _ => return Err(ParseError::new("unknown sample argument", kv)),
                }
            }
            Action::Sample {
                probability,
                collector_set_id: c,
                obs_domain_id: d,
                obs_point_id: o,
            }
        }
        _ => return Err(ParseError::new("unknown action", tok)),
    })
}

/// Output in canonical form (`max_len` only matters for `CONTROLLER`).
fn output(p: u32, max_len: Option<u16>) -> Action {
    let max_len = if p == port::CONTROLLER {
        max_len.unwrap_or(u16::MAX)
    } else {
        0
    };
    Action::Output { port: p, max_len }
}

/// Canonical form of a field write: exact → set_field, contiguous mask on ≤ 64 bits → load.
pub fn set_field(field: Field, value: u128, mask: u128) -> Action {
    let full = field.full_mask();
    let mask = mask & full;
    if mask == full {
        return Action::SetField {
            field,
            value: value & full,
            mask: full,
        };
    }
    let ofs = mask.trailing_zeros();
    let n = (mask >> ofs).trailing_ones();
    if mask != 0 && mask >> ofs == ones(n) && n <= 64 {
        let dst = Subfield {
            field,
            ofs: ofs as u16,
            n_bits: n as u16,
        };
        Action::RegLoad {
            dst,
            value: ((value & mask) >> ofs) as u64,
        }
    } else {
        Action::SetField {
            field,
            value: value & mask,
            mask,
        }
    }
}

/// Canonical form of `load:VALUE->DST`.
fn load(dst: Subfield, value: u128) -> Action {
    if dst.n_bits <= 64 {
        Action::RegLoad {
            dst,
            value: value as u64,
        }
    } else {
        let mask = ones(u32::from(dst.n_bits)) << dst.ofs;
        Action::SetField {
            field: dst.field,
            value: (value << dst.ofs) & mask,
            mask,
        }
    }
}

fn parse_controller(args: &str) -> Result<Action, ParseError> {
    let mut c = Controller::default();
    for kv in split(args, false) {
        match key_value(kv) {
            ("max_len", Some(v)) => c.max_len = num(v)?,
            ("id", Some(v)) => c.id = num(v)?,
            ("reason", Some(v)) => {
                c.reason = match reason::NAMES.iter().position(|n| *n == v) {
                    Some(i) => i as u8,
                    None => num(v)?,
                }
            }
            ("userdata", Some(v)) => c.userdata = hex_bytes(v)?,
            ("pause", None) => c.pause = true,
            _ => return Err(ParseError::new("unknown controller argument", kv)),
        }
    }
    if c.reason == reason::ACTION && c.id == 0 && c.userdata.is_empty() && !c.pause {
        return Ok(output(port::CONTROLLER, Some(c.max_len)));
    }
    Ok(Action::Controller(c))
}

fn parse_ct(args: &str) -> Result<Action, ParseError> {
    let mut ct = Ct::default();
    for tok in split(args, false) {
        let (name, arg) = split_action(tok);
        match key_value(tok) {
            ("commit", None) => ct.commit = true,
            ("force", None) => ct.force = true,
            ("table", Some(v)) => ct.table = Some(num(v)?),
            ("zone", Some(v)) if v.contains('[') => ct.zone = CtZone::Field(parse_subfield(v)?),
            ("zone", Some(v)) => ct.zone = CtZone::Imm(num(v)?),
            ("alg", Some("ftp")) => ct.alg = 21,
            ("alg", Some("tftp")) => ct.alg = 69,
            ("alg", Some(v)) => ct.alg = num(v)?,
            _ if name == "nat" => ct.nat = Some(parse_nat(arg.unwrap_or(""))?),
            _ if name == "exec" => ct.exec = parse_actions(arg.unwrap_or(""))?,
            _ => return Err(ParseError::new("unknown ct argument", tok)),
        }
    }
    Ok(Action::Ct(Box::new(ct)))
}

fn parse_ip(s: &str) -> Result<IpAddr, ParseError> {
    let s = s.trim_start_matches('[').trim_end_matches(']');
    s.parse().map_err(|_| ParseError::new("bad IP address", s))
}

fn parse_nat(args: &str) -> Result<Nat, ParseError> {
    let mut nat = Nat::default();
    for tok in split(args, false) {
        match key_value(tok) {
            ("persistent", None) => nat.persistent = true,
            ("hash", None) => nat.hash = true,
            ("random", None) => nat.random = true,
            (k @ ("src" | "dst"), Some(v)) => {
                nat.src = Some(k == "src");
                // ADDR[-ADDR][:PORT[-PORT]]; IPv6 addresses are bracketed.
                let (addrs, ports) = match v.rfind(':') {
                    Some(i) if !v.contains('[') || v[..i].ends_with(']') => {
                        (&v[..i], Some(&v[i + 1..]))
                    }
                    _ => (v, None),
                };
                let (amin, amax) = match addrs.split_once("]-[") {
                    Some((a, b)) => (format!("{a}]"), Some(format!("[{b}"))),
                    None if !addrs.contains('[') => match addrs.split_once('-') {
                        Some((a, b)) => (a.to_string(), Some(b.to_string())),
                        None => (addrs.to_string(), None),
                    },
                    None => (addrs.to_string(), None),
                };
                if !amin.is_empty() {
                    let min = parse_ip(&amin)?;
                    let max = amax.as_deref().map(parse_ip).transpose()?;
                    nat.addr = Some(match (min, max) {
                        (IpAddr::V4(a), None) => NatAddr::V4(a, None),
                        (IpAddr::V4(a), Some(IpAddr::V4(b))) => {
                            NatAddr::V4(a, Some(b).filter(|b| *b != a))
                        }
                        (IpAddr::V6(a), None) => NatAddr::V6(a, None),
                        (IpAddr::V6(a), Some(IpAddr::V6(b))) => {
                            NatAddr::V6(a, Some(b).filter(|b| *b != a))
                        }
                        _ => return Err(ParseError::new("mixed address families", v)),
                    });
                }
                if let Some(p) = ports {
                    let (a, b) = match p.split_once('-') {
                        Some((a, b)) => (num::<u16>(a)?, Some(num::<u16>(b)?)),
                        None => (num::<u16>(p)?, None),
                    };
                    nat.ports = Some((a, b.filter(|b| *b != a)));
                }
            }
            _ => return Err(ParseError::new("unknown nat argument", tok)),
        }
    }
    Ok(nat)
}

/// A learn spec source: a subfield, or an immediate (in the field's own syntax for a match on a
/// whole field, `load:` immediates are always numbers).
fn learn_src(s: &str, dst: &Subfield, field_syntax: bool) -> Result<LearnSrc, ParseError> {
    if s.contains('[') {
        let src = parse_subfield(s)?;
        if src.n_bits != dst.n_bits {
            return Err(ParseError::new(
                "learn source and destination widths differ",
                s,
            ));
        }
        Ok(LearnSrc::Field(src))
    } else if field_syntax && dst.is_whole() {
        Ok(LearnSrc::Imm(dst.field.parse_value(s)?.0))
    } else {
        Ok(LearnSrc::Imm(parse_int(s)?))
    }
}

fn parse_learn(args: &str) -> Result<Action, ParseError> {
    let mut l = Learn::default();
    for tok in split(args, false) {
        let (k, v) = key_value(tok);
        match (k, v) {
            ("table", Some(v)) => l.table = num(v)?,
            ("idle_timeout", Some(v)) => l.idle_timeout = num(v)?,
            ("hard_timeout", Some(v)) => l.hard_timeout = num(v)?,
            ("fin_idle_timeout", Some(v)) => l.fin_idle_timeout = num(v)?,
            ("fin_hard_timeout", Some(v)) => l.fin_hard_timeout = num(v)?,
            ("priority", Some(v)) => l.priority = num(v)?,
            ("cookie", Some(v)) => l.cookie = num(v)?,
            ("send_flow_rem", None) => l.flags |= learn_flags::SEND_FLOW_REM,
            ("delete_learned", None) => l.flags |= learn_flags::DELETE_LEARNED,
            ("write_result", None) => l.flags |= learn_flags::WRITE_RESULT,
            _ if tok.starts_with("load:") => {
                let (s, d) = tok[5..]
                    .split_once("->")
                    .ok_or_else(|| ParseError::new("load needs ->", tok))?;
                let dst = parse_subfield(d)?;
                l.specs.push(LearnSpec::Load {
                    src: learn_src(s, &dst, false)?,
                    dst,
                });
            }
            _ if tok.starts_with("output:") => {
                l.specs.push(LearnSpec::Output(parse_subfield(&tok[7..])?))
            }
            (d, Some(s)) => {
                let dst = if d.contains('[') {
                    parse_subfield(d)?
                } else {
                    Subfield::whole(
                        Field::from_name(d).ok_or_else(|| ParseError::new("unknown field", d))?,
                    )
                };
                l.specs.push(LearnSpec::Match {
                    src: learn_src(s, &dst, true)?,
                    dst,
                });
            }
            (d, None) => {
                let dst = parse_subfield(d)?;
                l.specs.push(LearnSpec::Match {
                    src: LearnSrc::Field(dst),
                    dst,
                });
            }
        }
    }
    Ok(Action::Learn(Box::new(l)))
}

impl std::str::FromStr for Flow {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Flow, ParseError> {
        parse_flow(s)
    }
}
