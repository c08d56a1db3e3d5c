#!/bin/bash
# bfd-monitor-recipe.sh - per-peer BFD *monitor* ports bxm<j> (Geneve,
# remote_ip=10.99.0.<j> key=0, ofport 200+<j>, BFD only) next to the flow-based port
# bxtun (remote_ip=flow key=flow, ofport 100) that carries ALL data, both ways.
# Userspace (netdev) datapath. Lab (chassis, underlay, VMs, cleanup, checks):
# bfd-lab.sh beside this file, shared with bfd-recipe.sh.
# Questions: M1 BFD comes up on key=0 ports; M2 data with VNI != 0 sent via the
# flow-based port (set tun_dst) arrives on the receiver's flow-based port, not on the
# monitor port; M3 a cut of one chassis' underlay is detected, the other sessions
# stay up; M4 BFD and data come back after the restore.
# usage: bash docs/research/bfd-monitor-recipe.sh   env: N=3 MIN_RX=100 MIN_TX=100 MULT=3
#        DECAY=0 CUT=2 CUTMODE=switch|veth-down|delete KEEP=1 / CLEAN_ONLY=1 as in bfd-recipe.sh
# Everything created is named bx* (netns bx-*, links bx*, dir /tmp/bx-bfdmon).
BASE=/tmp/bx-bfdmon PEER=bxm PEER_KEY=0
# shellcheck source-path=SCRIPTDIR source=bfd-lab.sh
source "$(dirname "$0")/bfd-lab.sh"

build_lab
# flows on bxint besides the common ones: to peers via the FLOW-BASED port (tun_id +
# tun_dst); ingress: data accepted on the flow-based port only; per-peer monitor
# ports get counting drop flows (to see whether anything lands there).
# Note: BFD packets are consumed in xlate (process_special) AFTER the table-0 lookup, so
# the matching flow's n_packets counts them (66-byte packets) although its actions never run.
monitor_flows() {
    local i=$1 j
    for j in $(seq "$N"); do [ "$i" = "$j" ] && continue
        echo "table=0,priority=95,in_port=$((200+j)),tun_id=$VNI actions=drop"   # data: must stay 0
        echo "table=0,priority=90,in_port=$((200+j)) actions=drop"             # BFD (see M2)
        echo "table=20,priority=100,dl_dst=$(mac "$j") actions=set_field:$VNI->tun_id,set_field:$(ulip "$j")->tun_dst,output:100"; done
}
install_flows monitor_flows

# ------------------------------------------------------------------ M1: monitor ports with BFD, key=0
add_peer_ports "M1: all key=0 monitor BFD sessions state=up forwarding=true"

# ------------------------------------------------------------------ M2: data stays on the flow-based port
# pkts I MATCH : n_packets of the table-0 flow on chassis I whose text contains MATCH
pkts() { ofctl "$1" dump-flows bxint table=0 | grep -F "$2" | grep -o 'n_packets=[0-9]*' | grep -o '[0-9]*' | head -1; }
dump0() { ofctl "$1" dump-flows bxint table=0 | grep -E 'in_port=(100|20[0-9])' | sed 's/^ *cookie=[^,]*, duration=[^,]*, //; s/^/   c'"$1"' /' >&2; }
mon_zero() { local i=$1 j; for j in $(seq "$N"); do [ "$i" = "$j" ] && continue
    [ "$(pkts "$i" "tun_id=$VNI,in_port=$((200+j))")" = 0 ] || return 1; done; }
ip netns exec bx-v1 ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1   # warm up tunnel neighbour resolution
ip netns exec bx-v1 ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1
CHECK="M2: VM1 -> VM2 and VM1 -> VM3 ping via the flow-based port (tun_dst set)"
ok eval 'ping_ok 1 2 && ping_ok 1 3'
sleep 1
CHECK="M2: c2 and c3 receive the data (tun_id=$VNI) on in_port=100, the flow-based port"
on_flow_port() { [ "$(pkts 2 "in_port=100")" -gt 0 ] && [ "$(pkts 3 "in_port=100")" -gt 0 ]; }
ok on_flow_port
CHECK="M2: no data (tun_id=$VNI) arrives on any monitor port"
ok eval 'mon_zero 1 && mon_zero 2 && mon_zero 3'
dump0 2; dump0 3
bfd_only() { ofctl "$1" dump-flows bxint table=0 | grep -F "priority=90,in_port=$2 " | grep -oE 'n_packets=[0-9]+, n_bytes=[0-9]+' | awk -F'[=, ]+' '$2>0 && $4==$2*66 {ok=1} END {exit !ok}'; }
CHECK="M2: what the monitor ports' catch-all flows count is BFD only (66-byte packets), never run"
ok eval 'bfd_only 2 201 && bfd_only 3 201'

# ------------------------------------------------------------------ M3/M4: cut the underlay of chassis CUT, restore
others_up() { local i j; for i in $(seq "$N"); do for j in $(seq "$N"); do
    [ "$i" = "$j" ] || [ "$i" = "$CUT" ] || [ "$j" = "$CUT" ] && continue
    [ "$(bfd_field "$i" "bxm$j" forwarding)" = true ] || return 1; done; done; }
start_monitors
sleep 2
cut_underlay "M3: every peer sees bxm$CUT forwarding=false"
CHECK="M3: sessions between the chassis that were not cut stay up"
ok others_up
restore_underlay "M4: BFD back up everywhere after the restore"
data_back() { local before; before=$(pkts "$CUT" "in_port=100")
    ping_ok 1 "$CUT" && sleep 1 && [ "$(pkts "$CUT" "in_port=100")" -gt "$before" ] && mon_zero "$CUT"; }
CHECK="M4: VM1 -> VM$CUT works again, still received on c$CUT's flow-based port"
ok data_back
stop_monitors
report_bfd_times
report_port_status
finish
