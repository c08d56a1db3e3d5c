#!/bin/bash
# bfd-recipe.sh - BFD between OVS "chassis" on the userspace (netdev) datapath.
#
# N (default 3) chassis, each its own netns (bx-c<i>) with its own ovsdb-server
# + ovs-vswitchd, connected by an underlay: netns bx-ul with a Linux bridge
# bxulbr and one veth per chassis (bxu<i> in the chassis <-> bxul<i> in bx-ul).
# Per chassis:
#   bxphy  : br-phy, port bxu<i>, underlay IP 10.99.0.<i>/24 on its internal port
#   bxint  : br-int with
#              ofport 1        bxv<i>-p  veth to "VM" netns bx-v<i> (10.0.0.<i>/24)
#              ofport 100      bxtun     geneve remote_ip=flow key=flow (as Wyvern today)
#              ofport 200+<j>  bxp<j>    geneve remote_ip=10.99.0.<j> key=flow, BFD on
# Steps: BFD comes up (timed) -> receive-side in_port check -> fast-failover group
# -> cut chassis CUT's underlay (switch side, default chassis 3) and time until
# the peers' bfd_status says down -> restore, time until up -> clean up.
#
# usage: bash /tmp/bfd-recipe.sh     env: N=3 MIN_RX=100 MIN_TX=100 MULT=3
#        DECAY=0 CUT=3 CUTMODE=switch|veth-down|delete KEEP=1 (leave running;
#        then run it with CLEAN_ONLY=1 to tear down)
# Everything created is named bx* (netns bx-*, links bx*, dir /tmp/bx-bfd).
set -u
N=${N:-3}; MIN_RX=${MIN_RX:-100}; MIN_TX=${MIN_TX:-100}; MULT=${MULT:-3}
DECAY=${DECAY:-0}; CUT=${CUT:-2}; CUTMODE=${CUTMODE:-switch}
BASE=/tmp/bx-bfd
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
VNI=0x64
PASS=0; FAIL=0
log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
ok()  { if "$@"; then PASS=$((PASS+1)); log "PASS $CHECK"; else FAIL=$((FAIL+1)); log "FAIL $CHECK"; fi; }
nowms() { local t=$EPOCHREALTIME; echo $(( ${t/./} / 1000 )); }
mac() { printf '02:00:00:00:00:%02x' "$1"; }
ulip() { echo "10.99.0.$1"; }
GW=100   # "gateway" IP 10.0.0.100 / MAC 02:00:00:00:00:64 hosted on chassis 2 (primary) and 3 (backup)

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
        [ "$(bfd_field $i bxp$j forwarding)" = true ] || return 1; done; done
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
ip -n bx-v2 addr add 10.0.0.$GW/32 dev bxv2-e; ip -n bx-v3 addr add 10.0.0.$GW/32 dev bxv3-e
# group 1 on chassis 1 (fast failover): bucket 0 -> chassis 2 over bxp2 while
# port 202 is live, else bucket 1 -> chassis 3 over bxp3 (watch 203)
ofctl 1 add-group bxint "group_id=1,type=ff,bucket=watch_port:202,actions=set_field:$VNI->tun_id,output:202,bucket=watch_port:203,actions=set_field:$VNI->tun_id,output:203"
# flows on bxint: ARP responder for all VMs, L2 to the local VM, to peers via
# the per-peer port; ingress accepted from the flow-based port and per-peer ports
for i in $(seq $N); do
    {
    echo "table=0,priority=100,in_port=1 actions=goto_table:10"
    echo "table=0,priority=100,in_port=100,tun_id=$VNI actions=goto_table:10"
    for j in $(seq $N); do [ $i = $j ] && continue
        echo "table=0,priority=100,in_port=$((200+j)),tun_id=$VNI actions=goto_table:10"; done
    echo "table=0,priority=0 actions=drop"
    for j in $(seq $N) $GW; do
        echo "table=10,priority=100,arp,arp_op=1,arp_tpa=10.0.0.$j actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:$(mac $j)->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:$(mac $j)->arp_sha,set_field:10.0.0.$j->arp_spa,IN_PORT"
    done
    echo "table=10,priority=0 actions=goto_table:20"
    echo "table=20,priority=100,dl_dst=$(mac $i) actions=output:1"
    for j in $(seq $N); do [ $i = $j ] && continue
        echo "table=20,priority=100,dl_dst=$(mac $j) actions=set_field:$VNI->tun_id,output:$((200+j))"; done
    # "gateway" 10.0.0.$GW / $(mac $GW): hosted on chassis 2 and 3 (VM2 and VM3 both
    # carry 10.0.0.$GW); chassis 1 reaches it through a fast-failover group
    if [ $i = 1 ]; then echo "table=20,priority=100,dl_dst=$(mac $GW) actions=group:1"
    else echo "table=20,priority=100,dl_dst=$(mac $GW) actions=set_field:$(mac $i)->eth_dst,output:1"; fi
    echo "table=20,priority=0 actions=drop"
    } | ofctl $i replace-flows bxint - || { log "flows failed on c$i"; exit 1; }
done

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
t0=$(nowms)
for i in $(seq $N); do
    args=()
    for j in $(seq $N); do [ $i = $j ] && continue
        args+=(-- add-port bxint bxp$j -- set Interface bxp$j type=geneve
               options:remote_ip=$(ulip $j) options:key=flow ofport_request=$((200+j)) $(bfd_opts))
    done
    vsctl $i "${args[@]}"
done
CHECK="Q2: all per-peer BFD sessions state=up forwarding=true"
ok wait_until 500 all_up
t1=$(nowms); log "BFD full mesh up $((t1-t0)) ms after the ports were added"
for i in $(seq $N); do for j in $(seq $N); do [ $i = $j ] && continue
    log "c$i bxp$j: $(vsctl $i get Interface bxp$j bfd_status)"; done; done

# ------------------------------------------------------------------ Q3: data path over per-peer ports
ping_ok() { ip netns exec bx-v$1 ping -c 3 -i 0.2 -W 2 10.0.0.$2 >/dev/null 2>&1; }
# hit I PORT : the table-0 flow "in_port=PORT,tun_id=VNI" on chassis I has n_packets>0
hit() { ofctl $1 dump-flows bxint table=0 | grep -F "in_port=$2" | grep -F "tun_id=$VNI" | grep -qv 'n_packets=0,'; }
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

# ------------------------------------------------------------------ cut the underlay of chassis CUT
CHECK="Q4: VM1 -> gateway 10.0.0.$GW via ff group (bucket 0 = c2) before the cut"
ok ping_ok 1 $GW
ofctl 1 dump-ports-desc bxint | grep -A3 -E '\(bxp[0-9]+\)' | grep -E 'bxp|state' | sed 's/^/   c1 /' >&2
# timestamped monitors on every chassis: bfd_status rows and OpenFlow port status
# (a connection to the bridge's .mgmt socket is a "service" connection: it gets
# PORT_STATUS only after setting a nonzero miss_send_len - the "128" below)
for i in $(seq $N); do
    bg bash -c "ovsdb-client monitor unix:$(d $i)/db.sock Open_vSwitch Interface name,bfd_status --format=csv 2>/dev/null |
        while IFS= read -r l; do printf '%s %s\n' \"\$EPOCHREALTIME\" \"\$l\"; done > $BASE/mon-c$i.txt"
    bg bash -c "OVS_RUNDIR=$(d $i) stdbuf -oL ovs-ofctl -O OpenFlow13 monitor bxint 128 2>&1 |
        while IFS= read -r l; do printf '%s %s\n' \"\$EPOCHREALTIME\" \"\$l\"; done > $BASE/ofmon-c$i.txt"
done
# traffic during the cut, 100 pps each: VM1 -> gateway (ff group) and VM1 -> VM$CUT
# (plain output to the per-peer port bxp$CUT)
bg ip netns exec bx-v1 ping -D -i 0.01 -W 1 10.0.0.$GW > "$BASE/ping-gw.txt" 2>&1
bg ip netns exec bx-v1 ping -D -i 0.01 -W 1 10.0.0.$CUT > "$BASE/ping-cut.txt" 2>&1
sleep 2
down_seen() { local i; for i in $(seq $N); do [ $i = $CUT ] && continue
    [ "$(bfd_field $i bxp$CUT forwarding)" = false ] || return 1; done; }
tx_pkts() { ofctl 1 dump-ports bxphy bxu1 | grep -o 'tx pkts=[0-9]*' | grep -o '[0-9]*'; }
tcut=$(nowms)
case $CUTMODE in
    switch)    ip -n bx-ul link set bxul$CUT down ;;      # "cable pulled" on the switch side
    veth-down) ip -n bx-c$CUT link set bxu$CUT down ;;    # inside the chassis
    delete)    ip -n bx-ul link del bxul$CUT ;;            # veth pair gone
esac
log "underlay of c$CUT cut ($CUTMODE)"
CHECK="Q2: every peer sees bxp$CUT forwarding=false"
ok wait_until 500 down_seen
log "   (polling with ovs-vsctl: all peers down after $(( $(nowms) - tcut )) ms)"
sleep 1
for i in $(seq $N); do [ $i = $CUT ] && continue
    log "c$i bxp$CUT: $(vsctl $i get Interface bxp$CUT bfd_status)"; done
ofctl 1 dump-ports-desc bxint | grep -A3 -E '\(bxp[0-9]+\)' | grep -E 'bxp|state' | sed 's/^/   c1 /' >&2
appctl 1 ofproto/trace bxint "in_port=1,icmp,dl_src=$(mac 1),dl_dst=$(mac $GW),nw_src=10.0.0.1,nw_dst=10.0.0.$GW" > "$BASE/trace-ff-down.txt" 2>&1
grep -E 'not live|using bucket|Datapath actions' "$BASE/trace-ff-down.txt" | sed 's/^ */   c1 trace VM1->gw: /' >&2
# output straight to the dead per-peer port: still encapsulated and sent?
appctl 1 ofproto/trace bxint "in_port=1,icmp,dl_src=$(mac 1),dl_dst=$(mac $CUT),nw_src=10.0.0.1,nw_dst=10.0.0.$CUT" > "$BASE/trace-dead-port.txt" 2>&1
grep -E 'Datapath actions' "$BASE/trace-dead-port.txt" | sed 's/^ */   c1 trace VM1->VM'$CUT' (output:20'$CUT', BFD down): /' >&2
a=$(tx_pkts); sleep 1; b=$(tx_pkts)
log "   c1 underlay bxu1 tx packets in 1 s while bxp$CUT is down: $((b-a)) (ping VM1->VM$CUT at 100 pps + BFD)"
ofctl 1 dump-group-stats bxint | sed 's/^/   c1 /' >&2

# restore
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
CHECK="Q2: BFD back up everywhere after the restore"
ok wait_until 1000 all_up
log "   (polling with ovs-vsctl: full mesh up again after $(( $(nowms) - trest )) ms)"
sleep 1
kill_bg; sleep 0.3

# ------------------------------------------------------------------ timings from the monitors
# ms from the cut to the first bfd_status row of bxp$CUT with forwarding=false
# and with state=down; from the restore to state=up / forwarding=true
echo "=== BFD min_rx=$MIN_RX min_tx=$MIN_TX mult=$MULT, cut=$CUTMODE of chassis $CUT: ms after cut / restore (ovsdb-client monitor) ==="
for i in $(seq $N); do
    for j in $(seq $N); do [ $i = $j ] && continue; [ $i != $CUT ] && [ $j != $CUT ] && continue
    awk -v tc="$tcut" -v tr="$trest" -v p="bxp$j" -v i="$i" '
        { t=$1*1000 }
        index($0, "," p ",") {
            if (t>tc && t<tr && fd=="" && $0 ~ /forwarding=""false/) fd=int(t-tc)
            if (t>tc && t<tr && sd=="" && $0 ~ /[ {]state=down/)    sd=int(t-tc)
            if (t>tr && up=="" && $0 ~ /forwarding=""true/)         up=int(t-tr)
        }
        END { printf "c%s %-5s forwarding=false +%s ms, state=down +%s ms | forwarding=true +%s ms after restore\n", i, p, fd, sd, up }
    ' "$BASE/mon-c$i.txt"
    done
done
echo "=== OpenFlow PORT_STATUS seen by a controller on c1 (ovs-ofctl monitor) ==="
awk -v tc="$tcut" -v tr="$trest" '{ t=$1*1000 } /PORT_STATUS/ { ps=int(t - (t>tr?tr:tc)) " ms after " (t>tr?"restore":"cut"); pn=$6 } /state:/ && ps { print "   +" ps ":", pn, $2, $3; ps="" }' "$BASE/ofmon-c1.txt"
echo "=== pings from VM1 at 100 pps during the cut (first lost / first answered again) ==="
for f in gw cut; do
    awk -v tc="$tcut" -v tr="$trest" -v f="$f" '
        /icmp_seq/ { t=substr($1,2,length($1)-2)*1000; split($0,a,"icmp_seq="); s=a[2]+0
                     if (n && s-ps-1 > gap) { gap=s-ps-1; g0=pt; g1=t }
                     n++; ps=s; pt=t }
        END { if (!gap) { printf "   VM1->%s: no reply missing\n", (f=="gw"?"gateway (ff group)":"VM'$CUT'"); exit }
              printf "   VM1->%s: largest hole %d replies missing; last reply %+d ms from cut, next reply %+d ms from cut = %+d ms from restore\n", (f=="gw"?"gateway (ff group)":"VM'$CUT' (output:20'$CUT')"), gap, g0-tc, g1-tc, g1-tr }
' "$BASE/ping-$f.txt"
done
echo "=== pass=$PASS fail=$FAIL ==="
[ "$FAIL" = 0 ]
