"""Flower apps as both daemons handle them: bundles (``fab``) and what they declare."""
