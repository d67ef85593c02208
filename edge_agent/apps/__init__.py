"""Flower apps at the site: bundles the site installed or approved, and the data helper
their ClientApps use (``edge_agent.apps.data``).

The apps themselves run through ``edge_agent.training`` (one worker process per job); the
CLI (``edge-agent apps``) installs, approves, lists and removes them in agent.db, so this
capability needs nothing of the running daemon.
"""
