"""AnalyticsService: run a federated query for an operator."""

from __future__ import annotations

import grpc

from silolink.gen.analytics.v1 import analytics_pb2 as pb
from silolink.gen.analytics.v1 import analytics_pb2_grpc
from silolink.identity import Role
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .service import QueryService


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, service: QueryService) -> None:
        self._service = service

    def RunQuery(self, request: pb.RunQueryRequest, context: grpc.ServicerContext) -> pb.RunQueryResponse:
        result = self._service.run(current_identity(), request.query, list(request.sites))
        totals = result.totals
        response = pb.RunQueryResponse(
            query_id=result.query_id,
            query=result.query,
            sites=result.sites,
            bin_counts=totals.get("bin_counts", []),
            below=totals.get("below", 0),
            above=totals.get("above", 0),
            noise=[pb.SiteNoise(site=s, epsilon=e) for s, e in sorted(result.epsilons.items())],
        )
        for name in ("count", "sum", "mean"):
            if name in totals:
                setattr(response, name, totals[name])
        return response


def mount(servicer: AnalyticsServicer) -> ServiceMount:
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["AnalyticsService"].full_name,
        register=lambda server: analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(servicer, server),
        rules={"RunQuery": {Role.OPERATOR}},
    )
