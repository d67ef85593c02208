"""A Flower ``Grid`` in this process: the floor a round over a network is measured against.

Each message goes through Flower's own serde to a ClientApp called in this process, and its
reply comes back the same way, as over the wire but with no network, no other process and no
scheduling. Each node keeps one ``Context`` for the run (stateful mods such as SecAgg+ need it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from flwr.app import Context, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class InProcessGrid(Grid):
    def __init__(self, nodes: dict[int, tuple[object, Context]], run_id: int = 1) -> None:
        self._nodes = nodes  # node id -> (ClientApp, its Context)
        self._run = Run.create_empty(run_id)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # fmt: skip
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id  # as Flower's own grids do
            app, context = self._nodes[message.metadata.dst_node_id]
            delivered = message_from_proto(message_to_proto(message))
            self._replies[message_id] = message_from_proto(message_to_proto(app(delivered, context)))
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(list(self.push_messages(messages)))
