"""EnrollmentService and AdminService: unpack, call SiteService, pack."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from silolink import errors
from silolink.gen.admin.v1 import admin_pb2, admin_pb2_grpc
from silolink.gen.common.v1 import site_pb2
from silolink.gen.enrollment.v1 import enrollment_pb2, enrollment_pb2_grpc
from silolink.identity import Role
from silolink.paging import page_bounds
from silolink.protos import epoch, resources_from_dict, timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .service import SiteService
from .store import SiteRecord

KIND_TO_PROTO = {"hospital": site_pb2.SITE_KIND_HOSPITAL, "factory": site_pb2.SITE_KIND_FACTORY}
KIND_FROM_PROTO = {v: k for k, v in KIND_TO_PROTO.items()}
STATE_TO_PROTO = {
    "pending": site_pb2.SITE_STATE_PENDING,
    "online": site_pb2.SITE_STATE_ONLINE,
    "offline": site_pb2.SITE_STATE_OFFLINE,
    "revoked": site_pb2.SITE_STATE_REVOKED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}


def _has_tag(tags: dict[str, str], key: str, value: str) -> bool:
    return key in tags and (not value or tags[key] == value)


def site_state(site: SiteRecord, is_connected: Callable[[str], bool]) -> str:
    if site.revoked_at is not None:
        return "revoked"
    if site.enrolled_at is None:
        return "pending"
    return "online" if is_connected(site.name) else "offline"


def site_to_proto(site: SiteRecord, state: str) -> admin_pb2.Site:
    return admin_pb2.Site(
        name=site.name,
        kind=KIND_TO_PROTO[site.kind],
        tags=[site_pb2.Tag(key=k, value=v) for k, v in sorted(site.tags.items())],
        state=STATE_TO_PROTO[state],
        version=site.version,
        last_heartbeat=timestamp(site.last_heartbeat),
        certificate_expires_at=timestamp(site.cert_expires_at),
        resources=resources_from_dict(site.resources),
    )


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, sites: SiteService) -> None:
        self._sites = sites

    def Enroll(self, request: enrollment_pb2.EnrollRequest, context: grpc.ServicerContext):
        if not request.token:
            raise errors.InvalidArgument("the enrollment token is missing")
        if not request.csr_pem:
            raise errors.InvalidArgument("the certificate signing request is missing")
        result = self._sites.enroll(request.token, request.csr_pem, request.agent_version[:64])
        return enrollment_pb2.EnrollResponse(
            site=result.site.name,
            certificate_pem=result.certificate_pem,
            ca_certificate_pem=result.ca_certificate_pem,
            kind=KIND_TO_PROTO[result.site.kind],
        )

    def RenewCertificate(self, request: enrollment_pb2.RenewCertificateRequest, context: grpc.ServicerContext):
        if not request.csr_pem:
            raise errors.InvalidArgument("the certificate signing request is missing")
        return enrollment_pb2.RenewCertificateResponse(
            certificate_pem=self._sites.renew(current_identity(), request.csr_pem)
        )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self, sites: SiteService, is_connected: Callable[[str], bool], addresses: Callable[[], tuple[str, str]]
    ) -> None:
        self._sites = sites
        self._is_connected = is_connected
        self._addresses = addresses

    def _pack(self, site: SiteRecord) -> admin_pb2.Site:
        return site_to_proto(site, site_state(site, self._is_connected))

    def AddSite(self, request: admin_pb2.AddSiteRequest, context: grpc.ServicerContext):
        kind = KIND_FROM_PROTO.get(request.kind)
        if kind is None:
            raise errors.InvalidArgument("the site kind is required: hospital or factory")
        tags: dict[str, str] = {}
        for tag in request.tags:
            if tag.key in tags:
                raise errors.InvalidArgument(f"tag {tag.key!r} is given twice")
            tags[tag.key] = tag.value
        issued = self._sites.add_site(request.name, kind, tags, request.token_ttl_s, actor=str(current_identity()))
        coordinator_address, enroll_address = self._addresses()
        return admin_pb2.AddSiteResponse(
            site=self._pack(issued.site),
            token=issued.token,
            expires_at=timestamp(issued.expires_at),
            ca_fingerprint=issued.ca_fingerprint,
            coordinator_address=coordinator_address,
            enroll_address=enroll_address,
        )

    def ListSites(self, request: admin_pb2.ListSitesRequest, context: grpc.ServicerContext):
        kind = KIND_FROM_PROTO.get(request.kind) if request.kind else None
        state = STATE_FROM_PROTO.get(request.state) if request.state else None
        cert_before = epoch(request, "certificate_expires_before")
        counts = dict.fromkeys(STATE_TO_PROTO, 0)
        states: dict[str, str] = {}

        def keep(site: SiteRecord) -> bool:
            states[site.name] = now_state = site_state(site, self._is_connected)
            counts[now_state] += 1
            return not (
                (kind and site.kind != kind)
                or (state and now_state != state)
                or (request.name_contains and request.name_contains not in site.name)
                or (request.HasField("tag") and not _has_tag(site.tags, request.tag.key, request.tag.value))
                or (cert_before is not None and (site.cert_expires_at is None or site.cert_expires_at >= cert_before))
            )

        # From memory (SiteService keeps every record): filtering 10,000 sites takes milliseconds.
        matched = self._sites.select(keep)
        start, end, next_token = page_bounds(request.page_size, request.page_token, len(matched))
        return admin_pb2.ListSitesResponse(
            sites=[site_to_proto(site, states[site.name]) for site in self._sites.with_live(matched[start:end])],
            next_page_token=next_token,
            total_size=len(matched),
            state_counts=[admin_pb2.SiteStateCount(state=STATE_TO_PROTO[k], count=v) for k, v in counts.items()],
        )

    def RevokeSite(self, request: admin_pb2.RevokeSiteRequest, context: grpc.ServicerContext):
        site = self._sites.revoke(request.name, actor=str(current_identity()))
        return admin_pb2.RevokeSiteResponse(site=self._pack(site))


def mounts(
    sites: SiteService, is_connected: Callable[[str], bool], addresses: Callable[[], tuple[str, str]]
) -> list[ServiceMount]:
    enrollment = EnrollmentServicer(sites)
    admin = AdminServicer(sites, is_connected, addresses)
    return [
        ServiceMount(
            name=enrollment_pb2.DESCRIPTOR.services_by_name["EnrollmentService"].full_name,
            register=lambda s: enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(enrollment, s),
            rules={"Enroll": {Role.ANONYMOUS}, "RenewCertificate": {Role.AGENT}},
        ),
        ServiceMount(
            name=admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            register=lambda s: admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, s),
            # Admins manage sites; every account may see them.
            rules={"AddSite": {Role.ADMIN}, "ListSites": {Role.VIEWER}, "RevokeSite": {Role.ADMIN}},
        ),
    ]
