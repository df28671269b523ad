"""The processes of a lab cloud: a compute host (`python -m opendoctor.lab.procs.host`),
the VMs it runs (`python -m opendoctor.lab.procs.vm`) with their guest heartbeat agents,
and the events a host reports.

Kept light on purpose: every host and VM process imports this package at start.
"""
