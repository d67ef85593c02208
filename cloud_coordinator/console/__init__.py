"""The web console: a server-rendered front end over the admin API (Starlette, Jinja2,
htmx and uPlot shipped in the package), served by ``cloud-coordinator serve
--console-listen HOST:PORT`` over HTTPS with the coordinator's certificate.

It is a client of the same admin API as the CLI, with a certificate of its own that may act
for an account only with a session the coordinator opened at that account's login (see
``cloud_coordinator.accounts.service``). It has no path to the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink import errors

if TYPE_CHECKING:
    from ..app import Coordinator
    from .server import ConsoleServer


def start(coordinator: Coordinator) -> ConsoleServer:
    """Serve the console at ``coordinator.config.console.address`` (the coordinator is running)."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise errors.FailedPrecondition("the console needs its web stack: pip install 'silolink[console]'") from None
    from ..accounts.console_credentials import issue_console_credentials
    from ..operator_client import OperatorClient, OperatorCredentials
    from .server import ConsoleServer
    from .web import Console

    creds = issue_console_credentials(coordinator.ca, coordinator.sites)
    base = OperatorClient(OperatorCredentials(coordinator.address, creds))
    console = Console(
        base,
        refresh_s=coordinator.config.console.refresh_s,
        stale_after_s=coordinator.config.stale_after_s,
        session_max_s=coordinator.config.accounts.session_max_s,
    )
    layout = coordinator.layout
    server = ConsoleServer(
        console.build(), coordinator.config.console.address, str(layout.server_cert), str(layout.server_key)
    )
    server.client = base  # closed with the server
    return server.start()
