"""The operator's client for federated queries (the CLI and the demo use it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from silolink.analytics.query import STATISTIC_NAMES, build_query
from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.gen.analytics.v1 import analytics_pb2_grpc
from silolink.rpc.status import from_rpc_error

from ..operator_client import OperatorClient
from ..sites import selector as selector_mod

# Two rounds, each waiting for the slowest site (the coordinator gives each round 60 s).
QUERY_TIMEOUT_S = 150.0


class AnalyticsClient:
    """Typed calls to AnalyticsService over an operator's channel; failures raise silolink.errors."""

    def __init__(self, operator: OperatorClient, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self._operator = operator
        self._stub = analytics_pb2_grpc.AnalyticsServiceStub(operator.channel)
        self._timeout_s = timeout_s

    def run_query(
        self,
        dataset: str,
        statistic: str,
        sites: Sequence[str],
        where: str = "",
        bins: str | None = None,
        clip: str | None = None,
        study: str = "",
    ) -> dict[str, Any]:
        """Run ``statistic`` (``count``, ``sum COL``, ``mean COL``, ``histogram COL``) on the
        sites any of ``sites`` (selector texts) matches; the totals across them.
        """
        query = build_query(dataset, statistic, where, bins, clip)
        query.study = study
        request = pb.RunQueryRequest(query=query, sites=[selector_mod.parse(s) for s in sites])
        try:
            reply = self._stub.RunQuery(request, timeout=self._timeout_s)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=f"the coordinator at {self._operator.address}") from None
        return result_to_dict(reply)


def result_to_dict(reply: pb.RunQueryResponse) -> dict[str, Any]:
    query = reply.query
    out: dict[str, Any] = {
        "query_id": reply.query_id,
        "dataset": query.dataset,
        "statistic": STATISTIC_NAMES.get(query.statistic, "unknown"),
        "column": query.column or None,
        "where": query.where or None,
        "study": query.study or "default",
        "sites": list(reply.sites),
        "noise": {n.site: n.epsilon for n in reply.noise},
    }
    for name in ("count", "sum", "mean"):
        if reply.HasField(name):
            out[name] = getattr(reply, name)
    if query.HasField("bounds"):
        out["clip"] = [query.bounds.min, query.bounds.max]
    if out["statistic"] == "histogram":
        out["histogram"] = {
            "edges": list(query.bin_edges),
            "counts": list(reply.bin_counts),
            "below": reply.below,
            "above": reply.above,
        }
    return out
