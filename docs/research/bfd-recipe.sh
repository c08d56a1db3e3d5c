#!/bin/bash
# bfd-recipe.sh - BFD between OVS "chassis" on the userspace (netdev) datapath, with
# per-peer Geneve ports bxp<j> (remote_ip=10.99.0.<j> key=flow, ofport 200+<j>)
# next to the flow-based port bxtun (remote_ip=flow key=flow, ofport 100).
# Lab (chassis, underlay, VMs, cleanup, checks): bfd-lab.sh beside this file.
# Questions:
#   Q1 does BFD work on the flow-based port?  Q2 per-peer sessions: time to come up,
#   to see a cut of chassis CUT's underlay, to come back after the restore.
#   Q3 on which port does a peer's traffic arrive (sent via the per-peer port or via
#   the flow-based port with tun_dst)?  Q4 a fast-failover group watching the
#   per-peer ports (a "gateway" 10.0.0.100 on chassis 2 and 3), and what plain
#   output to a per-peer port whose BFD is down does (pings at 100 pps in the cut).
# usage: bash docs/research/bfd-recipe.sh   env: N=3 MIN_RX=100 MIN_TX=100 MULT=3
#        DECAY=0 CUT=2 CUTMODE=switch|veth-down|delete KEEP=1 (leave running;
#        then run it with CLEAN_ONLY=1 to tear down)
# Everything created is named bx* (netns bx-*, links bx*, dir /tmp/bx-bfd).
BASE=/tmp/bx-bfd PEER=bxp PEER_KEY=flow
# shellcheck source-path=SCRIPTDIR source=bfd-lab.sh
source "$(dirname "$0")/bfd-lab.sh"
GW=100   # "gateway" IP 10.0.0.100 / MAC 02:00:00:00:00:64 hosted on chassis 2 (primary) and 3 (backup)

build_lab
ip -n bx-v2 addr add "10.0.0.$GW/32" dev bxv2-e; ip -n bx-v3 addr add "10.0.0.$GW/32" dev bxv3-e
# group 1 on chassis 1 (fast failover): bucket 0 -> chassis 2 over bxp2 while
# port 202 is live, else bucket 1 -> chassis 3 over bxp3 (watch 203)
ofctl 1 add-group bxint "group_id=1,type=ff,bucket=watch_port:202,actions=set_field:$VNI->tun_id,output:202,bucket=watch_port:203,actions=set_field:$VNI->tun_id,output:203"
# flows on bxint besides the common ones: ingress accepted from the per-peer ports,
# egress to peers via the per-peer port; the "gateway" 10.0.0.$GW / $(mac $GW) is
# hosted on chassis 2 and 3 (VM2 and VM3 both carry 10.0.0.$GW); chassis 1 reaches
# it through the fast-failover group
peer_flows() {
    local i=$1 j
    for j in $(seq "$N"); do [ "$i" = "$j" ] && continue
        echo "table=0,priority=100,in_port=$((200+j)),tun_id=$VNI actions=goto_table:10"
        echo "table=20,priority=100,dl_dst=$(mac "$j") actions=set_field:$VNI->tun_id,output:$((200+j))"; done
    arp_flow $GW
    if [ "$i" = 1 ]; then echo "table=20,priority=100,dl_dst=$(mac $GW) actions=group:1"
    else echo "table=20,priority=100,dl_dst=$(mac $GW) actions=set_field:$(mac "$i")->eth_dst,output:1"; fi
}
install_flows peer_flows

# ------------------------------------------------------------------ Q1: BFD on the flow-based port
CHECK="Q1: bfd on the remote_ip=flow port stays state=down (its BFD packets have no tun_dst)"
vsctl 1 set Interface bxtun bfd:enable=true bfd:min_rx=100 bfd:min_tx=100
vsctl 2 set Interface bxtun bfd:enable=true bfd:min_rx=100 bfd:min_tx=100
sleep 3
log "c1 bxtun bfd_status: $(vsctl 1 get Interface bxtun bfd_status)"
q1() { [ "$(bfd_field 1 bxtun state)" = down ] && [ "$(bfd_field 1 bxtun forwarding)" = false ]; }
ok q1
vsctl 1 clear Interface bxtun bfd; vsctl 2 clear Interface bxtun bfd

# ------------------------------------------------------------------ Q2: per-peer ports with BFD
add_peer_ports "Q2: all per-peer BFD sessions state=up forwarding=true"

# ------------------------------------------------------------------ Q3: data path over per-peer ports
# hit I PORT : the table-0 flow "in_port=PORT,tun_id=VNI" on chassis I has n_packets>0
hit() { ofctl "$1" dump-flows bxint table=0 | grep -F "in_port=$2" | grep -F "tun_id=$VNI" | grep -qv 'n_packets=0,'; }
ip netns exec bx-v1 ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1   # warm up tunnel neighbour resolution
CHECK="Q3: VM1 -> VM2 ping via per-peer port bxp2 (set_field tun_id, output:202)"
ok ping_ok 1 2
sleep 1
CHECK="Q3: c2 receives it on in_port=201 (per-peer port for c1) with tun_id=$VNI"
ok hit 2 201
CHECK="Q3: c2 receives nothing on the flow-based port (in_port=100)"
ok eval '! hit 2 100'
# c1 -> c3 sent via the FLOW-based port (set tun_dst) - c3 still reports in_port=201
ofctl 1 add-flow bxint "table=20,priority=110,dl_dst=$(mac 3) actions=set_field:$VNI->tun_id,set_field:$(ulip 3)->tun_dst,output:100"
ip netns exec bx-v1 ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1
CHECK="Q3: VM1 -> VM3 sent via the flow-based port 100 (set tun_dst)"
ok ping_ok 1 3
sleep 1
CHECK="Q3: c3 receives it on the per-peer port in_port=201, not on 100"
ok eval 'hit 3 201 && ! hit 3 100'
ofctl 3 dump-flows bxint table=0 | grep -E 'in_port=(100|20)' | sed 's/^ *cookie=[^,]*, duration=[^,]*, //; s/^/   c3 /' >&2
ofctl 1 del-flows bxint "table=20,priority=110,dl_dst=$(mac 3)" --strict

# ------------------------------------------------------------------ Q4 + cut the underlay of chassis CUT
ports_c1() { ofctl 1 dump-ports-desc bxint | grep -A3 -E '\(bxp[0-9]+\)' | grep -E 'bxp|state' | sed 's/^/   c1 /' >&2; }
CHECK="Q4: VM1 -> gateway 10.0.0.$GW via ff group (bucket 0 = c2) before the cut"
ok ping_ok 1 $GW
ports_c1
start_monitors
# traffic during the cut, 100 pps each: VM1 -> gateway (ff group) and VM1 -> VM$CUT
# (plain output to the per-peer port bxp$CUT)
bg ip netns exec bx-v1 ping -D -i 0.01 -W 1 10.0.0.$GW > "$BASE/ping-gw.txt" 2>&1
bg ip netns exec bx-v1 ping -D -i 0.01 -W 1 "10.0.0.$CUT" > "$BASE/ping-cut.txt" 2>&1
sleep 2
tx_pkts() { ofctl 1 dump-ports bxphy bxu1 | grep -o 'tx pkts=[0-9]*' | grep -o '[0-9]*'; }
cut_underlay "Q2: every peer sees bxp$CUT forwarding=false"
ports_c1
appctl 1 ofproto/trace bxint "in_port=1,icmp,dl_src=$(mac 1),dl_dst=$(mac $GW),nw_src=10.0.0.1,nw_dst=10.0.0.$GW" > "$BASE/trace-ff-down.txt" 2>&1
grep -E 'not live|using bucket|Datapath actions' "$BASE/trace-ff-down.txt" | sed 's/^ */   c1 trace VM1->gw: /' >&2
# output straight to the dead per-peer port: still encapsulated and sent?
appctl 1 ofproto/trace bxint "in_port=1,icmp,dl_src=$(mac 1),dl_dst=$(mac "$CUT"),nw_src=10.0.0.1,nw_dst=10.0.0.$CUT" > "$BASE/trace-dead-port.txt" 2>&1
grep -E 'Datapath actions' "$BASE/trace-dead-port.txt" | sed 's/^ */   c1 trace VM1->VM'"$CUT"' (output:20'"$CUT"', BFD down): /' >&2
a=$(tx_pkts); sleep 1; b=$(tx_pkts)
log "   c1 underlay bxu1 tx packets in 1 s while bxp$CUT is down: $((b-a)) (ping VM1->VM$CUT at 100 pps + BFD)"
ofctl 1 dump-group-stats bxint | sed 's/^/   c1 /' >&2
restore_underlay "Q2: BFD back up everywhere after the restore"
stop_monitors

# ------------------------------------------------------------------ timings from the monitors
report_bfd_times
report_port_status
echo "=== pings from VM1 at 100 pps during the cut (first lost / first answered again) ==="
for f in gw cut; do
    awk -v tc="$tcut" -v tr="$trest" -v f="$f" -v cut="$CUT" '
        /icmp_seq/ { t=substr($1,2,length($1)-2)*1000; split($0,a,"icmp_seq="); s=a[2]+0
                     if (n && s-ps-1 > gap) { gap=s-ps-1; g0=pt; g1=t }
                     n++; ps=s; pt=t }
        END { if (!gap) { printf "   VM1->%s: no reply missing\n", (f=="gw"?"gateway (ff group)":"VM" cut); exit }
              printf "   VM1->%s: largest hole %d replies missing; last reply %+d ms from cut, next reply %+d ms from cut = %+d ms from restore\n", (f=="gw"?"gateway (ff group)":"VM" cut " (output:20" cut ")"), gap, g0-tc, g1-tc, g1-tr }
' "$BASE/ping-$f.txt"
done
finish
