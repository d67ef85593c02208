"""The edge agent: the daemon a hospital or factory runs next to its data.

It dials out to the coordinator (``control``), serves the site's own systems on a local
API (``local_api``), and keeps its identity in its data directory (``identity``).
"""
