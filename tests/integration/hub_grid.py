"""A Flower ``Grid`` over the coordinator's control streams, for tests that run a Flower
ServerApp in the test process against real agents: each message becomes a FlowerTask sent
down a site's mTLS stream, and the site's reply (or refusal) comes back as a Flower Message.

Only the test plays the coordinator's job process here; the sites run exactly as they do for
a real job. Replies are recorded so tests can read what the sites answered.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterable

from flwr.app import Error, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as MessageProto
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from silolink import errors
from silolink.gen.training.v1 import training_pb2 as pb


class HubGrid(Grid):
    def __init__(self, coordinator, sites: list[str], app: str, dataset: str, job_id: str | None = None, **task):
        self._hub = coordinator.hub
        self._sites = {i + 1: site for i, site in enumerate(sites)}
        self._app, self._dataset, self._task = app, dataset, task
        self.job_id = job_id or uuid.uuid4().hex[:12]
        self._run = Run.create_empty(7)
        self._pending: dict[str, tuple[Message, concurrent.futures.Future]] = {}
        self.replies: list[tuple[str, Message]] = []  # (site, reply) as they arrive
        self.refusals: list[tuple[str, str]] = []  # (site, reason)

    @property
    def run(self) -> Run:
        return self._run

    def set_run(self, run_id: int) -> None:
        self._run = Run.create_empty(run_id)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # fmt: skip
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._sites)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            site = self._sites[message.metadata.dst_node_id]
            task = pb.FlowerTask(job_id=self.job_id, app=self._app, dataset=self._dataset, run_id=self._run.run_id,
                                 node_id=message.metadata.dst_node_id, **self._task,
                                 message=message_to_proto(message).SerializeToString())  # fmt: skip
            self._pending[message_id] = (message, self._hub.request(site, flower=task))
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out = []
        for message_id in message_ids:
            sent, future = self._pending.get(message_id, (None, None))
            if future is None or not future.done():
                continue
            del self._pending[message_id]
            out.append(self._reply(sent, future))
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        ids = list(self.push_messages(messages))
        deadline = time.monotonic() + (timeout or 120)
        replies: list[Message] = []
        while len(replies) < len(ids) and time.monotonic() < deadline:
            replies += self.pull_messages(ids)
            time.sleep(0.001)
        return replies

    def _reply(self, sent: Message, future: concurrent.futures.Future) -> Message:
        site = self._sites[sent.metadata.dst_node_id]
        try:
            proto = MessageProto()
            proto.ParseFromString(future.result().flower.message)
            reply = message_from_proto(proto)
        except errors.SiloError as e:  # refused or failed at the site: a Flower error reply, as Flower's engine gives
            self.refusals.append((site, e.message))
            reply = Message(Error(code=0, reason=e.message), reply_to=sent)
        self.replies.append((site, reply))
        return reply
