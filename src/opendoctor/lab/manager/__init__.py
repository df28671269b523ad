"""The lab manager: the lab's VIM API (hosts, servers, fault injection, the change feed),
the records it keeps, the host processes it controls and the load balancer.

Run it as `python -m opendoctor.lab.manager --state-dir DIR [spec options]`; clients
(`lab.client`, `lab.runner`) talk to it over HTTP, never by importing it.
"""
