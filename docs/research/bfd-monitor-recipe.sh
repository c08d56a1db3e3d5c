#!/bin/bash
# bfd-monitor-recipe.sh - per-peer BFD *monitor* ports (Geneve, remote_ip=<peer>,
# key=0) next to the flow-based data port (remote_ip=flow key=flow), userspace
# (netdev) datapath. Derived from bfd-recipe.sh (same underlay and chassis setup).
# Per chassis bxint has:
#   ofport 1        bxv<i>-p  veth to "VM" netns bx-v<i> (10.0.0.<i>/24)
#   ofport 100      bxtun     geneve remote_ip=flow key=flow: ALL data, both ways
#   ofport 200+<j>  bxm<j>    geneve remote_ip=10.99.0.<j> key=0, BFD on (monitor only)
# Questions: BFD comes up on key=0 ports; data with VNI != 0 sent via the flow-based
# port (set tun_dst) arrives on the receiver's flow-based port, not on the monitor
# port; a cut of one chassis' underlay is detected; data returns after restore.
# usage: bash docs/research/bfd-monitor-recipe.sh   env: N=3 MIN_RX=100 MIN_TX=100 MULT=3 CUT=2
#        CUTMODE=switch|veth-down|delete KEEP=1 / CLEAN_ONLY=1 as in bfd-recipe.sh
# Everything created is named bx* (netns bx-*, links bx*, dir /tmp/bx-bfdmon).
set -u
N=${N:-3}; MIN_RX=${MIN_RX:-100}; MIN_TX=${MIN_TX:-100}; MULT=${MULT:-3}
DECAY=${DECAY:-0}; CUT=${CUT:-2}; CUTMODE=${CUTMODE:-switch}
BASE=/tmp/bx-bfdmon
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
VNI=0x64
PASS=0; FAIL=0
log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
ok()  { if "$@"; then PASS=$((PASS+1)); log "PASS $CHECK"; else FAIL=$((FAIL+1)); log "FAIL $CHECK"; fi; }
nowms() { local t=$EPOCHREALTIME; echo $(( ${t/./} / 1000 )); }
mac() { printf '02:00:00:00:00:%02x' "$1"; }
ulip() { echo "10.99.0.$1"; }

# ------------------------------------------------------------------ cleanup
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }
kill_pidfile() {   # only OVS daemons whose pidfile is ours
    local pf=$1 pid
    [ -f "$pf" ] || return 0
    pid=$(cat "$pf" 2>/dev/null); [ -n "$pid" ] && alive "$pid" || return 0
    grep -qE 'ovs-vswitchd|ovsdb-server' "/proc/$pid/cmdline" 2>/dev/null || return 0
    grep -q "$BASE" "/proc/$pid/cmdline" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null
    for _ in $(seq 40); do alive "$pid" || return 0; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
}
# background job in its own session/process group; killed as a group by its PGID
bg()     { setsid "$@" & echo $! >> "$BASE/bg.pids"; }
kill_bg() { local p; for p in $(cat "$BASE"/bg.pids 2>/dev/null); do kill -- -"$p" 2>/dev/null; done; rm -f "$BASE"/bg.pids; }
cleanup() {
    local rc=$? p ns
    if [ "${KEEP:-0}" = 1 ] && [ "${CLEAN_ONLY:-0}" != 1 ]; then
        log "KEEP=1: left running; CLEAN_ONLY=1 bash $0 removes it"; return $rc; fi
    kill_bg
    for p in "$BASE"/c*/ovs-vswitchd.pid "$BASE"/c*/ovsdb-server.pid; do kill_pidfile "$p"; done
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^bx-(c|v)[0-9]+$|^bx-ul$'); do
        ip netns del "$ns" 2>/dev/null; done
    case $BASE in /tmp/bx-*) rm -rf "$BASE";; esac
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "${CLEAN_ONLY:-0}" = 1 ]; then exit 0; fi
KEEP=0 cleanup; mkdir -p "$BASE"

# ------------------------------------------------------------------ helpers
d()      { echo "$BASE/c$1"; }
vsctl()  { local i=$1; shift; ovs-vsctl --db="unix:$(d $i)/db.sock" --timeout=20 "$@"; }
ofctl()  { local i=$1; shift; OVS_RUNDIR=$(d $i) ovs-ofctl -O OpenFlow13 "$@"; }
appctl() { local i=$1; shift; ovs-appctl -t "$(d $i)/ovs-vswitchd.ctl" "$@"; }
newns()  { ip netns add "$1"; ip -n "$1" link set lo up
           ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; }
ovs_start() {
    local i=$1 dd; dd=$(d $i); mkdir -p "$dd"
    ovsdb-tool create "$dd/conf.db" "$SCHEMA"
    ip netns exec bx-c$i env OVS_RUNDIR="$dd" OVS_LOGDIR="$dd" OVS_DBDIR="$dd" OVS_SYSCONFDIR="$dd" \
        ovsdb-server "$dd/conf.db" --remote="punix:$dd/db.sock" \
        --pidfile="$dd/ovsdb-server.pid" --unixctl="$dd/ovsdb-server.ctl" \
        --log-file="$dd/ovsdb-server.log" -vconsole:off --detach --no-chdir
    vsctl $i --no-wait init -- set Open_vSwitch . external_ids:system-id=bx-c$i
    ip netns exec bx-c$i env OVS_RUNDIR="$dd" OVS_LOGDIR="$dd" OVS_DBDIR="$dd" OVS_SYSCONFDIR="$dd" \
        ovs-vswitchd "unix:$dd/db.sock" --pidfile="$dd/ovs-vswitchd.pid" \
        --unixctl="$dd/ovs-vswitchd.ctl" --log-file="$dd/ovs-vswitchd.log" \
        -vconsole:off --detach --no-chdir
}
add_br() { vsctl $1 -- add-br $2 -- set bridge $2 datapath_type=netdev \
               protocols=OpenFlow10,OpenFlow13,OpenFlow15 fail_mode=secure; }
# check_tnl_key=true: only tun_id 0 BFD packets count (as OVN sets it): a VM cannot
# feed the session with UDP/3784 packets inside a tenant VNI
bfd_opts() { echo "bfd:enable=true bfd:min_rx=$MIN_RX bfd:min_tx=$MIN_TX bfd:mult=$MULT bfd:decay_min_rx=$DECAY bfd:check_tnl_key=true"; }
# bfd_field I PORT KEY : one key of bfd_status (quotes stripped)
bfd_field() { vsctl $1 get Interface $2 bfd_status:$3 2>/dev/null | tr -d '"'; }
all_up() {   # every per-peer port of every chassis forwarding
    local i j
    for i in $(seq $N); do for j in $(seq $N); do [ $i = $j ] && continue
        [ "$(bfd_field $i bxm$j forwarding)" = true ] || return 1; done; done
}
wait_until() { local n=$1; shift; for _ in $(seq $n); do "$@" && return 0; sleep 0.02; done; return 1; }

# ------------------------------------------------------------------ build
log "building $N chassis (BFD min_rx=$MIN_RX min_tx=$MIN_TX mult=$MULT decay_min_rx=$DECAY)"
newns bx-ul
ip -n bx-ul link add bxulbr type bridge
ip -n bx-ul link set bxulbr up
for i in $(seq $N); do
    newns bx-c$i; newns bx-v$i
    ip link add bxu$i netns bx-c$i type veth peer name bxul$i netns bx-ul
    ip -n bx-ul link set bxul$i master bxulbr up
    ip -n bx-c$i link set bxu$i up
    ovs_start $i
    add_br $i bxphy; add_br $i bxint
    vsctl $i add-port bxphy bxu$i
    ip -n bx-c$i addr add "$(ulip $i)/24" dev bxphy
    ip -n bx-c$i link set bxphy up
    ofctl $i add-flow bxphy "priority=0,actions=NORMAL"
    # VM
    ip link add bxv$i-p netns bx-c$i type veth peer name bxv$i-e netns bx-v$i
    ip -n bx-v$i link set bxv$i-e address "$(mac $i)"
    ip -n bx-v$i addr add 10.0.0.$i/24 dev bxv$i-e
    ip -n bx-v$i link set bxv$i-e up; ip -n bx-c$i link set bxv$i-p up
    ip netns exec bx-v$i ethtool -K bxv$i-e tx off >/dev/null 2>&1
    vsctl $i add-port bxint bxv$i-p -- set Interface bxv$i-p ofport_request=1 \
        -- add-port bxint bxtun -- set Interface bxtun type=geneve \
           options:remote_ip=flow options:key=flow ofport_request=100
done

# flows on bxint: ARP responder, L2 to the local VM, to peers via the FLOW-BASED
# port (tun_id + tun_dst); ingress: data accepted on the flow-based port only;
# per-peer monitor ports get counting drop flows (to see whether anything lands there).
# Note: BFD packets are consumed in xlate (process_special) AFTER the table-0 lookup, so
# the matching flow's n_packets counts them (66-byte packets) although its actions never run.
for i in $(seq $N); do
    {
    echo "table=0,priority=100,in_port=1 actions=goto_table:10"
    echo "table=0,priority=100,in_port=100,tun_id=$VNI actions=goto_table:10"
    for j in $(seq $N); do [ $i = $j ] && continue
        echo "table=0,priority=95,in_port=$((200+j)),tun_id=$VNI actions=drop"   # data: must stay 0
        echo "table=0,priority=90,in_port=$((200+j)) actions=drop"; done           # BFD (see M2)
    echo "table=0,priority=0 actions=drop"
    for j in $(seq $N); do
        echo "table=10,priority=100,arp,arp_op=1,arp_tpa=10.0.0.$j actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:$(mac $j)->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:$(mac $j)->arp_sha,set_field:10.0.0.$j->arp_spa,IN_PORT"
    done
    echo "table=10,priority=0 actions=goto_table:20"
    echo "table=20,priority=100,dl_dst=$(mac $i) actions=output:1"
    for j in $(seq $N); do [ $i = $j ] && continue
        echo "table=20,priority=100,dl_dst=$(mac $j) actions=set_field:$VNI->tun_id,set_field:$(ulip $j)->tun_dst,output:100"; done
    echo "table=20,priority=0 actions=drop"
    } | ofctl $i replace-flows bxint - || { log "flows failed on c$i"; exit 1; }
done

# ------------------------------------------------------------------ M1: monitor ports with BFD, key=0
t0=$(nowms)
for i in $(seq $N); do
    args=()
    for j in $(seq $N); do [ $i = $j ] && continue
        args+=(-- add-port bxint bxm$j -- set Interface bxm$j type=geneve
               options:remote_ip=$(ulip $j) options:key=0 ofport_request=$((200+j)) $(bfd_opts))
    done
    vsctl $i "${args[@]}"
done
CHECK="M1: all key=0 monitor BFD sessions state=up forwarding=true"
ok wait_until 500 all_up
t1=$(nowms); log "BFD full mesh up $((t1-t0)) ms after the monitor ports were added"
for i in $(seq $N); do for j in $(seq $N); do [ $i = $j ] && continue
    log "c$i bxm$j: $(vsctl $i get Interface bxm$j bfd_status)"; done; done

# ------------------------------------------------------------------ M2: data stays on the flow-based port
ping_ok() { ip netns exec bx-v$1 ping -c 3 -i 0.2 -W 2 10.0.0.$2 >/dev/null 2>&1; }
# pkts I MATCH : n_packets of the table-0 flow on chassis I whose text contains MATCH
pkts() { ofctl $1 dump-flows bxint table=0 | grep -F "$2" | grep -o 'n_packets=[0-9]*' | grep -o '[0-9]*' | head -1; }
dump0() { ofctl $1 dump-flows bxint table=0 | grep -E 'in_port=(100|20[0-9])' | sed 's/^ *cookie=[^,]*, duration=[^,]*, //; s/^/   c'$1' /' >&2; }
mon_zero() { local i=$1 j; for j in $(seq $N); do [ $i = $j ] && continue
    [ "$(pkts $i "tun_id=$VNI,in_port=$((200+j))")" = 0 ] || return 1; done; }
ip netns exec bx-v1 ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1   # warm up tunnel neighbour resolution
ip netns exec bx-v1 ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1
CHECK="M2: VM1 -> VM2 and VM1 -> VM3 ping via the flow-based port (tun_dst set)"
ok eval 'ping_ok 1 2 && ping_ok 1 3'
sleep 1
CHECK="M2: c2 and c3 receive the data (tun_id=$VNI) on in_port=100, the flow-based port"
ok eval '[ "$(pkts 2 "in_port=100")" -gt 0 ] && [ "$(pkts 3 "in_port=100")" -gt 0 ]'
CHECK="M2: no data (tun_id=$VNI) arrives on any monitor port"
ok eval 'mon_zero 1 && mon_zero 2 && mon_zero 3'
dump0 2; dump0 3
bfd_only() { ofctl $1 dump-flows bxint table=0 | grep -F "priority=90,in_port=$2 " | grep -oE 'n_packets=[0-9]+, n_bytes=[0-9]+' | awk -F'[=, ]+' '$2>0 && $4==$2*66 {ok=1} END {exit !ok}'; }
CHECK="M2: what the monitor ports' catch-all flows count is BFD only (66-byte packets), never run"
ok eval 'bfd_only 2 201 && bfd_only 3 201'

# ------------------------------------------------------------------ cut the underlay of chassis CUT
for i in $(seq $N); do
    bg bash -c "ovsdb-client monitor unix:$(d $i)/db.sock Open_vSwitch Interface name,bfd_status --format=csv 2>/dev/null |
        while IFS= read -r l; do printf '%s %s\n' \"\$EPOCHREALTIME\" \"\$l\"; done > $BASE/mon-c$i.txt"
    bg bash -c "OVS_RUNDIR=$(d $i) stdbuf -oL ovs-ofctl -O OpenFlow13 monitor bxint 128 2>&1 |
        while IFS= read -r l; do printf '%s %s\n' \"\$EPOCHREALTIME\" \"\$l\"; done > $BASE/ofmon-c$i.txt"
done
sleep 2
down_seen() { local i; for i in $(seq $N); do [ $i = $CUT ] && continue
    [ "$(bfd_field $i bxm$CUT forwarding)" = false ] || return 1; done; }
others_up() { local i j; for i in $(seq $N); do for j in $(seq $N); do
    [ $i = $j ] || [ $i = $CUT ] || [ $j = $CUT ] && continue
    [ "$(bfd_field $i bxm$j forwarding)" = true ] || return 1; done; done; }
tcut=$(nowms)
case $CUTMODE in
    switch)    ip -n bx-ul link set bxul$CUT down ;;
    veth-down) ip -n bx-c$CUT link set bxu$CUT down ;;
    delete)    ip -n bx-ul link del bxul$CUT ;;
esac
log "underlay of c$CUT cut ($CUTMODE)"
CHECK="M3: every peer sees bxm$CUT forwarding=false"
ok wait_until 500 down_seen
log "   (polling with ovs-vsctl: all peers down after $(( $(nowms) - tcut )) ms)"
sleep 1
CHECK="M3: sessions between the chassis that were not cut stay up"
ok others_up
for i in $(seq $N); do [ $i = $CUT ] && continue
    log "c$i bxm$CUT: $(vsctl $i get Interface bxm$CUT bfd_status)"; done
trest=$(nowms)
case $CUTMODE in
    switch)    ip -n bx-ul link set bxul$CUT up ;;
    veth-down) ip -n bx-c$CUT link set bxu$CUT up ;;
    delete)    ip link add bxu${CUT}n netns bx-c$CUT type veth peer name bxul$CUT netns bx-ul
               ip -n bx-ul link set bxul$CUT master bxulbr up
               vsctl $CUT del-port bxphy bxu$CUT -- add-port bxphy bxu${CUT}n
               ip -n bx-c$CUT link set bxu${CUT}n up ;;
esac
log "underlay of c$CUT restored"
CHECK="M4: BFD back up everywhere after the restore"
ok wait_until 1000 all_up
log "   (polling with ovs-vsctl: full mesh up again after $(( $(nowms) - trest )) ms)"
before=$(pkts $CUT "in_port=100")
CHECK="M4: VM1 -> VM$CUT works again, still received on c$CUT's flow-based port"
ok eval 'ping_ok 1 $CUT && sleep 1 && [ "$(pkts $CUT "in_port=100")" -gt "$before" ] && mon_zero $CUT'
sleep 1
kill_bg; sleep 0.3
echo "=== BFD key=0 monitor ports, min_rx=$MIN_RX min_tx=$MIN_TX mult=$MULT, cut=$CUTMODE of chassis $CUT (ovsdb-client monitor) ==="
for i in $(seq $N); do
    for j in $(seq $N); do [ $i = $j ] && continue; [ $i != $CUT ] && [ $j != $CUT ] && continue
    awk -v tc="$tcut" -v tr="$trest" -v p="bxm$j" -v i="$i" '
        { t=$1*1000 }
        index($0, "," p ",") {
            if (t>tc && t<tr && fd=="" && $0 ~ /forwarding=""false/) fd=int(t-tc)
            if (t>tr && up=="" && $0 ~ /forwarding=""true/)         up=int(t-tr)
        }
        END { printf "c%s %-5s forwarding=false +%s ms after cut | forwarding=true +%s ms after restore\n", i, p, fd, up }
    ' "$BASE/mon-c$i.txt"
    done
done
echo "=== OpenFlow PORT_STATUS seen by a controller on c1 (ovs-ofctl monitor bxint 128) ==="
awk -v tc="$tcut" -v tr="$trest" '{ t=$1*1000 } /PORT_STATUS/ { ps=int(t - (t>tr?tr:tc)) " ms after " (t>tr?"restore":"cut"); pn=$6 } /state:/ && ps { print "   +" ps ":", pn, $2, $3; ps="" }' "$BASE/ofmon-c1.txt"
echo "=== pass=$PASS fail=$FAIL ==="
[ "$FAIL" = 0 ]
