"""StudyService (operators) and SiteStudyService (agents): unpack, call, pack."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from silolink import errors
from silolink.gen.studies.v1 import studies_pb2 as pb
from silolink.gen.studies.v1 import studies_pb2_grpc
from silolink.identity import Role
from silolink.protos import timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .service import StudyService
from .store import Study, StudySite

STATES = {
    "invited": pb.MEMBERSHIP_STATE_INVITED,
    "accepted": pb.MEMBERSHIP_STATE_ACCEPTED,
    "left": pb.MEMBERSHIP_STATE_LEFT,
}
ROLES = {"observer": pb.STUDY_ROLE_OBSERVER, "analyst": pb.STUDY_ROLE_ANALYST, "lead": pb.STUDY_ROLE_LEAD}
ROLE_NAMES = {v: k for k, v in ROLES.items()}


def share_to_dict(share: pb.ComputeShare) -> dict[str, Any]:
    return MessageToDict(share, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def share_to_proto(share: dict[str, Any]) -> pb.ComputeShare:
    out = pb.ComputeShare()
    for key, value in share.items():
        if key == "windows":
            out.windows.extend(value)
        elif key in pb.ComputeShare.DESCRIPTOR.fields_by_name:
            setattr(out, key, type(getattr(out, key))(value))
    return out


def budget_to_proto(budget: dict[str, Any]) -> pb.BudgetReport:
    return pb.BudgetReport(**{k: v for k, v in budget.items() if k in pb.BudgetReport.DESCRIPTOR.fields_by_name})


def site_to_proto(site: StudySite) -> pb.StudySite:
    return pb.StudySite(
        site=site.site,
        state=STATES[site.state],
        invited_at=timestamp(site.invited_at),
        updated_at=timestamp(site.updated_at),
        share=share_to_proto(site.share),
        budgets=[budget_to_proto(b) for b in site.budgets],
    )


def study_to_proto(study: Study) -> pb.Study:
    return pb.Study(
        name=study.name,
        description=study.description,
        created_by=study.created_by,
        created_at=timestamp(study.created_at),
        sites=[site_to_proto(s) for s in study.sites],
        members=[pb.StudyMember(account=a, role=ROLES[r]) for a, r in study.members.items()],
        weight=study.weight,
    )


def invitation(study: Study, site: StudySite) -> pb.SiteInvitation:
    return pb.SiteInvitation(
        study=study.name, description=study.description, state=STATES[site.state], invited_at=timestamp(site.invited_at)
    )


class StudyServicer(studies_pb2_grpc.StudyServiceServicer):
    def __init__(self, studies: StudyService) -> None:
        self._studies = studies

    def CreateStudy(self, request, context):
        study = self._studies.create(request.name, request.description, request.weight, current_identity())
        return pb.CreateStudyResponse(study=study_to_proto(study))

    def InviteSites(self, request, context):
        study, invited = self._studies.invite(request.study, list(request.sites), current_identity())
        return pb.InviteSitesResponse(study=study_to_proto(study), invited=invited)

    def ListStudies(self, request, context):
        return pb.ListStudiesResponse(studies=[study_to_proto(s) for s in self._studies.list(current_identity())])

    def GetStudy(self, request, context):
        return pb.GetStudyResponse(study=study_to_proto(self._studies.get(request.name, current_identity())))

    def SetStudyRole(self, request, context):
        if request.role and request.role not in ROLE_NAMES:
            raise errors.InvalidArgument("unknown study role")
        role = ROLE_NAMES.get(request.role)
        study = self._studies.set_role(request.study, request.account, role, current_identity())
        return pb.SetStudyRoleResponse(study=study_to_proto(study))


class SiteStudyServicer(studies_pb2_grpc.SiteStudyServiceServicer):
    def __init__(self, studies: StudyService) -> None:
        self._studies = studies

    def ListSiteStudies(self, request, context):
        site = current_identity().name
        return pb.ListSiteStudiesResponse(studies=[invitation(s, m) for s, m in self._studies.site_studies(site)])

    def AcceptStudy(self, request, context):
        site = current_identity().name
        membership = self._studies.accept(site, request.study, share_to_dict(request.share))
        return pb.AcceptStudyResponse(study=self._invitation(site, membership))

    def LeaveStudy(self, request, context):
        site = current_identity().name
        membership = self._studies.leave(site, request.study)
        return pb.LeaveStudyResponse(study=self._invitation(site, membership))

    def ReportBudgets(self, request, context):
        budgets = {
            s.study: [MessageToDict(b, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
                      for b in s.budgets]
            for s in request.studies
        }  # fmt: skip
        self._studies.report_budgets(current_identity().name, budgets)
        return pb.ReportBudgetsResponse()

    def _invitation(self, site: str, membership: StudySite) -> pb.SiteInvitation:
        for study, mine in self._studies.site_studies(site):
            if study.name == membership.study:
                return invitation(study, mine)
        raise errors.NotFound(f"site {site} is not in study {membership.study!r}")


def mounts(studies: StudyService) -> list[ServiceMount]:
    viewer, operator, agent = {Role.VIEWER}, {Role.OPERATOR}, {Role.AGENT}
    operators, sites = StudyServicer(studies), SiteStudyServicer(studies)
    return [
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["StudyService"].full_name,
            register=lambda s: studies_pb2_grpc.add_StudyServiceServicer_to_server(operators, s),
            # Reads for any account (each study shows only to those with a role in it); changes
            # for operators and admins (the study's own roles decide further).
            rules={
                "ListStudies": viewer,
                "GetStudy": viewer,
                "CreateStudy": operator,
                "InviteSites": operator,
                "SetStudyRole": operator,
            },  # fmt: skip
        ),
        ServiceMount(
            name=pb.DESCRIPTOR.services_by_name["SiteStudyService"].full_name,
            register=lambda s: studies_pb2_grpc.add_SiteStudyServiceServicer_to_server(sites, s),
            rules={name: agent for name in ("ListSiteStudies", "AcceptStudy", "LeaveStudy", "ReportBudgets")},
        ),
    ]
