"""The console's HTTPS server: uvicorn on a thread of its own inside the coordinator's
process, with the coordinator's server certificate (the one agents already trust)."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from silolink import errors
from silolink.polling import wait_for
from silolink.rpc.channels import split_address

log = logging.getLogger(__name__)


class ConsoleServer:
    def __init__(self, app, listen: str, certfile: str, keyfile: str) -> None:
        host, port = split_address(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as e:
            self._socket.close()
            raise errors.Unavailable(f"cannot serve the console on {listen}: {e.strerror or e}") from None
        self._socket.listen(128)
        bound = self._socket.getsockname()[1]
        self.address = f"{host}:{bound}" if ":" not in host else f"[{host}]:{bound}"
        config = uvicorn.Config(
            app,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            log_level="warning",
            http="h11",
            ws="none",  # no websockets: live values come by polling
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="console", daemon=True
        )

    def start(self) -> ConsoleServer:
        self._thread.start()
        wait_for(lambda: self._server.started or not self._thread.is_alive(), 15, "the console to start")
        if not self._server.started:
            raise errors.Unavailable(f"the console did not start on {self.address}; see the log")
        log.info("console serving https://%s", self.address)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
