#!/bin/bash
# bx-cpu.sh - rough CPU cost of BFD in ovs-vswitchd (userspace datapath).
# N chassis (netns bx-c<i>), full mesh of per-peer geneve ports (N-1 per chassis);
# CPU of all N ovs-vswitchd over $SECS s: BFD off, BFD 100 ms, BFD 1000 ms.
set -u
N=${N:-10}; SECS=${SECS:-10}
BASE=/tmp/bx-cpu; SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
d() { echo "$BASE/c$1"; }
vsctl() { local i=$1; shift; ovs-vsctl --db="unix:$(d $i)/db.sock" --timeout=30 "$@"; }
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }
cleanup() {
    local pf pid ns
    for pf in "$BASE"/c*/ovs-vswitchd.pid "$BASE"/c*/ovsdb-server.pid; do
        [ -f "$pf" ] || continue; pid=$(cat "$pf"); alive "$pid" || continue
        grep -q "$BASE" /proc/$pid/cmdline 2>/dev/null && kill "$pid"; done
    sleep 0.5
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^bx-(k[0-9]+|kul)$'); do ip netns del "$ns"; done
    rm -rf "$BASE"
}
trap cleanup EXIT; trap 'exit 130' INT TERM
cleanup; mkdir -p "$BASE"
ip netns add bx-kul; ip -n bx-kul link add bxkbr type bridge; ip -n bx-kul link set bxkbr up
for i in $(seq $N); do
    dd=$(d $i); mkdir -p $dd; ns=bx-k$i
    ip netns add $ns; ip -n $ns link set lo up
    ip link add bxk$i netns $ns type veth peer name bxkul$i netns bx-kul
    ip -n bx-kul link set bxkul$i master bxkbr up; ip -n $ns link set bxk$i up
    ovsdb-tool create $dd/conf.db $SCHEMA
    ip netns exec $ns env OVS_RUNDIR=$dd OVS_LOGDIR=$dd OVS_DBDIR=$dd ovsdb-server $dd/conf.db --remote=punix:$dd/db.sock \
        --pidfile=$dd/ovsdb-server.pid --unixctl=$dd/ovsdb-server.ctl --log-file=$dd/ovsdb-server.log -vconsole:off --detach --no-chdir
    vsctl $i --no-wait init
    ip netns exec $ns env OVS_RUNDIR=$dd OVS_LOGDIR=$dd OVS_DBDIR=$dd ovs-vswitchd unix:$dd/db.sock \
        --pidfile=$dd/ovs-vswitchd.pid --unixctl=$dd/ovs-vswitchd.ctl --log-file=$dd/ovs-vswitchd.log -vconsole:off --detach --no-chdir
    vsctl $i -- add-br bxphy -- set bridge bxphy datapath_type=netdev fail_mode=secure -- add-port bxphy bxk$i \
             -- add-br bxint -- set bridge bxint datapath_type=netdev fail_mode=secure
    ip -n $ns addr add 10.98.$((i/250)).$((i%250+1))/16 dev bxphy; ip -n $ns link set bxphy up
    OVS_RUNDIR=$dd ovs-ofctl add-flow bxphy "priority=0,actions=NORMAL"
done
for i in $(seq $N); do
    args=()
    for j in $(seq $N); do [ $i = $j ] && continue
        args+=(-- add-port bxint bxp$j -- set Interface bxp$j type=geneve options:remote_ip=10.98.$((j/250)).$((j%250+1)) options:key=flow); done
    vsctl $i "${args[@]}"
done
ticks() { local s=0 i; for i in $(seq $N); do s=$((s + $(awk '{print $14+$15}' /proc/$(cat $(d $i)/ovs-vswitchd.pid)/stat))); done; echo $s; }
setbfd() { local i j; for i in $(seq $N); do args=(); for j in $(seq $N); do [ $i = $j ] && continue
    args+=(-- set Interface bxp$j "$@"); done; vsctl $i "${args[@]}"; done; }
count_up() { local i c=0; for i in $(seq $N); do c=$((c + $(vsctl $i --columns=bfd_status list Interface | grep -c 'state=up'))); done; echo $c; }
measure() {
    local label=$1 a b hz; hz=$(getconf CLK_TCK)
    sleep 3; a=$(ticks); sleep $SECS; b=$(ticks)
    awk -v l="$label" -v t=$((b-a)) -v hz=$hz -v s=$SECS -v n=$N 'BEGIN{printf "%-28s all %d vswitchd: %.1f%% of one CPU (%.2f%% per vswitchd, %d sessions each)\n", l, n, 100*t/hz/s, 100*t/hz/s/n, n-1}'
}
echo "N=$N chassis, $((N*(N-1))) BFD sessions; load: $(cut -d' ' -f1-3 /proc/loadavg)"
measure "BFD off"
setbfd bfd:enable=true bfd:min_rx=100 bfd:min_tx=100 bfd:mult=3
sleep 4; echo "sessions up: $(count_up)/$((N*(N-1)))"
measure "BFD 100 ms"
setbfd bfd:enable=true bfd:min_rx=1000 bfd:min_tx=1000 bfd:mult=3
sleep 4; echo "sessions up: $(count_up)/$((N*(N-1)))"
measure "BFD 1000 ms"
setbfd bfd:enable=false
measure "BFD off again"
