"""The shared kernel: the plug-in protocols every block programs against (`ports`).

It imports nothing of opendoctor's but plain records, so any block may depend on it.
"""
