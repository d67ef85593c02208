"""A Flower ``Grid`` over silolink: messages travel in the sites' mTLS control streams.

Runs in the job's process. Each message is serialized with Flower's own serde, handed to
the coordinator's JobRunnerService, which sends it down the site's control stream and
returns the site's reply. Message ids are ours to assign (as in Flower's own grids).
Replies that never come, and refusals by a site, are kept with their reasons in
``exclusions`` for the round's record.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterable

import grpc
from flwr.app import Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as MessageProto
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from silolink import errors
from silolink.gen.training.v1 import training_pb2 as pb
from silolink.gen.training.v1 import training_pb2_grpc
from silolink.rpc.status import from_rpc_error

GRACE_S = 5.0  # on top of the round timeout, for the hop through the coordinator


class RunnerClient:
    """The job process's calls to the coordinator's JobRunnerService."""

    def __init__(self, address: str, job_id: str, token: str, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.job_id = job_id
        self._token = token
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._stub = training_pb2_grpc.JobRunnerServiceStub(self.channel)

    def _call(self, method, request, timeout_s: float):
        try:
            return method(request, timeout=timeout_s)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer="the coordinator") from None

    def nodes(self) -> dict[int, str]:
        reply = self._call(self._stub.ListNodes, pb.ListNodesRequest(job_id=self.job_id, token=self._token), 30)
        return {n.node_id: n.site for n in reply.nodes}

    def exchange(self, site: str, message: bytes, timeout_s: float) -> bytes:
        request = pb.ExchangeRequest(
            job_id=self.job_id, token=self._token, site=site, message=message, timeout_s=timeout_s
        )
        return self._call(self._stub.Exchange, request, timeout_s + GRACE_S).message

    def finish(self, model_path: str) -> pb.Job:
        request = pb.FinishJobRequest(job_id=self.job_id, token=self._token, model_path=model_path)
        return self._call(self._stub.FinishJob, request, 120).job


class SiloGrid(Grid):
    def __init__(self, client: RunnerClient, run_id: int, max_parallel: int = 64) -> None:
        self._client = client
        self._run = Run.create_empty(run_id)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_parallel, thread_name_prefix="exchange")
        self.sites: dict[int, str] = {}
        self.exclusions: list[tuple[str, str]] = []
        self._pending: dict[str, concurrent.futures.Future] = {}
        self.timeout_s = 60.0

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        self.sites = self._client.nodes()
        return list(self.sites)

    def wait_for_nodes(self, count: int, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = list(self.get_node_ids())
            if len(nodes) >= count or time.monotonic() >= deadline:
                return nodes
            time.sleep(0.2)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id  # as Flower's own grids do
            site = self.sites.get(message.metadata.dst_node_id)
            if site is None:
                self.get_node_ids()
                site = self.sites.get(message.metadata.dst_node_id, f"node {message.metadata.dst_node_id}")
            payload = message_to_proto(message).SerializeToString()
            future = self._pool.submit(self._client.exchange, site, payload, self.timeout_s)
            future.site = site  # type: ignore[attr-defined]
            self._pending[message_id] = future
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for message_id in message_ids:
            future = self._pending.get(message_id)
            if future is None or not future.done():
                continue
            del self._pending[message_id]
            reply = self._reply(future)
            if reply is not None:
                replies.append(reply)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self.exclusions = []
        ids = list(self.push_messages(messages))
        futures = [self._pending[i] for i in ids]
        wait_s = (timeout or self.timeout_s) + GRACE_S
        done, not_done = concurrent.futures.wait(futures, timeout=wait_s)
        replies = []
        for message_id in ids:
            future = self._pending.pop(message_id)
            if future in not_done:
                self.exclusions.append((future.site, f"no answer within {wait_s - GRACE_S:.0f} s"))
                continue
            reply = self._reply(future)
            if reply is not None:
                replies.append(reply)
        return replies

    def _reply(self, future: concurrent.futures.Future) -> Message | None:
        try:
            data = future.result()
        except errors.SiloError as e:
            self.exclusions.append((future.site, e.message))  # type: ignore[attr-defined]
            return None
        proto = MessageProto()
        try:
            proto.ParseFromString(data)
            return message_from_proto(proto)
        except Exception:  # noqa: BLE001 - any undecodable reply is the site's fault, not the job's
            self.exclusions.append((future.site, "sent a reply that is not a Flower message"))  # type: ignore[attr-defined]
            return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
