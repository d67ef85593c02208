"""The audit hash chain, shared by everyone who checks it: the coordinator that writes it,
the operator's CLI and every site's agent that verify it from outside."""
