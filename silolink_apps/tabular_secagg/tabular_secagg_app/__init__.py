"""tabular-secagg: the built-in tabular app under Flower's SecAgg+ (legacy client API)."""
