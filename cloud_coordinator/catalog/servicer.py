"""CatalogService: ask a connected site to describe its datasets (as its policy allows)."""

from __future__ import annotations

import concurrent.futures

import grpc

from silolink import errors
from silolink.gen.catalog.v1 import catalog_pb2 as pb
from silolink.gen.catalog.v1 import catalog_pb2_grpc
from silolink.identity import Role
from silolink.rpc.server import ServiceMount

from ..control.hub import ControlHub
from ..sites.service import SiteService

ANSWER_TIMEOUT_S = 15.0


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, hub: ControlHub, sites: SiteService) -> None:
        self._hub = hub
        self._sites = sites

    def ListSiteDatasets(self, request: pb.ListSiteDatasetsRequest, context: grpc.ServicerContext):
        site = self._sites.get_site(request.site)
        if site.revoked_at is not None:
            raise errors.FailedPrecondition(f"site {site.name} is revoked")
        future = self._hub.request(site.name, describe_catalog=pb.DescribeCatalogCommand())
        try:
            answer = future.result(ANSWER_TIMEOUT_S).describe_catalog
        except concurrent.futures.TimeoutError:
            raise errors.DeadlineExceeded(f"site {site.name} did not answer within {ANSWER_TIMEOUT_S:.0f} s") from None
        return pb.ListSiteDatasetsResponse(site=site.name, share_level=answer.share_level, datasets=answer.datasets)


def mount(servicer: CatalogServicer) -> ServiceMount:
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["CatalogService"].full_name,
        register=lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server),
        rules={"ListSiteDatasets": {Role.VIEWER}},
    )
