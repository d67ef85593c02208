"""The audit log: an append-only, hash-chained record of every security-relevant action,
each entry signed by the coordinator's audit key."""
