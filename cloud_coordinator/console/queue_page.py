"""The console's Queue page: jobs waiting with their place and why, what runs where, and each
study's fair share of the fleet (through QueueService, as the logged-in account: studies the
account may not see are left out by the coordinator)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ..studies.client import QueueClient
from .web import Console, Context


def _queue(ctx: Context) -> dict[str, Any]:
    found = QueueClient(ctx.client).list()
    waiting = sorted((w for w in found["work"] if w["state"] == "queued"), key=lambda w: w["position"] or 0)
    running = [w for w in found["work"] if w["state"] == "running"]
    shares = [{"study": study, **share} for study, share in sorted(found["shares"].items())]
    counts: dict[str, dict[str, int]] = {s["study"]: {"queued": 0, "running": 0} for s in shares}
    for work in found["work"]:
        counts.setdefault(work["study"], {"queued": 0, "running": 0})[work["state"]] += 1
    for share in shares:
        share.update(counts[share["study"]])
    return {"waiting": waiting, "running": running, "shares": shares}


def queue(console: Console, ctx: Context) -> Response:
    return console.render("queue.html", ctx, **_queue(ctx))


def queue_fragment(console: Console, ctx: Context) -> Response:
    return console.render("queue_live.html", ctx, **_queue(ctx))
