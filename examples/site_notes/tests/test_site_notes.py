"""The example extension, discovered through a real entry point and served by a real coordinator."""

import json
from pathlib import Path

import grpc
import pytest

from edge_agent.identity import load_identity
from edge_agent.layout import AgentLayout
from silolink import errors
from silolink.rpc.channels import Credentials, mtls_channel
from tests import support

EXAMPLE = Path(__file__).resolve().parents[1]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Make the example importable and visible as an installed distribution's entry point."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    dist = tmp_path / "site-packages" / "silolink_site_notes-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: silolink-site-notes\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[silolink.coordinator_services]\nnotes = sitenotes.service:mount\n")
    monkeypatch.syspath_prepend(str(dist.parent))


def test_sites_post_and_operators_read_through_the_coordinators_checks(installed, tmp_path):
    from sitenotes.gen.v1 import notes_pb2, notes_pb2_grpc

    coordinator = support.start_coordinator(tmp_path / "c")
    try:
        support.enroll_site(coordinator, "hospital-a", tmp_path / "a")
        site = notes_pb2_grpc.NotesServiceStub(
            mtls_channel(coordinator.address, load_identity(AgentLayout(tmp_path / "a")).credentials)
        )
        posted = site.PostNote(notes_pb2.PostNoteRequest(text="MRI maintenance on Saturday"), timeout=5)
        assert posted.note.site == "hospital-a"  # from the certificate

        creds = json.loads(coordinator.layout.operator_credentials.read_text())
        operator = notes_pb2_grpc.NotesServiceStub(
            mtls_channel(
                coordinator.address, Credentials(*(creds[k].encode() for k in ("ca_pem", "cert_pem", "key_pem")))
            )
        )
        notes = operator.ListNotes(notes_pb2.ListNotesRequest(), timeout=5).notes
        assert [(n.site, n.text) for n in notes] == [("hospital-a", "MRI maintenance on Saturday")]

        with pytest.raises(grpc.RpcError) as denied:
            site.ListNotes(notes_pb2.ListNotesRequest(), timeout=5)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as invalid:
            site.PostNote(notes_pb2.PostNoteRequest(text=""), timeout=5)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "1 to 500" in invalid.value.details()
    finally:
        coordinator.stop(0)


def test_an_extension_without_a_rule_for_every_method_stops_the_coordinator(installed, tmp_path, monkeypatch):
    import sitenotes.service as service

    original = service.mount

    def incomplete(context):
        mount = original(context)
        return type(mount)(mount.name, mount.register, {"PostNote": mount.rules["PostNote"]})

    monkeypatch.setattr(service, "mount", incomplete)
    with pytest.raises(errors.FailedPrecondition, match="'notes'.*missing \\['ListNotes'\\]"):
        support.start_coordinator(tmp_path / "c")
