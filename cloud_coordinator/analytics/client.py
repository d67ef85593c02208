"""The operator's client for federated queries (the CLI and the demo use it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from silolink import errors
from silolink.analytics.query import STATISTIC_NAMES, build_query
from silolink.cli_util import iso
from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.gen.analytics.v1 import analytics_pb2_grpc
from silolink.protos import epoch
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

    def history(
        self,
        page_size: int = 0,
        page_token: str = "",
        *,
        dataset: str = "",
        asked_by: str = "",
        site: str = "",
        outcome: str = "",
        query_id: str = "",
    ) -> dict[str, Any]:
        """One page of the queries run, newest first, filtered on the coordinator: each with
        who asked, what, the sites asked, the totals or which sites refused and why."""
        if outcome and outcome not in OUTCOMES:
            raise errors.InvalidArgument(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        request = pb.ListQueryHistoryRequest(
            page_size=page_size,
            page_token=page_token,
            dataset=dataset,
            asked_by=asked_by,
            site=site,
            outcome=OUTCOMES.get(outcome, 0),
            query_id=query_id,
        )
        reply = self._operator.call(self._stub.ListQueryHistory, request)
        return {
            "queries": [record_to_dict(r) for r in reply.queries],
            "total": reply.total_size,
            "next_page_token": reply.next_page_token,
        }


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


OUTCOMES = {
    "answered": pb.QUERY_OUTCOME_ANSWERED,
    "refused": pb.QUERY_OUTCOME_REFUSED,
    "failed": pb.QUERY_OUTCOME_FAILED,
}
OUTCOME_NAMES = {v: k for k, v in OUTCOMES.items()}


def _query_fields(query: pb.Query) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dataset": query.dataset,
        "statistic": STATISTIC_NAMES.get(query.statistic, "unknown"),
        "column": query.column or None,
        "where": query.where or None,
    }
    if query.HasField("bounds"):
        out["clip"] = [query.bounds.min, query.bounds.max]
    return out


def _totals(record: pb.QueryRecord) -> dict[str, Any]:
    """The totals of an answered query (empty otherwise)."""
    out: dict[str, Any] = {name: getattr(record, name) for name in ("count", "sum", "mean") if record.HasField(name)}
    if record.bin_counts:
        out["histogram"] = {
            "edges": list(record.query.bin_edges),
            "counts": list(record.bin_counts),
            "below": record.below,
            "above": record.above,
        }
    return out


def record_to_dict(record: pb.QueryRecord) -> dict[str, Any]:
    """A query history entry as plain values (the CLI's --json, the console)."""
    return {
        "query_id": record.query_id,
        "asked_by": record.asked_by,
        "asked_at": iso(epoch(record, "asked_at")),
        "finished_at": iso(epoch(record, "finished_at")),
        **_query_fields(record.query),
        "selectors": [selector_mod.render(s) for s in record.selectors],
        "sites": list(record.sites_asked),
        "outcome": OUTCOME_NAMES.get(record.outcome, "unknown"),
        "reason": record.reason or None,
        "refusals": [{"site": r.site, "code": r.code, "reason": r.reason} for r in record.refusals],
        "refusal_count": record.refusal_count,
        "noise": {n.site: n.epsilon for n in record.noise},
        "result": _totals(record),
    }
