"""openstacksdk drives a Wyvern server (the README says it does): argv[1] is the endpoint.
Creates a network, subnet, port, router with an interface and a security group rule, lists
them, and deletes them again, printing what the test checks."""
import sys, openstack
conn = openstack.connection.Connection(auth_type="none", auth={"endpoint": sys.argv[1]}, network_endpoint_override=sys.argv[1])
net = conn.network.create_network(name="sdk-net")
sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.50.0.0/24", name="sdk-sub")
port = conn.network.create_port(network_id=net.id, name="sdk-port")
router = conn.network.create_router(name="sdk-router")
conn.network.add_interface_to_router(router, subnet_id=sub.id)
sg = conn.network.create_security_group(name="sdk-sg")
conn.network.create_security_group_rule(security_group_id=sg.id, direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22)
print("port", port.fixed_ips[0]["ip_address"], port.mac_address)
print("nets", sorted(n.name for n in conn.network.networks()))
print("router ports", sorted(p.device_owner for p in conn.network.ports(device_id=router.id)))
conn.network.remove_interface_from_router(router, subnet_id=sub.id)
conn.network.delete_router(router)
conn.network.delete_port(port)
conn.network.delete_subnet(sub)
conn.network.delete_network(net)
print("after", sorted(n.name for n in conn.network.networks()))
