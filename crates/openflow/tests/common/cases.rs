//! Flow and group cases shared by the golden, switch and property tests: together they use
//! every match field and every action kind the crate models.

/// Flows in `ovs-ofctl --no-stats dump-flows` syntax (canonical: printing them gives them back).
pub const FLOWS: &[&str] = &[
    " table=3, priority=100,pkt_mark=0x9,ct_state=-new+est+trk,ct_zone=3,ct_mark=0x1/0x1,ct_label=0x5,ct_nw_src=1.2.3.4,ct_nw_proto=6,ct_tp_dst=80,tcp,reg0=0x5,reg1=0x10/0xf0,reg6=0,reg7=0x7,tun_id=0x7,tun_src=1.1.1.1,tun_dst=2.2.2.0/24,metadata=0x5,in_port=3,dl_vlan=5,dl_src=00:11:22:33:44:55,nw_src=10.0.0.0/8,nw_tos=16,nw_ttl=5,tp_dst=80,tcp_flags=+syn-ack actions=load:0x5->NXM_NX_REG0[],set_field:0x6->reg1,load:0x5->NXM_NX_REG2[0..7],move:NXM_NX_REG0[0..5]->NXM_NX_REG3[10..15],resubmit(,5),resubmit(3,4),resubmit(,5,ct),resubmit:7",
    " cookie=0x5, table=1, idle_timeout=10, hard_timeout=20, send_flow_rem priority=10,tcp actions=ct(commit,table=4,zone=NXM_NX_REG6[0..15],nat(src=10.0.0.1-10.0.0.5:100-200,random),exec(set_field:0x1->ct_mark,set_field:0x5->ct_label),alg=ftp),ct_clear,note:01.02.00.00.00.00,controller(max_len=100,userdata=01.02,pause),multipath(eth_src,50,hrw,12,0,NXM_NX_REG0[0..3]),sample(probability=100,collector_set_id=1,obs_domain_id=2,obs_point_id=3),output:NXM_NX_REG5[],dec_ttl,set_queue:3,group:5,IN_PORT,CONTROLLER:100,LOCAL,output:5,learn(table=5,idle_timeout=10,hard_timeout=20,fin_idle_timeout=5,fin_hard_timeout=6,priority=5,cookie=0x5,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],NXM_NX_REG0[0..3]=0x5,load:NXM_NX_REG1[]->NXM_NX_REG2[],load:0x7->NXM_NX_REG3[],output:OXM_OF_IN_PORT[]),goto_table:9",
    " priority=1,mpls,mpls_label=5,mpls_tc=2,mpls_bos=1 actions=dec_mpls_ttl,set_field:5->mpls_label,set_mpls_ttl(5),pop_mpls:0x0800,push_vlan:0x8100,pop_vlan",
    " priority=1,ip actions=push_mpls:0x8847,set_field:6->mpls_label,output:1",
    " priority=1,icmp6,ipv6_src=2001:db8::/64,ipv6_dst=::1,ipv6_label=0x00005,icmp_type=135,nd_target=::2,nd_sll=00:00:00:00:00:01 actions=drop",
    " priority=1,arp,arp_spa=1.2.3.4,arp_tpa=1.2.3.0/24,arp_op=1,arp_sha=00:00:00:00:00:01,arp_tha=00:00:00:00:00:00/ff:ff:ff:00:00:00 actions=NORMAL",
    " priority=1,ipv6 actions=ct(commit,zone=5,nat(dst=[2001:db8::1]-[2001:db8::5]:80,persistent,hash)),ct(nat),ct(commit,exec(load:0x1->NXM_NX_CT_MARK[0]))",
    " priority=1,udp,tun_metadata0=0x5,dl_vlan_pcp=3,nw_tos=20,nw_ecn=1,tp_src=5,tp_dst=0x10/0xf0 actions=write_actions(output:3),goto_table:5",
    " priority=1,conj_id=7,sctp,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,tp_src=1 actions=meter:5,clear_actions,write_metadata:0x5/0xff,goto_table:4",
    " priority=1,pkt_mark=0x5/0xff,ct_state=+trk,ip actions=conjunction(5,1/2)",
    " priority=1,ip,vlan_tci=0x0000/0x1fff,dl_src=00:00:00:00:00:02,dl_dst=00:00:00:00:00:01,nw_dst=1.0.3.0/255.0.255.0,nw_proto=50 actions=FLOOD,ALL",
    " priority=0,dl_vlan=5 actions=drop",
    " in_port=LOCAL,dl_vlan_pcp=3 actions=controller(reason=no_match,max_len=200,id=5)",
    " priority=5,udp6,ipv6_label=0x00045/0x000ff,tp_src=0x10/0xfff0,tp_dst=5 actions=drop",
    " priority=5,icmp6,icmp_type=136,nd_target=::5,nd_tll=00:00:00:00:00:05 actions=drop",
    " priority=5,reg0=0x1,in_port=1,dl_vlan=3,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02,dl_type=0x1234 actions=drop",
    " priority=5,rarp actions=drop",
    " priority=5,icmp,icmp_type=3,icmp_code=1 actions=output:NXM_NX_REG1[0..15]",
    " priority=5,ct_state=+new-est+trk,ct_nw_dst=10.0.0.0/8,ct_nw_proto=17,ct_tp_src=1000,udp,reg15=0x1 actions=drop",
    " priority=5,ct_state=+est+trk,ct_nw_src=10.1.0.0/16,ip,reg8=0xff000000/0xff000000 actions=ct(table=7,zone=NXM_NX_REG13[0..15])",
    " priority=7,ip actions=learn(table=10,idle_timeout=60,priority=100,send_flow_rem,delete_learned,eth_type=0x800,NXM_OF_IP_SRC[],nw_proto=6,NXM_NX_REG9[0..7]=NXM_NX_REG10[8..15]),dec_ttl",
    " priority=9 actions=controller(userdata=aa.bb.cc.dd.ee),resubmit(,200)",
    " priority=2,tcp actions=set_field:00:00:00:00:00:01->eth_src,set_field:10.0.0.1->ip_src,set_field:80->tcp_dst,set_field:1.1.1.1->tun_dst,set_field:0x5->tun_id,set_field:0x7->metadata,set_field:5->ip_dscp,set_field:2->nw_ecn,set_field:10->nw_ttl,set_field:0x5->pkt_mark,set_field:0x5->tun_metadata0,write_metadata:0x5,goto_table:1",
    " priority=2,dl_vlan=5 actions=set_field:4097->vlan_vid,set_field:3->vlan_pcp",
    " priority=2,udp actions=ct(commit,force,table=2),group:7",
    " priority=2,tcp6 actions=ct(commit,nat(src=[2001:db8::1]:1000)),set_field:2001:db8::5->ipv6_dst,ct(commit,exec(load:0x1->NXM_NX_CT_LABEL[0..1]))",
    " priority=2,arp actions=set_field:2->arp_op,set_field:00:00:00:00:00:02->arp_sha,set_field:1.2.3.4->arp_spa",
    " priority=2 actions=output:65279,note:00.11.22.33.44.55.66.00.00.00.00.00.00.00",
];

/// Flows exercised only against the switch (OVS renders them differently in ofp-print).
pub const SWITCH_ONLY: &[&str] = &[
    " priority=3,ip actions=set_field:0x5/0x5->reg3",
    " priority=3,ipv6,ct_state=+est+trk,ct_ipv6_src=2001:db8::1,ct_ipv6_dst=2001:db8::/32 actions=drop",
];
