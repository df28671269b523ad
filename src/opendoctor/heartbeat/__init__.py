"""High availability: the guest heartbeat protocol, its guest agent and host-side supervisor.

Modules here import only the standard library: the lab's host and VM processes load
them and must start fast.
"""
