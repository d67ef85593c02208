"""silolink: learn from hospital and factory data without moving it.

The shared package holds what both the edge agent and the cloud coordinator use: the
generated API (``silolink.gen``), identity and PKI, the error catalog, configuration and
the gRPC plumbing (``silolink.rpc``).
"""

__version__ = "0.1.0"
