#!/usr/bin/env bash
# Starts the reference Neutron (the venv built by ../shared/tools/reference-neutron/run.sh) so that the
# X-User-Id / X-Project-Id / X-Roles request headers become the request context, the way Keystone's
# auth_token middleware would set them. The stock run.sh uses auth_strategy=noauth, where every request is
# admin of "fake_project_id" and those headers are ignored, so non-admin behaviour cannot be recorded there.
# Here the keystone pipeline runs without its authtoken filter; nothing else differs from run.sh.
#
#   run-reference.sh [PORT]     default 19697; state under ${REFNEUTRON_HDR_DIR:-/tmp/reference-neutron-hdr}
#   stop:  kill "$(cat /tmp/reference-neutron-hdr/pid)"
set -euo pipefail
PORT="${1:-19697}"
DIR="${REFNEUTRON_HDR_DIR:-/tmp/reference-neutron-hdr}"
VENV="${REFNEUTRON_VENV:-${REFNEUTRON_DIR:-/tmp/reference-neutron}/venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "no reference venv at $VENV: run ../shared/tools/reference-neutron/run.sh once first" >&2
  exit 1
fi
mkdir -p "$DIR/state" "$DIR/lock"
sed -e 's/^\(keystone = .*\) authtoken /\1 /' "$VENV/etc/neutron/api-paste.ini" >"$DIR/api-paste.ini"
cat >"$DIR/neutron.conf" <<CONF
[DEFAULT]
core_plugin = ml2
service_plugins = router,trunk,networking_sfc.services.flowclassifier.plugin.FlowClassifierPlugin,networking_sfc.services.sfc.plugin.SfcPlugin
auth_strategy = keystone
transport_url = fake:/
api_paste_config = $DIR/api-paste.ini
state_path = $DIR/state
rpc_workers = 0
api_workers = 1
[database]
connection = sqlite:///$DIR/neutron.db
[ml2]
type_drivers = flat,vlan,vxlan,local
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security,tag_ports_during_bulk_creation
[ml2_type_vxlan]
vni_ranges = 1:1000
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199
[oslo_concurrency]
lock_path = $DIR/lock
[sfc]
drivers = dummy
[flowclassifier]
drivers = dummy
CONF
rm -f "$DIR/neutron.db"
"$VENV/bin/python" - "$DIR/neutron.db" <<'PY'
import sys
import sqlalchemy as sa
from neutron.db.migration.models import head  # noqa: F401  (imports every Neutron model)
import networking_sfc.db.sfc_db, networking_sfc.db.flowclassifier_db  # noqa: F401,E401
from neutron_lib.db import model_base
model_base.BASEV2.metadata.create_all(sa.create_engine("sqlite:///" + sys.argv[1]))
PY
"$VENV/bin/python" - "$DIR/neutron.conf" "$PORT" >"$DIR/server.log" 2>&1 <<'PY' &
import os, sys
conf, port = sys.argv[1], int(sys.argv[2])
os.environ["OS_NEUTRON_CONFIG_FILES"] = conf
sys.argv = ["neutron-api", "--config-file", conf]
from neutron.wsgi.api import application
from wsgiref.simple_server import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
make_server("127.0.0.1", port, application, handler_class=Quiet).serve_forever()
PY
echo $! >"$DIR/pid"
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$PORT/" >/dev/null 2>&1; then
    echo "reference Neutron (header context) on http://127.0.0.1:$PORT (pid $(cat "$DIR/pid"))"; exit 0
  fi
  sleep 0.5
done
echo "reference Neutron did not start; see $DIR/server.log" >&2; exit 1
