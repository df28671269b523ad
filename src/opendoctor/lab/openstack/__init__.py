"""A real OpenStack on this machine for the tests and for trying opendoctor against one:
Keystone, Placement, Glance, Neutron (API only) and Nova (API, conductor, scheduler, one
fake-driver nova-compute per lab host), in a virtualenv of their own, on the machine's
MariaDB and RabbitMQ (`opendoctor openstack-lab up|down|status`, docs/openstack.md)."""
