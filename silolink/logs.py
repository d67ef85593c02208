"""Logging set-up, called only by entry points (CLIs, daemons, the demo).

Modules use ``logging.getLogger(__name__)`` and never attach handlers. Never log
payloads, patient or process data, tokens or keys: log names, sizes, digests and codes.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str = "INFO", stream=None) -> None:
    """Send records at ``level`` and above to ``stream`` (stderr) in one plain format."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # gRPC's C core logs handshake failures itself; keep them out of our format.
    logging.getLogger("grpc").setLevel(logging.WARNING)
