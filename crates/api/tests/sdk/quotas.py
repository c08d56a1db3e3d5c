"""openstacksdk reads and sets a project's network quota on a Wyvern server (argv[1]) with the calls
`openstack quota show/set --network` make, and hits the limit; prints what the test checks."""
import sys, openstack
conn = openstack.connection.Connection(auth_type="none", auth={"endpoint": sys.argv[1]}, network_endpoint_override=sys.argv[1])
net = conn.network
print("default", net.get_quota_default("sdk-project").networks)
net.update_quota("sdk-project", networks=2, ports=-1)
quota = net.get_quota("sdk-project")
print("limits", quota.networks, quota.ports, quota.routers)
print("listed", sorted(q.project_id for q in net.quotas()))
for name in ["a", "b", "c"]:
    try:
        net.create_network(name=name, project_id="sdk-project")
    except openstack.exceptions.ConflictException as e:
        print("refused", name, e.details)
details = net.get_quota("sdk-project", details=True)
print("used", details.networks["used"], "of", details.networks["limit"])
net.delete_quota("sdk-project")
print("after", net.get_quota("sdk-project").networks)
