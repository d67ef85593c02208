"""The floor for ``bench.fleet``: a bare grpc.aio server holding control streams.

    python -m bench.fleet_floor READY_FILE CA_PEM SERVER_CERT SERVER_KEY HEARTBEAT_S

It serves the real ``ControlService/Connect`` over the same mutual TLS as the coordinator
(its certificate and CA), answers each Hello with a Welcome and reads heartbeats, noting
each one's delay from the agent's send (its ``sent_at``) to the read: everything a stream
costs in gRPC and TLS, none of silolink's work. Delays are counted in the coordinator's
own histogram buckets, so both are read the same way. It writes its port to READY_FILE and
answers lines on stdin: ``report`` prints one JSON line with the cumulative bucket counts
(``le`` -> count, as the coordinator's /metrics has them) and the streams open.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sys
import time
from pathlib import Path

import grpc

from cloud_coordinator.app import HEARTBEAT_DELAY_BUCKETS
from silolink.config import CoordinatorLimitsConfig
from silolink.gen.control.v1 import control_pb2, control_pb2_grpc
from silolink.rpc.aio_server import MAX_STREAMS_PER_CONNECTION, pending_call_options

EDGES = [*HEARTBEAT_DELAY_BUCKETS, float("inf")]
CONTROL_STREAMS = CoordinatorLimitsConfig().control_streams


class Floor(control_pb2_grpc.ControlServiceServicer):
    def __init__(self, heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self.open = 0
        self.counts = [0] * len(EDGES)

    async def Connect(self, request_iterator, context):
        hello = await anext(request_iterator, None)
        if hello is None:
            return
        self.open += 1
        try:
            yield control_pb2.ConnectResponse(welcome=control_pb2.Welcome(heartbeat_interval_s=self.heartbeat_s))
            async for message in request_iterator:
                if message.HasField("heartbeat"):
                    sent = message.heartbeat.sent_at
                    delay = time.time() - (sent.seconds + sent.nanos / 1e9)
                    self.counts[bisect.bisect_left(EDGES, delay)] += 1
        finally:
            self.open -= 1


async def main(ready: Path, ca: bytes, cert: bytes, key: bytes, heartbeat_s: float) -> None:
    floor = Floor(heartbeat_s)
    # The transport options the coordinator's server uses, nothing else of silolink.
    options = [("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION), *pending_call_options(CONTROL_STREAMS)]
    server = grpc.aio.server(options=options)
    control_pb2_grpc.add_ControlServiceServicer_to_server(floor, server)
    credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    ready.write_text(str(port))
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "report":
            cumulative, total = {}, 0
            for edge, n in zip(EDGES, floor.counts, strict=True):
                total += n
                cumulative[str(edge)] = total
            print(json.dumps({"open": floor.open, "buckets": cumulative}), flush=True)
        if not line or command == "stop":
            await server.stop(0)
            return


if __name__ == "__main__":
    ready_file, ca_file, cert_file, key_file, heartbeat = sys.argv[1:6]
    asyncio.run(
        main(
            Path(ready_file),
            Path(ca_file).read_bytes(),
            Path(cert_file).read_bytes(),
            Path(key_file).read_bytes(),
            float(heartbeat),
        )
    )
