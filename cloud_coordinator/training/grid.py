"""A Flower ``Grid`` over silolink: messages travel in the sites' mTLS control streams.

Runs in the job's process, under the user's ServerApp. Each message is serialized with
Flower's own serde and handed to the coordinator's JobRunnerService, which sends it down
the site's control stream and returns the site's reply. Message ids are ours to assign (as
in Flower's own grids). A site that refuses or fails a message answers, as on Flower's own
engine, with an error reply (``Message.error``) carrying the reason; a site that does not
answer in time sends nothing. Either way the round's record (``RoundRecorder``) notes the
site and the reason, for ``cloud-coordinator train status``.

Thread-safe: Flower's legacy server sends to each client from a thread of its own.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from flwr.app import Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as MessageProto
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from silolink import errors
from silolink.gen.training.v1 import training_pb2 as pb
from silolink.gen.training.v1 import training_pb2_grpc
from silolink.rpc.status import from_rpc_error

from .recorder import RoundRecorder

GRACE_S = 5.0  # on top of a message's timeout, for the hop through the coordinator
DEFAULT_TIMEOUT_S = 3600.0  # Flower's own default for a strategy's send_and_receive


class RunnerClient:
    """The job process's calls to the coordinator's JobRunnerService.

    ``on_unreachable`` runs when the coordinator itself cannot be reached (the job process
    checks there whether its coordinator is gone, and exits without writing if so).
    """

    def __init__(
        self,
        address: str,
        job_id: str,
        token: str,
        max_message_bytes: int = 64 * 1024 * 1024,
        on_unreachable: Callable[[], None] = lambda: None,
    ) -> None:
        self.job_id = job_id
        self._token = token
        self._on_unreachable = on_unreachable
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
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                self._on_unreachable()
            raise from_rpc_error(e, peer="the coordinator") from None

    def _ids(self) -> dict:
        return {"job_id": self.job_id, "token": self._token}

    def describe(self) -> pb.DescribeRunResponse:
        return self._call(self._stub.DescribeRun, pb.DescribeRunRequest(**self._ids()), 30)

    def nodes(self) -> dict[int, str]:
        reply = self._call(self._stub.ListNodes, pb.ListNodesRequest(**self._ids()), 30)
        return {n.node_id: n.site for n in reply.nodes}

    def exchange(self, site: str, message: bytes, timeout_s: float) -> bytes:
        request = pb.ExchangeRequest(**self._ids(), site=site, message=message, timeout_s=timeout_s)
        return self._call(self._stub.Exchange, request, timeout_s + GRACE_S).message

    def record_round(self, record: pb.RoundRecord) -> None:
        self._call(self._stub.RecordRound, pb.RecordRoundRequest(**self._ids(), round=record), 30)

    def publish(self, model_path: str, name: str, description: str) -> str:
        request = pb.PublishModelRequest(**self._ids(), model_path=model_path, name=name, description=description)
        return self._call(self._stub.PublishModel, request, 300).model

    def finish(self, model_path: str = "") -> pb.Job:
        request = pb.FinishJobRequest(**self._ids(), model_path=model_path)
        return self._call(self._stub.FinishJob, request, 300).job

    def fail(self, reason: str) -> pb.Job:
        return self._call(self._stub.FailJob, pb.FailJobRequest(**self._ids(), reason=reason), 30).job


@dataclass
class _Pending:
    message: Message
    site: str
    future: concurrent.futures.Future
    timeout_s: float


class SiloGrid(Grid):
    def __init__(self, client: RunnerClient, run: Run, recorder: RoundRecorder, max_parallel: int = 64) -> None:
        self._client = client
        self._run = run
        self._recorder = recorder
        self._pool = concurrent.futures.ThreadPoolExecutor(max_parallel, thread_name_prefix="exchange")
        self.sites: dict[int, str] = {}
        self._pending: dict[str, _Pending] = {}
        self._listed: dict[int, str] = {}  # nodes listed since messages were last sent
        self._lock = threading.Lock()

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
        """The job's sites as nodes, and any listed since messages were last sent. Flower's
        strategies read the list twice while configuring a round (how many to sample, then
        the sample) and wait forever for a node the first read saw and the second did not:
        a site leaving the job between the reads hung the job. Listed until the next send,
        it gets its message and answers with an error, and the round goes on without it."""
        nodes = self._client.nodes()
        with self._lock:
            self.sites.update(nodes)
            self._listed.update(nodes)
            return list(self._listed)

    def site_of(self, node_id: int) -> str | None:
        with self._lock:
            return self.sites.get(node_id)

    def push_messages(self, messages: Iterable[Message], timeout_s: float | None = None) -> Iterable[str]:
        with self._lock:
            self._listed.clear()
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id  # as Flower's own grids do
            node = message.metadata.dst_node_id
            site = self.site_of(node)
            if site is None:
                self.get_node_ids()
                site = self.site_of(node) or f"node {node}"
            wait_s = timeout_s or min(message.metadata.ttl or DEFAULT_TIMEOUT_S, DEFAULT_TIMEOUT_S)
            payload = message_to_proto(message).SerializeToString()
            self._recorder.sent(message)
            future = self._pool.submit(self._client.exchange, site, payload, wait_s)
            with self._lock:
                self._pending[message_id] = _Pending(message, site, future, wait_s)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for message_id in message_ids:
            with self._lock:
                pending = self._pending.get(message_id)
                if pending is None or not pending.future.done():
                    continue
                del self._pending[message_id]
            replies.append(self._settle(pending))
        self._recorder.flush()
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        ids = list(self.push_messages(messages, timeout))
        with self._lock:
            batch = [self._pending[i] for i in ids]
        deadline = time.monotonic() + max((p.timeout_s for p in batch), default=0.0) + GRACE_S
        concurrent.futures.wait([p.future for p in batch], timeout=max(0.0, deadline - time.monotonic()))
        replies = []
        for message_id, pending in zip(ids, batch, strict=True):
            with self._lock:
                self._pending.pop(message_id, None)
            if pending.future.done():
                replies.append(self._settle(pending))
            else:  # Flower's grids return what arrived in time; the rest is a non-answer
                self._recorder.outcome(pending.message, pending.site, f"no answer within {pending.timeout_s:g} s")
        self._recorder.flush()
        return replies

    def _settle(self, pending: _Pending) -> Message:
        """The site's reply, or an error reply saying why there is none (as Flower's engine does)."""
        try:
            data = pending.future.result()
        except errors.SiloError as e:
            return self._error_reply(pending, _error_code(e), e.message)
        proto = MessageProto()
        try:
            proto.ParseFromString(data)
            reply = message_from_proto(proto)
        except Exception:  # noqa: BLE001 - any undecodable reply is the site's fault, not the job's
            return self._error_reply(pending, ErrorCode.UNKNOWN, "sent a reply that is not a Flower message")
        if reply.has_error():
            self._recorder.outcome(pending.message, pending.site, f"the app reported an error: {reply.error.reason}")
        else:
            self._recorder.outcome(pending.message, pending.site, None)
        return reply

    def _error_reply(self, pending: _Pending, code: int, reason: str) -> Message:
        self._recorder.outcome(pending.message, pending.site, reason)
        return Message(Error(code=code, reason=f"site {pending.site}: {reason}"), reply_to=pending.message)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _error_code(error: errors.SiloError) -> int:
    """Flower's error code closest to why a site gave no reply."""
    if isinstance(error, errors.PermissionDenied | errors.FailedPrecondition):
        return ErrorCode.LOAD_CLIENT_APP_EXCEPTION  # the site refused or cannot load the app
    if isinstance(error, errors.DeadlineExceeded | errors.Unavailable):
        return ErrorCode.NODE_UNAVAILABLE
    return ErrorCode.CLIENT_APP_RAISED_EXCEPTION
