"""Recovery: what happens to the servers of a failed host once their owners are told
(`evacuation`: evacuate a few at a time, check each serves again)."""
