//! proptest strategies producing canonical values of the model (what the decoders and the
//! text parser give back), for round-trip properties.

use std::net::{Ipv4Addr, Ipv6Addr};

use openflow::action::*;
use openflow::field::{Field, ones, port};
use openflow::flow::{Flow, FlowMod, FlowModCommand, Instructions};
use openflow::matching::Match;
use openflow::message::*;
use proptest::prelude::*;

/// `(value, mask)` valid for `f` (exact when the field cannot be masked).
fn value_for(f: Field) -> impl Strategy<Value = (u128, u128)> {
    (any::<u128>(), any::<u128>(), any::<bool>()).prop_map(move |(v, m, exact)| {
        let full = f.full_mask();
        let m = if exact || !f.maskable() || m & full == 0 {
            full
        } else {
            m & full
        };
        (v & m, m)
    })
}

/// A match on any fields (binary round trips; prerequisites are not considered).
pub fn any_match() -> impl Strategy<Value = Match> {
    let fields: Vec<Field> = Field::all().collect();
    prop::collection::vec(
        prop::sample::select(fields)
            .prop_flat_map(|f| value_for(f).prop_map(move |(v, m)| (f, v, m))),
        0..8,
    )
    .prop_map(|fs| {
        let mut m = Match::new();
        for (f, v, mask) in fs {
            m.set(f, v, mask);
        }
        m
    })
}

/// Fields usable with a given protocol context, for matches that print and parse back.
fn context_fields(ctx: &str) -> Vec<Field> {
    let mut v = vec![
        Field::InPort,
        Field::Metadata,
        Field::EthDst,
        Field::EthSrc,
        Field::VlanVid,
        Field::VlanPcp,
        Field::TunId,
        Field::TunSrc,
        Field::TunDst,
        Field::TunMetadata(0),
        Field::TunMetadata(7),
        Field::Reg(0),
        Field::Reg(5),
        Field::Reg(15),
        Field::CtState,
        Field::CtZone,
        Field::CtMark,
        Field::CtLabel,
        Field::PktMark,
        Field::ConjId,
    ];
    let ip = [
        Field::IpDscp,
        Field::IpEcn,
        Field::IpTtl,
        Field::CtNwSrc,
        Field::CtNwDst,
        Field::CtNwProto,
        Field::CtTpSrc,
        Field::CtTpDst,
    ];
    match ctx {
        "ip" | "tcp" | "udp" | "sctp" | "icmp" => {
            v.extend(ip);
            v.extend([Field::Ipv4Src, Field::Ipv4Dst]);
        }
        "ipv6" | "tcp6" | "udp6" | "icmp6" => {
            v.extend(ip);
            v.extend([
                Field::Ipv6Src,
                Field::Ipv6Dst,
                Field::Ipv6Label,
                Field::CtIpv6Src,
                Field::CtIpv6Dst,
            ]);
        }
        "arp" => v.extend([
            Field::ArpOp,
            Field::ArpSpa,
            Field::ArpTpa,
            Field::ArpSha,
            Field::ArpTha,
        ]),
        "mpls" => v.extend([Field::MplsLabel, Field::MplsTc, Field::MplsBos]),
        _ => {}
    }
    match ctx {
        "tcp" | "tcp6" => v.extend([Field::TcpSrc, Field::TcpDst, Field::TcpFlags]),
        "udp" | "udp6" => v.extend([Field::UdpSrc, Field::UdpDst]),
        "sctp" => v.extend([Field::SctpSrc, Field::SctpDst]),
        "icmp" => v.extend([Field::IcmpType, Field::IcmpCode]),
        "icmp6" => v.extend([
            Field::Icmpv6Type,
            Field::Icmpv6Code,
            Field::NdTarget,
            Field::NdSll,
            Field::NdTll,
        ]),
        _ => {}
    }
    v
}

/// A match whose text form parses back to it.
pub fn text_match() -> impl Strategy<Value = Match> {
    let ctxs = vec![
        "", "ip", "ipv6", "tcp", "udp", "sctp", "icmp", "tcp6", "udp6", "icmp6", "arp", "mpls",
        "other",
    ];
    prop::sample::select(ctxs).prop_flat_map(|ctx| {
        let fields = context_fields(ctx);
        prop::collection::vec(
            prop::sample::select(fields)
                .prop_flat_map(|f| value_for(f).prop_map(move |(v, m)| (f, v, m))),
            0..6,
        )
        .prop_map(move |fs| {
            let mut m = match ctx {
                "" => Match::new(),
                "other" => Match::new().with(Field::EthType, 0x1234),
                c => c.parse::<Match>().expect("shorthand"),
            };
            for (f, v, mask) in fs {
                m.set(f, v, mask);
            }
            m
        })
    })
}

fn writable() -> Vec<Field> {
    Field::all().filter(|f| f.writable()).collect()
}

fn subfield(fields: Vec<Field>, max_bits: u16) -> impl Strategy<Value = Subfield> {
    (prop::sample::select(fields), any::<u16>(), any::<u16>()).prop_map(move |(f, a, b)| {
        let w = f.bits() as u16;
        let n = 1 + b % w.min(max_bits);
        let ofs = a % (w - n + 1);
        Subfield {
            field: f,
            ofs,
            n_bits: n,
        }
    })
}

fn port_no() -> impl Strategy<Value = u32> {
    prop_oneof![
        1u32..0xff00,
        prop::sample::select(vec![
            port::IN_PORT,
            port::NORMAL,
            port::FLOOD,
            port::ALL,
            port::LOCAL,
            port::TABLE
        ])
    ]
}

fn nat() -> impl Strategy<Value = Nat> {
    let addr = prop_oneof![
        Just(None),
        (any::<u32>(), prop::option::of(any::<u32>())).prop_map(|(a, b)| Some(NatAddr::V4(
            Ipv4Addr::from(a),
            b.filter(|b| *b != a).map(Ipv4Addr::from)
        ))),
        (any::<u128>(), prop::option::of(any::<u128>())).prop_map(|(a, b)| Some(NatAddr::V6(
            Ipv6Addr::from(a),
            b.filter(|b| *b != a).map(Ipv6Addr::from)
        ))),
    ];
    let ports = prop::option::of((1u16.., prop::option::of(any::<u16>())))
        .prop_map(|p| p.map(|(a, b)| (a, b.filter(|b| *b != a))));
    (
        prop::option::of(any::<bool>()),
        addr,
        ports,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(src, addr, ports, persistent, hash, random)| match src {
            None => Nat::default(),
            Some(s) => Nat {
                src: Some(s),
                addr,
                ports,
                persistent,
                hash,
                random,
            },
        })
}

fn exact_set_field() -> impl Strategy<Value = Action> {
    prop::sample::select(writable()).prop_flat_map(|f| {
        any::<u128>().prop_map(move |v| Action::SetField {
            field: f,
            value: v & f.full_mask(),
            mask: f.full_mask(),
        })
    })
}

fn reg_load() -> impl Strategy<Value = Action> {
    (subfield(writable(), 64), any::<u64>()).prop_map(|(dst, v)| Action::RegLoad {
        dst,
        value: (u128::from(v) & ones(u32::from(dst.n_bits))) as u64,
    })
}

fn learn() -> impl Strategy<Value = Action> {
    let all: Vec<Field> = Field::all().collect();
    let spec = (
        subfield(all.clone(), 128),
        any::<u128>(),
        0u8..5,
        prop::sample::select(all),
    )
        .prop_map(|(dst, v, kind, sf)| {
            let imm = LearnSrc::Imm(v & ones(u32::from(dst.n_bits)));
            let src_field = if sf.bits() >= u32::from(dst.n_bits) {
                Subfield {
                    field: sf,
                    ofs: 0,
                    n_bits: dst.n_bits,
                }
            } else {
                dst
            };
            match kind {
                0 => LearnSpec::Match {
                    src: LearnSrc::Field(src_field),
                    dst,
                },
                1 => LearnSpec::Match { src: imm, dst },
                2 if dst.field.writable() => LearnSpec::Load {
                    src: LearnSrc::Field(src_field),
                    dst,
                },
                3 if dst.field.writable() => LearnSpec::Load { src: imm, dst },
                _ => LearnSpec::Output(dst),
            }
        });
    (
        any::<(u8, u16, u16, u16, u16, u16, u64)>(),
        0u16..8,
        prop::collection::vec(spec, 0..5),
    )
        .prop_map(|((table, i, h, fi, fh, prio, cookie), flags, specs)| {
            Action::Learn(Box::new(Learn {
                table,
                idle_timeout: i,
                hard_timeout: h,
                fin_idle_timeout: fi,
                fin_hard_timeout: fh,
                priority: prio,
                cookie,
                flags,
                specs,
            }))
        })
}

/// Any canonical action (its text form parses back to it).
pub fn action() -> BoxedStrategy<Action> {
    let zone = prop_oneof![
        any::<u16>().prop_map(CtZone::Imm),
        subfield(vec![Field::Reg(0), Field::Reg(6), Field::Reg(13)], 16).prop_map(|mut s| {
            s.n_bits = 16;
            s.ofs = s.ofs.min(16);
            CtZone::Field(s)
        })
    ];
    let exec = prop::collection::vec(
        prop_oneof![
            any::<u32>().prop_map(|v| Action::SetField {
                field: Field::CtMark,
                value: v.into(),
                mask: Field::CtMark.full_mask()
            }),
            any::<u128>().prop_map(|v| Action::SetField {
                field: Field::CtLabel,
                value: v,
                mask: u128::MAX
            }),
            (0u16..32, any::<u32>()).prop_map(|(o, v)| Action::RegLoad {
                dst: Subfield {
                    field: Field::CtMark,
                    ofs: o,
                    n_bits: 1
                },
                value: u64::from(v & 1)
            }),
        ],
        0..3,
    );
    let ct = (
        any::<(bool, bool)>(),
        zone,
        prop::option::of(0u8..255),
        prop::option::of(nat()),
        exec,
        prop::sample::select(vec![0u16, 21, 69, 7]),
    )
        .prop_map(|((commit, force), zone, table, nat, exec, alg)| {
            Action::Ct(Box::new(Ct {
                commit,
                force,
                zone,
                table,
                nat,
                exec,
                alg,
            }))
        });
    let controller = (
        any::<u16>(),
        any::<u16>(),
        0u8..6,
        prop::collection::vec(any::<u8>(), 0..12),
        any::<bool>(),
    )
        .prop_filter("non-default controller", |(_, id, r, u, p)| {
            *id != 0 || *r != reason::ACTION || !u.is_empty() || *p
        })
        .prop_map(|(max_len, id, reason, userdata, pause)| {
            Action::Controller(Controller {
                max_len,
                id,
                reason,
                userdata,
                pause,
            })
        });
    let all: Vec<Field> = Field::all().collect();
    prop_oneof![
        (port_no(), any::<u16>()).prop_map(|(p, l)| Action::Output {
            port: p,
            max_len: if p == port::CONTROLLER { l } else { 0 }
        }),
        any::<u16>().prop_map(|l| Action::Output {
            port: port::CONTROLLER,
            max_len: l
        }),
        subfield(writable(), 32).prop_map(|src| Action::OutputReg {
            src,
            max_len: u16::MAX
        }),
        any::<u32>().prop_map(Action::Group),
        any::<u32>().prop_map(Action::SetQueue),
        any::<u16>().prop_map(Action::PushVlan),
        Just(Action::PopVlan),
        any::<u16>().prop_map(Action::PushMpls),
        any::<u16>().prop_map(Action::PopMpls),
        any::<u8>().prop_map(Action::SetMplsTtl),
        Just(Action::DecMplsTtl),
        Just(Action::DecTtl),
        exact_set_field(),
        reg_load(),
        (subfield(all, 64), subfield(writable(), 64)).prop_map(|(mut src, mut dst)| {
            let n = src.n_bits.min(dst.n_bits);
            src.n_bits = n;
            dst.n_bits = n;
            Action::Move { src, dst }
        }),
        (
            prop_oneof![Just(port::IN_PORT), 1u32..0xff00],
            prop::option::of(0u8..255),
            any::<bool>()
        )
            .prop_map(|(port, table, ct)| Action::Resubmit { port, table, ct }),
        ct,
        Just(Action::CtClear),
        (any::<u32>(), 1u8..64).prop_flat_map(|(id, n)| (1..=n).prop_map(move |c| {
            Action::Conjunction {
                id,
                clause: c,
                n_clauses: n,
            }
        })),
        learn(),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|mut b| {
            while b.last() == Some(&0) {
                b.pop();
            }
            Action::Note(b)
        }),
        controller,
        (
            0u16..7,
            any::<u16>(),
            0u16..4,
            any::<u16>(),
            any::<u32>(),
            subfield(writable(), 32)
        )
            .prop_map(
                |(fields, basis, algorithm, max_link, arg, dst)| Action::Multipath {
                    fields,
                    basis,
                    algorithm,
                    max_link,
                    arg,
                    dst
                }
            ),
        any::<(u16, u32, u32, u32)>().prop_map(|(p, c, d, o)| Action::Sample {
            probability: p,
            collector_set_id: c,
            obs_domain_id: d,
            obs_point_id: o
        }),
    ]
    .boxed()
}

/// Canonical instructions.
pub fn instructions() -> impl Strategy<Value = Instructions> {
    (
        prop::option::of(any::<u32>()),
        prop::collection::vec(action(), 0..4),
        any::<bool>(),
        prop::option::of(prop::collection::vec(action(), 0..2)),
        prop::option::of(any::<(u64, u64)>()),
        prop::option::of(any::<u8>()),
    )
        .prop_map(|(meter, apply, clear, write, write_metadata, goto_table)| {
            let mut ins = Instructions::apply(apply);
            ins.goto_table = goto_table;
            ins.set_meter(meter);
            ins.set_clear(clear);
            ins.set_write(write);
            ins.set_write_metadata(write_metadata);
            ins
        })
}

/// A flow whose text form parses back to it.
pub fn flow(m: impl Strategy<Value = Match>) -> impl Strategy<Value = Flow> {
    (
        any::<(u8, u16, u64, u16, u16)>(),
        0u16..32,
        m,
        instructions(),
    )
        .prop_map(
            |((table, priority, cookie, idle, hard), flags, match_, instructions)| Flow {
                table,
                priority,
                cookie,
                match_,
                instructions,
                idle_timeout: idle,
                hard_timeout: hard,
                flags,
            },
        )
}

fn bucket() -> impl Strategy<Value = Bucket> {
    (
        any::<(u16, u32, u32)>(),
        prop::collection::vec(action(), 0..3),
    )
        .prop_map(|((weight, watch_port, watch_group), actions)| Bucket {
            weight,
            watch_port,
            watch_group,
            actions,
        })
}

fn port_desc() -> impl Strategy<Value = Port> {
    (
        any::<(u32, [u8; 6], u32, u32, u32, u32)>(),
        "[a-z0-9-]{0,15}",
        any::<(u32, u32, u32, u32)>(),
    )
        .prop_map(
            |(
                (port_no, hw_addr, config, state, curr, advertised),
                name,
                (supported, peer, curr_speed, max_speed),
            )| Port {
                port_no,
                hw_addr,
                name,
                config,
                state,
                curr,
                advertised,
                supported,
                peer,
                curr_speed,
                max_speed,
            },
        )
}

fn stats_request() -> impl Strategy<Value = FlowStatsRequest> {
    (any::<(u8, u32, u32, u64, u64)>(), any_match()).prop_map(
        |((table, out_port, out_group, cookie, cookie_mask), match_)| FlowStatsRequest {
            table,
            out_port,
            out_group,
            cookie,
            cookie_mask,
            match_,
        },
    )
}

fn pin2() -> impl Strategy<Value = PacketIn2> {
    (
        prop::collection::vec(any::<u8>(), 0..64),
        any::<(Option<u32>, Option<u32>, u8, u64, u8)>(),
        any_match(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(
            |(
                packet,
                (full_len, buffer_id, table_id, cookie, reason),
                metadata,
                userdata,
                continuation,
            )| PacketIn2 {
                packet,
                full_len,
                buffer_id,
                table_id,
                cookie,
                reason,
                metadata,
                userdata,
                continuation,
            },
        )
}

/// Any message except bundle-add (used as the inner message of bundle-add).
fn plain_message() -> BoxedStrategy<Message> {
    let cmd = prop::sample::select(vec![
        FlowModCommand::Add,
        FlowModCommand::Modify,
        FlowModCommand::ModifyStrict,
        FlowModCommand::Delete,
        FlowModCommand::DeleteStrict,
    ]);
    let flow_mod = (cmd, flow(any_match()), any::<(u64, u32, u32, u32)>()).prop_map(
        |(command, flow, (cookie_mask, buffer_id, out_port, out_group))| {
            Message::FlowMod(FlowMod {
                command,
                flow,
                cookie_mask,
                buffer_id,
                out_port,
                out_group,
            })
        },
    );
    let gtype = prop::sample::select(vec![
        GroupType::All,
        GroupType::Select,
        GroupType::Indirect,
        GroupType::FastFailover,
    ]);
    let gcmd = prop::sample::select(vec![
        GroupModCommand::Add,
        GroupModCommand::Modify,
        GroupModCommand::Delete,
    ]);
    let group = (any::<u32>(), gtype, prop::collection::vec(bucket(), 0..3))
        .prop_map(|(group_id, group_type, buckets)| Group {
            group_id,
            group_type,
            buckets,
        })
        .boxed();
    let band = (prop::option::of(any::<u8>()), any::<(u32, u32)>()).prop_map(
        |(dscp_remark, (rate, burst_size))| MeterBand {
            dscp_remark,
            rate,
            burst_size,
        },
    );
    let stats = (flow(any_match()), any::<(u32, u32, u64, u64)>()).prop_map(
        |(flow, (duration_sec, duration_nsec, packet_count, byte_count))| FlowStats {
            flow,
            duration_sec,
            duration_nsec,
            packet_count,
            byte_count,
        },
    );
    prop_oneof![
        prop::option::of(any::<u32>()).prop_map(Message::Hello),
        (
            any::<(u16, u16)>(),
            prop::option::of(any::<u32>()),
            prop::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|((ty, code), experimenter, data)| {
                Message::Error(ErrorMsg {
                    ty: if experimenter.is_some() {
                        0xffff
                    } else {
                        ty.min(0xfffe)
                    },
                    code,
                    experimenter,
                    data,
                })
            }),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Message::EchoRequest),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Message::EchoReply),
        Just(Message::FeaturesRequest),
        any::<(u64, u32, u8, u8, u32)>().prop_map(
            |(datapath_id, n_buffers, n_tables, auxiliary_id, capabilities)| Message::FeaturesReply(
                Features {
                    datapath_id,
                    n_buffers,
                    n_tables,
                    auxiliary_id,
                    capabilities
                }
            )
        ),
        Just(Message::GetConfigRequest),
        any::<(u16, u16)>().prop_map(|(flags, miss_send_len)| Message::GetConfigReply(
            SwitchConfig {
                flags,
                miss_send_len
            }
        )),
        any::<(u16, u16)>().prop_map(|(flags, miss_send_len)| Message::SetConfig(SwitchConfig {
            flags,
            miss_send_len
        })),
        any::<([u32; 2], [u32; 2], [u32; 2])>().prop_map(|(a, b, c)| Message::SetAsync(
            AsyncConfig {
                packet_in_mask: a,
                port_status_mask: b,
                flow_removed_mask: c
            }
        )),
        any::<(u32, u64)>().prop_map(|(role, generation_id)| Message::RoleRequest(Role {
            role,
            generation_id
        })),
        any::<(u32, u64)>().prop_map(|(role, generation_id)| Message::RoleReply(Role {
            role,
            generation_id
        })),
        Just(Message::BarrierRequest),
        Just(Message::BarrierReply),
        flow_mod,
        (gcmd, group.clone())
            .prop_map(|(command, group)| Message::GroupMod(GroupMod { command, group })),
        (any::<(u16, u16, u32)>(), prop::collection::vec(band, 0..3)).prop_map(
            |((command, flags, meter_id), bands)| Message::MeterMod(MeterMod {
                command,
                flags,
                meter_id,
                bands
            })
        ),
        (
            any::<(u32, u16, u8, u8, u64)>(),
            any_match(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |((buffer_id, total_len, reason, table_id, cookie), match_, data)| {
                    Message::PacketIn(PacketIn {
                        buffer_id,
                        total_len,
                        reason,
                        table_id,
                        cookie,
                        match_,
                        data,
                    })
                }
            ),
        pin2().prop_map(Message::PacketIn2),
        pin2().prop_map(Message::Resume),
        any::<u32>().prop_map(Message::SetPacketInFormat),
        (
            any::<u16>(),
            prop::collection::vec(any::<(u16, u8, u8, u16)>(), 0..4)
        )
            .prop_map(|(command, m)| {
                let mappings = m
                    .into_iter()
                    .map(|(class, ty, len, index)| TlvMapping {
                        class,
                        ty,
                        len,
                        index,
                    })
                    .collect();
                Message::TlvTableMod(TlvTableMod { command, mappings })
            }),
        (
            any::<(u32, u32)>(),
            prop::collection::vec(action(), 0..4),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|((buffer_id, in_port), actions, data)| {
                Message::PacketOut(PacketOut {
                    buffer_id,
                    in_port,
                    actions,
                    data,
                })
            }),
        (any::<u8>(), port_desc())
            .prop_map(|(reason, port)| Message::PortStatus(PortStatus { reason, port })),
        (
            any::<(u64, u16, u8, u8, u32, u32)>(),
            any::<(u16, u16, u64, u64)>(),
            any_match()
        )
            .prop_map(
                |(
                    (cookie, priority, reason, table_id, duration_sec, duration_nsec),
                    (idle_timeout, hard_timeout, packet_count, byte_count),
                    match_,
                )| {
                    Message::FlowRemoved(FlowRemoved {
                        cookie,
                        priority,
                        reason,
                        table_id,
                        duration_sec,
                        duration_nsec,
                        idle_timeout,
                        hard_timeout,
                        packet_count,
                        byte_count,
                        match_,
                    })
                }
            ),
        (
            any::<u16>(),
            prop_oneof![
                stats_request().prop_map(MultipartRequest::Flow),
                stats_request().prop_map(MultipartRequest::Aggregate),
                Just(MultipartRequest::GroupDesc),
                Just(MultipartRequest::PortDesc),
            ]
        )
            .prop_map(|(f, r)| Message::MultipartRequest(f, r)),
        (
            any::<u16>(),
            prop_oneof![
                prop::collection::vec(stats, 0..3).prop_map(MultipartReply::Flow),
                any::<(u64, u64, u32)>().prop_map(|(packet_count, byte_count, flow_count)| {
                    MultipartReply::Aggregate {
                        packet_count,
                        byte_count,
                        flow_count,
                    }
                }),
                prop::collection::vec(group, 0..3).prop_map(MultipartReply::GroupDesc),
                prop::collection::vec(port_desc(), 0..3).prop_map(MultipartReply::PortDesc),
            ]
        )
            .prop_map(|(f, r)| Message::MultipartReply(f, r)),
        any::<(u32, u16, u16)>().prop_map(|(bundle_id, ctrl_type, flags)| Message::BundleCtrl(
            BundleCtrl {
                bundle_id,
                ctrl_type,
                flags
            }
        )),
    ]
    .boxed()
}

/// Any message.
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => plain_message(),
        1 => (any::<(u32, u16)>(), plain_message()).prop_map(|((id, flags), m)| Message::BundleAdd(id, flags, Box::new(m))),
    ]
}
