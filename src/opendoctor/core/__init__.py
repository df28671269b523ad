"""The shared kernel: plain records (`model`: events, hosts, servers, notification
events; `faults`: a fault and its timeline), errors, identity, settings, and `ports`, the
plug-in protocols every block programs against.

It imports nothing of opendoctor's outside itself, so any block may depend on it.
"""
