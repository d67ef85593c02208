"""What the coordinator may learn about the site's datasets: the site's policy decides."""

from __future__ import annotations

from silolink.gen.catalog.v1 import catalog_pb2 as pb

from .store import Catalog

SHARE_TO_PROTO = {
    "nothing": pb.SHARE_LEVEL_NOTHING,
    "name": pb.SHARE_LEVEL_NAME,
    "schema": pb.SHARE_LEVEL_SCHEMA,
    "count": pb.SHARE_LEVEL_COUNT,
}


def describe_catalog(catalog: Catalog, share: str) -> pb.DescribeCatalogResult:
    datasets = []
    for item in catalog.summary(share):
        summary = pb.DatasetSummary(
            name=item["name"],
            columns=[pb.Column(name=c["name"], type=c["type"]) for c in item.get("columns", [])],
            label=item.get("label") or "",
        )
        if "row_count" in item:
            summary.row_count = item["row_count"]
        datasets.append(summary)
    return pb.DescribeCatalogResult(share_level=SHARE_TO_PROTO[share], datasets=datasets)
