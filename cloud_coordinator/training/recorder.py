"""Each round as the ServerApp's strategy ran it, recorded for ``train status``.

Runs in the job process. The Grid reports every message's outcome (answered, or the
reason a site gave none); ``observe`` reports the metrics the strategy's aggregation
returned. Rounds are Flower's own: the ``group_id`` of a strategy's messages is its round
number (for Flower's strategies and its legacy workflows alike). A round's record is sent
to the coordinator whenever it changed, so ``train status`` follows a running job.

A round's participants are the sites whose training replies came back without error
(minus any the app excluded through ``silolink.serverapp.exclude``); each site that failed
or did not answer is listed with its reason and the message type.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message

TRAIN = "train"


@dataclass
class _Round:
    started: float
    participants: set[str] = field(default_factory=set)
    excluded: dict[tuple[str, str], str] = field(default_factory=dict)  # (site, message type) -> reason
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    server_metrics: dict[str, float] = field(default_factory=dict)
    privacy: tuple[float, float] = (0.0, 0.0)  # (epsilon, delta) spent up to this round
    ended: float = 0.0


# Sends one round's record: a dict of RoundRecord's fields (silolink.training.v1).
Flush = Callable[[dict[str, Any]], None]


class RoundRecorder:
    def __init__(self, flush: Flush, clock: Callable[[], float] = time.monotonic) -> None:
        self._send = flush
        self._clock = clock
        self._rounds: dict[int, _Round] = {}
        self._dirty: set[int] = set()
        self._current = 0
        self._lock = threading.RLock()
        # Rounds the app numbers from 1 again after resuming from an explicit checkpoint are
        # recorded after it (silolink.serverapp.load_checkpoint sets this).
        self.offset = 0

    def begin(self, number: int) -> None:
        """A strategy started configuring round ``number`` (already shifted): Flower's message
        API strategies leave ``group_id`` empty, so their messages belong to this round."""
        with self._lock:
            self._current = number
            self._round(number)  # the round's clock starts now

    def round_of(self, group_id: str) -> int:
        """The round a message belongs to: its group id when that is a round number (Flower's
        legacy workflows), else the round the strategy is in."""
        text = (group_id or "").strip()
        if text.isdigit():
            number = int(text)
            return number + self.offset if number > 0 else 0  # group 0: before the first round, no round
        return self._current

    def _round(self, number: int) -> _Round:
        entry = self._rounds.get(number)
        if entry is None:
            entry = self._rounds[number] = _Round(started=self._clock())
        return entry

    def sent(self, message: Message) -> None:
        """A message is on its way: its round has started (its clock runs from the first one)."""
        with self._lock:
            self._round(self.round_of(message.metadata.group_id))

    def outcome(self, message: Message, site: str, reason: str | None) -> None:
        """A message's outcome at ``site``: answered (reason None), or why not."""
        kind = message.metadata.message_type
        with self._lock:
            number = self.round_of(message.metadata.group_id)
            entry = self._round(number)
            if reason is None:
                if kind.split(".")[0] == TRAIN:
                    entry.participants.add(site)
            else:
                entry.excluded[(site, kind)] = reason
                if kind.split(".")[0] == TRAIN:
                    entry.participants.discard(site)
            entry.ended = self._clock()
            self._dirty.add(number)

    def exclude(self, message: Message, site: str, reason: str) -> None:
        """The app left ``site``'s reply out of its round (silolink.serverapp.exclude)."""
        with self._lock:
            number = self.round_of(message.metadata.group_id)
            entry = self._round(number)
            entry.excluded[(site, message.metadata.message_type)] = reason
            if message.metadata.message_type.split(".")[0] == TRAIN:
                entry.participants.discard(site)
            self._dirty.add(number)

    def metrics(self, number: int, kind: str, values: Any, shifted: bool = False) -> None:
        """Aggregated ``kind`` metrics (train, evaluate or server) the strategy returned for a round.

        ``shifted``: the round number already counts the rounds before a resume.
        """
        numbers = _numbers(values)
        with self._lock:
            number = number if shifted else number + self.offset
            entry = self._round(number)
            target = {"train": entry.train_metrics, "evaluate": entry.eval_metrics, "server": entry.server_metrics}
            target[kind].update(numbers)
            entry.ended = self._clock()
            self._dirty.add(number)

    def privacy(self, number: int, epsilon: float, delta: float) -> None:
        """The privacy a DP strategy's accountant reports spent after round ``number`` (shifted)."""
        if math.isfinite(epsilon) and math.isfinite(delta):
            with self._lock:
                self._round(number).privacy = (epsilon, delta)
                self._dirty.add(number)

    def flush(self) -> None:
        """Send the records of the rounds that changed."""
        with self._lock:
            dirty, self._dirty = sorted(self._dirty), set()
            records = []
            for number in dirty:
                entry = self._rounds[number]
                excluded = [
                    {"site": site, "reason": reason, "message_type": kind}
                    for (site, kind), reason in sorted(entry.excluded.items())
                ]
                records.append(
                    {
                        "round": number,
                        "participants": sorted(entry.participants),
                        "excluded": excluded,
                        "train_metrics": dict(entry.train_metrics),
                        "eval_metrics": dict(entry.eval_metrics),
                        "server_metrics": dict(entry.server_metrics),
                        "duration_s": max(0.0, entry.ended - entry.started),
                        "dp_epsilon": entry.privacy[0],
                        "dp_delta": entry.privacy[1],
                    }
                )
        for record in records:
            if record["round"] >= 1:  # round 0: messages before the first round (queries), not a round
                self._send(record)


def _numbers(values: Any) -> dict[str, float]:
    """The finite numbers of a MetricRecord (or dict); lists and the like are left out."""
    out = {}
    for key, value in dict(values or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[str(key)] = float(value)
    return out
