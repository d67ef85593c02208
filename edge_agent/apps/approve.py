"""Approving an app the coordinator offers: download the signed bundle, verify, install.

The coordinator lists the app versions pushed to it, each with a manifest signed by its
model-signing key (the same key and certificate as models: the certificate chains to the CA
this site pinned at enrollment). The site trusts the signed manifest, never the listing: it
checks the signer's certificate and the signature first, downloads the bundle, and installs
it only if the bytes hash to the manifest's SHA-256 and the bundle declares the manifest's
name and version. Then it is the same install as a local one (bundle checks, dependencies,
all or nothing).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from silolink import errors
from silolink.apps.fab import FabLimits

from .install import install_bundle
from .store import AppStore, InstalledApp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Offer:
    """An app version the coordinator offers this site, as listed (unverified until checked)."""

    name: str
    version: str
    sha256: str
    size_bytes: int
    publisher: str
    files: tuple[dict[str, Any], ...]
    dependencies: tuple[str, ...]
    manifest: bytes = field(repr=False)
    manifest_signature: bytes = field(repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "publisher": self.publisher,
            "files": list(self.files),
            "dependencies": list(self.dependencies),
        }


class OfferSource(Protocol):
    """The coordinator, as approval needs it (``edge_agent.apps.client.AppsClient``)."""

    def offers(self) -> tuple[list[Offer], bytes]: ...

    def download(self, name: str, version: str, size_bytes: int) -> bytes: ...


def find_offer(offers: Sequence[Offer], name: str, version: str) -> Offer:
    for offer in offers:
        if (offer.name, offer.version) == (name, version):
            return offer
    known = ", ".join(o.ref for o in offers) or "none"
    raise errors.NotFound(f"the coordinator offers no app {name}:{version} to this site (it offers: {known})")


def approve(
    store: AppStore, source: OfferSource, ca_pem: bytes, name: str, version: str, limits: FabLimits
) -> tuple[InstalledApp, bool]:
    """Verify and install the offered ``name:version``: (the installed app, whether it was new)."""
    from silolink import manifests

    offers, signer_pem = source.offers()
    offer = find_offer(offers, name, version)
    fields = manifests.verify_app(offer.manifest, offer.manifest_signature, signer_pem, ca_pem)
    if (fields["name"], fields["version"]) != (name, version):
        raise errors.PermissionDenied(
            f"the coordinator lists {name}:{version} with a signed manifest for {fields['name']}:{fields['version']}; "
            "refusing it"
        )
    sha256, size = str(fields["sha256"]), int(fields["size"])
    existing = store.check_new(name, version, sha256)
    if existing is not None and existing.present:
        return existing, False
    if size > limits.max_bundle_bytes:
        raise errors.ResourceExhausted(
            f"app {name}:{version} is {size:,} bytes, over this site's limit of {limits.max_bundle_bytes:,} bytes "
            "([apps] max_bundle_bytes)"
        )
    data = source.download(name, version, size)
    actual = hashlib.sha256(data).hexdigest()
    if len(data) != size or actual != sha256:
        raise errors.PermissionDenied(
            f"the downloaded bundle of {name}:{version} ({len(data):,} bytes, sha256 {actual[:12]}) does not match "
            f"its signed manifest ({size:,} bytes, sha256 {sha256[:12]}); it was altered, refusing it"
        )
    app, new = install_bundle(store, data, "coordinator", limits, expect=(name, version))
    log.info("approved app %s (sha256 %s) from the coordinator", app.ref, app.sha256[:12])
    return app, new
