# bfd-lab.sh - the lab shared by bfd-recipe.sh and bfd-monitor-recipe.sh; not run on
# its own. A recipe sets three variables, then sources this file:
#   BASE=/tmp/bx-...   its state directory (pidfiles, sockets, logs, monitor output)
#   PEER=bxp|bxm       name prefix of the per-peer BFD ports (PEER<j>, ofport 200+<j>)
#   PEER_KEY=flow|0    their options:key
#   source "$(dirname "$0")/bfd-lab.sh"
# and calls build_lab: N (default 3) chassis, each its own netns (bx-c<i>) with its
# own ovsdb-server + ovs-vswitchd (userspace datapath), connected by an underlay:
# netns bx-ul with a Linux bridge bxulbr and one veth per chassis (bxu<i> in the
# chassis <-> bxul<i> in bx-ul). Per chassis:
#   bxphy  : br-phy, port bxu<i>, underlay IP 10.99.0.<i>/24 on its internal port
#   bxint  : br-int with
#              ofport 1        bxv<i>-p  veth to "VM" netns bx-v<i> (10.0.0.<i>/24, MAC 02:..:<i>)
#              ofport 100      bxtun     geneve remote_ip=flow key=flow (as Wyvern today)
#              ofport 200+<j>  PEER<j>   geneve remote_ip=10.99.0.<j> key=PEER_KEY, BFD on
#                                        (added later by add_peer_ports)
# Also here: pass/fail bookkeeping (CHECK=...; ok CMD...; finish), background
# monitors of bfd_status and OpenFlow port status, cutting/restoring the underlay of
# chassis CUT, and the timing reports. Cleanup (EXIT trap) kills only daemons whose
# pidfile and command line are under BASE, monitors by process group, then deletes
# the bx-* netns and BASE.
# env: N=3 MIN_RX=100 MIN_TX=100 MULT=3 DECAY=0 CUT=2 CUTMODE=switch|veth-down|delete
#      KEEP=1 (leave it running; CLEAN_ONLY=1 with the same recipe tears it down)
# (SC2034: variables such as VNI are set here for the recipes)
# shellcheck shell=bash disable=SC2034
if [ "${BASH_SOURCE[0]}" = "$0" ]; then echo "bfd-lab.sh: source it from a recipe" >&2; exit 2; fi
: "${BASE:?set BASE before sourcing bfd-lab.sh}" "${PEER:?set PEER}" "${PEER_KEY:?set PEER_KEY}"
case $BASE in /tmp/bx-*) ;; *) echo "bfd-lab.sh: BASE must be /tmp/bx-*" >&2; exit 2;; esac
set -u
N=${N:-3}; MIN_RX=${MIN_RX:-100}; MIN_TX=${MIN_TX:-100}; MULT=${MULT:-3}
DECAY=${DECAY:-0}; CUT=${CUT:-2}; CUTMODE=${CUTMODE:-switch}
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
VNI=0x64
PASS=0; FAIL=0; CHECK=
log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
ok()  { if "$@"; then PASS=$((PASS+1)); log "PASS $CHECK"; else FAIL=$((FAIL+1)); log "FAIL $CHECK"; fi; }
finish() { echo "=== pass=$PASS fail=$FAIL ==="; [ "$FAIL" = 0 ]; }
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
kill_bg() {
    local p
    if [ -f "$BASE/bg.pids" ]; then while read -r p; do kill -- -"$p" 2>/dev/null; done < "$BASE/bg.pids"; fi
    rm -f "$BASE/bg.pids"
}
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

# ------------------------------------------------------------------ helpers
d()      { echo "$BASE/c$1"; }
vsctl()  { local i=$1; shift; ovs-vsctl --db="unix:$(d "$i")/db.sock" --timeout=20 "$@"; }
ofctl()  { local i=$1; shift; OVS_RUNDIR=$(d "$i") ovs-ofctl -O OpenFlow13 "$@"; }
appctl() { local i=$1; shift; ovs-appctl -t "$(d "$i")/ovs-vswitchd.ctl" "$@"; }
newns()  { ip netns add "$1"; ip -n "$1" link set lo up
           ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; }
ovs_start() {
    local i=$1 dd; dd=$(d "$i"); mkdir -p "$dd"
    ovsdb-tool create "$dd/conf.db" "$SCHEMA"
    ip netns exec "bx-c$i" env OVS_RUNDIR="$dd" OVS_LOGDIR="$dd" OVS_DBDIR="$dd" OVS_SYSCONFDIR="$dd" \
        ovsdb-server "$dd/conf.db" --remote="punix:$dd/db.sock" \
        --pidfile="$dd/ovsdb-server.pid" --unixctl="$dd/ovsdb-server.ctl" \
        --log-file="$dd/ovsdb-server.log" -vconsole:off --detach --no-chdir
    vsctl "$i" --no-wait init -- set Open_vSwitch . "external_ids:system-id=bx-c$i"
    ip netns exec "bx-c$i" env OVS_RUNDIR="$dd" OVS_LOGDIR="$dd" OVS_DBDIR="$dd" OVS_SYSCONFDIR="$dd" \
        ovs-vswitchd "unix:$dd/db.sock" --pidfile="$dd/ovs-vswitchd.pid" \
        --unixctl="$dd/ovs-vswitchd.ctl" --log-file="$dd/ovs-vswitchd.log" \
        -vconsole:off --detach --no-chdir
}
add_br() { vsctl "$1" -- add-br "$2" -- set bridge "$2" datapath_type=netdev \
               protocols=OpenFlow10,OpenFlow13,OpenFlow15 fail_mode=secure; }
# check_tnl_key=true: only tun_id 0 BFD packets count (as OVN sets it): a VM cannot
# feed the session with UDP/3784 packets inside a tenant VNI
bfd_opts() { echo "bfd:enable=true bfd:min_rx=$MIN_RX bfd:min_tx=$MIN_TX bfd:mult=$MULT bfd:decay_min_rx=$DECAY bfd:check_tnl_key=true"; }
# bfd_field I PORT KEY : one key of bfd_status (quotes stripped)
bfd_field() { vsctl "$1" get Interface "$2" "bfd_status:$3" 2>/dev/null | tr -d '"'; }
all_up() {   # every per-peer port of every chassis forwarding
    local i j
    for i in $(seq "$N"); do for j in $(seq "$N"); do [ "$i" = "$j" ] && continue
        [ "$(bfd_field "$i" "$PEER$j" forwarding)" = true ] || return 1; done; done
}
down_seen() {   # every chassis but CUT sees its port to CUT not forwarding
    local i; for i in $(seq "$N"); do [ "$i" = "$CUT" ] && continue
        [ "$(bfd_field "$i" "$PEER$CUT" forwarding)" = false ] || return 1; done
}
wait_until() { local n=$1; shift; for _ in $(seq "$n"); do "$@" && return 0; sleep 0.02; done; return 1; }
ping_ok() { ip netns exec "bx-v$1" ping -c 3 -i 0.2 -W 2 "10.0.0.$2" >/dev/null 2>&1; }

# ------------------------------------------------------------------ build
# build_lab : EXIT trap; CLEAN_ONLY=1 stops here (after the trap cleaned up);
# removes what an earlier run left, then builds underlay, chassis and VMs
build_lab() {
    local i
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    if [ "${CLEAN_ONLY:-0}" = 1 ]; then exit 0; fi
    KEEP=0 cleanup; mkdir -p "$BASE"
    log "building $N chassis (BFD min_rx=$MIN_RX min_tx=$MIN_TX mult=$MULT decay_min_rx=$DECAY)"
    newns bx-ul
    ip -n bx-ul link add bxulbr type bridge
    ip -n bx-ul link set bxulbr up
    for i in $(seq "$N"); do
        newns "bx-c$i"; newns "bx-v$i"
        ip link add "bxu$i" netns "bx-c$i" type veth peer name "bxul$i" netns bx-ul
        ip -n bx-ul link set "bxul$i" master bxulbr up
        ip -n "bx-c$i" link set "bxu$i" up
        ovs_start "$i"
        add_br "$i" bxphy; add_br "$i" bxint
        vsctl "$i" add-port bxphy "bxu$i"
        ip -n "bx-c$i" addr add "$(ulip "$i")/24" dev bxphy
        ip -n "bx-c$i" link set bxphy up
        ofctl "$i" add-flow bxphy "priority=0,actions=NORMAL"
        # VM
        ip link add "bxv$i-p" netns "bx-c$i" type veth peer name "bxv$i-e" netns "bx-v$i"
        ip -n "bx-v$i" link set "bxv$i-e" address "$(mac "$i")"
        ip -n "bx-v$i" addr add "10.0.0.$i/24" dev "bxv$i-e"
        ip -n "bx-v$i" link set "bxv$i-e" up; ip -n "bx-c$i" link set "bxv$i-p" up
        ip netns exec "bx-v$i" ethtool -K "bxv$i-e" tx off >/dev/null 2>&1
        vsctl "$i" add-port bxint "bxv$i-p" -- set Interface "bxv$i-p" ofport_request=1 \
            -- add-port bxint bxtun -- set Interface bxtun type=geneve \
               options:remote_ip=flow options:key=flow ofport_request=100
    done
}

# ------------------------------------------------------------------ flows on bxint
# arp_flow J : table 10 answers ARP for 10.0.0.J with MAC 02:..:J
arp_flow() {
    echo "table=10,priority=100,arp,arp_op=1,arp_tpa=10.0.0.$1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:$(mac "$1")->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:$(mac "$1")->arp_sha,set_field:10.0.0.$1->arp_spa,IN_PORT"
}
# install_flows FN : replaces bxint's flows on every chassis I with the common ones
# (table 0: accept the VM and tun_id=VNI on the flow-based port, drop the rest;
# table 10: ARP responder for all VMs; table 20: local VM, drop the rest) plus
# whatever "FN I" prints (the recipe's per-peer ingress and egress)
install_flows() {
    local fn=$1 i j
    for i in $(seq "$N"); do
        {
        echo "table=0,priority=100,in_port=1 actions=goto_table:10"
        echo "table=0,priority=100,in_port=100,tun_id=$VNI actions=goto_table:10"
        echo "table=0,priority=0 actions=drop"
        for j in $(seq "$N"); do arp_flow "$j"; done
        echo "table=10,priority=0 actions=goto_table:20"
        echo "table=20,priority=100,dl_dst=$(mac "$i") actions=output:1"
        echo "table=20,priority=0 actions=drop"
        "$fn" "$i"
        } | ofctl "$i" replace-flows bxint - || { log "flows failed on c$i"; exit 1; }
    done
}

# ------------------------------------------------------------------ per-peer BFD ports
# add_peer_ports CHECK : on every chassis one port PEER<j> per peer j (geneve,
# remote_ip=10.99.0.<j>, key=PEER_KEY, ofport 200+j, BFD on); CHECK = the full mesh
# comes up; logs how long that took and every session's bfd_status
add_peer_ports() {
    local i j t0 args bfd
    read -ra bfd <<< "$(bfd_opts)"
    t0=$(nowms)
    for i in $(seq "$N"); do
        args=()
        for j in $(seq "$N"); do [ "$i" = "$j" ] && continue
            args+=(-- add-port bxint "$PEER$j" -- set Interface "$PEER$j" type=geneve
                   "options:remote_ip=$(ulip "$j")" "options:key=$PEER_KEY" "ofport_request=$((200+j))" "${bfd[@]}")
        done
        vsctl "$i" "${args[@]}"
    done
    CHECK=$1
    ok wait_until 500 all_up
    log "BFD full mesh up $(( $(nowms) - t0 )) ms after the $PEER ports were added"
    for i in $(seq "$N"); do for j in $(seq "$N"); do [ "$i" = "$j" ] && continue
        log "c$i $PEER$j: $(vsctl "$i" get Interface "$PEER$j" bfd_status)"; done; done
}

# ------------------------------------------------------------------ monitors, cut, restore
# timestamped monitors on every chassis: bfd_status rows ($BASE/mon-c<i>.txt) and
# OpenFlow port status ($BASE/ofmon-c<i>.txt). A connection to the bridge's .mgmt
# socket is a "service" connection: it gets PORT_STATUS only after setting a nonzero
# miss_send_len - the "128" below
start_monitors() {
    local i
    for i in $(seq "$N"); do
        bg bash -c "ovsdb-client monitor unix:$(d "$i")/db.sock Open_vSwitch Interface name,bfd_status --format=csv 2>/dev/null |
            while IFS= read -r l; do printf '%s %s\n' \"\$EPOCHREALTIME\" \"\$l\"; done > $BASE/mon-c$i.txt"
        bg bash -c "OVS_RUNDIR=$(d "$i") stdbuf -oL ovs-ofctl -O OpenFlow13 monitor bxint 128 2>&1 |
            while IFS= read -r l; do printf '%s %s\n' \"\$EPOCHREALTIME\" \"\$l\"; done > $BASE/ofmon-c$i.txt"
    done
}
stop_monitors() { sleep 1; kill_bg; sleep 0.3; }
# cut_underlay CHECK : cuts chassis CUT's underlay as CUTMODE says (switch: "cable
# pulled" on the switch side; veth-down: inside the chassis; delete: veth pair gone),
# sets tcut; CHECK = every peer sees its port to CUT forwarding=false; then logs
# their bfd_status
cut_underlay() {
    local i
    tcut=$(nowms)
    case $CUTMODE in
        switch)    ip -n bx-ul link set "bxul$CUT" down ;;
        veth-down) ip -n "bx-c$CUT" link set "bxu$CUT" down ;;
        delete)    ip -n bx-ul link del "bxul$CUT" ;;
        *)         log "unknown CUTMODE=$CUTMODE"; exit 2 ;;
    esac
    log "underlay of c$CUT cut ($CUTMODE)"
    CHECK=$1
    ok wait_until 500 down_seen
    log "   (polling with ovs-vsctl: all peers down after $(( $(nowms) - tcut )) ms)"
    sleep 1
    for i in $(seq "$N"); do [ "$i" = "$CUT" ] && continue
        log "c$i $PEER$CUT: $(vsctl "$i" get Interface "$PEER$CUT" bfd_status)"; done
}
# restore_underlay CHECK : undoes cut_underlay, sets trest; CHECK = full mesh up again
restore_underlay() {
    trest=$(nowms)
    case $CUTMODE in
        switch)    ip -n bx-ul link set "bxul$CUT" up ;;
        veth-down) ip -n "bx-c$CUT" link set "bxu$CUT" up ;;
        delete)    ip link add "bxu${CUT}n" netns "bx-c$CUT" type veth peer name "bxul$CUT" netns bx-ul
                   ip -n bx-ul link set "bxul$CUT" master bxulbr up
                   vsctl "$CUT" del-port bxphy "bxu$CUT" -- add-port bxphy "bxu${CUT}n"
                   ip -n "bx-c$CUT" link set "bxu${CUT}n" up ;;
    esac
    log "underlay of c$CUT restored"
    CHECK=$1
    ok wait_until 1000 all_up
    log "   (polling with ovs-vsctl: full mesh up again after $(( $(nowms) - trest )) ms)"
}

# ------------------------------------------------------------------ reports (after stop_monitors)
# ms from the cut to the first bfd_status row of a port to/from CUT with
# forwarding=false and with state=down; from the restore to forwarding=true
report_bfd_times() {
    local i j
    echo "=== BFD $PEER ports (key=$PEER_KEY), min_rx=$MIN_RX min_tx=$MIN_TX mult=$MULT, cut=$CUTMODE of chassis $CUT: ms after cut / restore (ovsdb-client monitor) ==="
    for i in $(seq "$N"); do
        for j in $(seq "$N"); do [ "$i" = "$j" ] && continue; [ "$i" != "$CUT" ] && [ "$j" != "$CUT" ] && continue
        awk -v tc="$tcut" -v tr="$trest" -v p="$PEER$j" -v i="$i" '
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
}
report_port_status() {
    echo "=== OpenFlow PORT_STATUS seen by a controller on c1 (ovs-ofctl monitor bxint 128) ==="
    awk -v tc="$tcut" -v tr="$trest" '{ t=$1*1000 } /PORT_STATUS/ { ps=int(t - (t>tr?tr:tc)) " ms after " (t>tr?"restore":"cut"); pn=$6 } /state:/ && ps { print "   +" ps ":", pn, $2, $3; ps="" }' "$BASE/ofmon-c1.txt"
}
