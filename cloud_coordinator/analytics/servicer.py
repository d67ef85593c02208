"""AnalyticsService: run a federated query for an operator; list the queries run."""

from __future__ import annotations

import grpc

from silolink import errors
from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.gen.analytics.v1 import analytics_pb2_grpc
from silolink.identity import Role
from silolink.protos import timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .history import HistoryEntry, HistoryFilter, QueryHistory
from .service import QueryService

OUTCOME_TO_PROTO = {
    "answered": pb.QUERY_OUTCOME_ANSWERED,
    "refused": pb.QUERY_OUTCOME_REFUSED,
    "failed": pb.QUERY_OUTCOME_FAILED,
}
OUTCOME_FROM_PROTO = {v: k for k, v in OUTCOME_TO_PROTO.items()}


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, service: QueryService, history: QueryHistory) -> None:
        self._service = service
        self._history = history

    def RunQuery(self, request: pb.RunQueryRequest, context: grpc.ServicerContext) -> pb.RunQueryResponse:
        result = self._service.run(current_identity(), request.query, list(request.sites))
        totals = result.totals
        response = pb.RunQueryResponse(query_id=result.query_id, query=result.query, sites=result.sites)
        return with_totals(response, totals, result.epsilons)

    def ListQueryHistory(
        self, request: pb.ListQueryHistoryRequest, context: grpc.ServicerContext
    ) -> pb.ListQueryHistoryResponse:
        if request.outcome and request.outcome not in OUTCOME_FROM_PROTO:
            raise errors.InvalidArgument("outcome must be answered, refused or failed")
        flt = HistoryFilter(
            dataset=request.dataset,
            asked_by=request.asked_by,
            site=request.site,
            outcome=OUTCOME_FROM_PROTO.get(request.outcome, ""),
            query_id=request.query_id,
        )
        entries, total, next_token = self._history.find(flt, request.page_size, request.page_token)
        return pb.ListQueryHistoryResponse(
            queries=[entry_to_proto(e) for e in entries], next_page_token=next_token, total_size=total
        )


def with_totals(message, totals: dict, epsilons: dict[str, float]):
    """``message`` (a RunQueryResponse or QueryRecord) with the totals across the sites and
    each site's epsilon set."""
    message.bin_counts.extend(totals.get("bin_counts", []))
    message.below = totals.get("below", 0)
    message.above = totals.get("above", 0)
    message.noise.extend(pb.SiteNoise(site=s, epsilon=e) for s, e in sorted(epsilons.items()))
    for name in ("count", "sum", "mean"):
        if name in totals:
            setattr(message, name, totals[name])
    return message


def entry_to_proto(entry: HistoryEntry) -> pb.QueryRecord:
    record = pb.QueryRecord(
        query_id=entry.query_id,
        asked_by=entry.asked_by,
        asked_at=timestamp(entry.asked_at),
        finished_at=timestamp(entry.finished_at),
        query=entry.query,
        selectors=entry.selectors,
        sites_asked=entry.sites,
        outcome=OUTCOME_TO_PROTO[entry.outcome],
        reason=entry.reason,
        refusals=[pb.SiteRefusal(site=r.site, code=r.code, reason=r.reason) for r in entry.refusals],
        refusal_count=entry.refusal_count,
    )
    return with_totals(record, entry.totals, entry.noise)


def mount(servicer: AnalyticsServicer) -> ServiceMount:
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["AnalyticsService"].full_name,
        register=lambda server: analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(servicer, server),
        # Operators ask; every account may read the history (totals only).
        rules={"RunQuery": {Role.OPERATOR}, "ListQueryHistory": {Role.VIEWER}},
    )
