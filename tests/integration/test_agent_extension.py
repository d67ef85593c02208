"""Agent-side extensions mount on the local API through the silolink.agent_services group."""

import sys
from pathlib import Path

import grpc
import pytest

from edge_agent.client import LocalClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site_notes"
# A site-side flavour of the example: the site's own systems post and read notes locally.
MODULE = """
from silolink.extensions import Role, ServiceMount
from sitenotes.gen.v1 import notes_pb2, notes_pb2_grpc
from sitenotes.notes import NoteBook
from sitenotes.service import NotesServicer

def mount(context):
    assert context.side == "agent"
    servicer = NotesServicer(NoteBook.open(context.data_dir))
    return [ServiceMount(
        name="sitenotes.v1.NotesService",
        register=lambda server: notes_pb2_grpc.add_NotesServiceServicer_to_server(servicer, server),
        rules={"PostNote": {Role.LOCAL}, "ListNotes": {Role.LOCAL}},
    )]
"""


@pytest.fixture
def agent_extension(tmp_path, monkeypatch):
    site_packages = tmp_path / "site-packages"
    dist = site_packages / "local_notes-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (site_packages / "local_notes.py").write_text(MODULE)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: local-notes\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[silolink.agent_services]\nlocal-notes = local_notes:mount\n")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site_packages))
    yield
    sys.modules.pop("local_notes", None)


def test_agent_mounts_an_extension_on_its_local_api(agent_extension, make_agent):
    from sitenotes.gen.v1 import notes_pb2, notes_pb2_grpc

    agent = make_agent("hospital-a")
    with LocalClient(agent.local_address) as client:
        stub = notes_pb2_grpc.NotesServiceStub(client.channel)
        posted = stub.PostNote(notes_pb2.PostNoteRequest(text="ward 3 closed"), timeout=5)
        assert posted.note.site == ""  # local callers have no certificate identity
        assert [n.text for n in stub.ListNotes(notes_pb2.ListNotesRequest(), timeout=5).notes] == ["ward 3 closed"]
        with pytest.raises(grpc.RpcError) as info:
            stub.PostNote(notes_pb2.PostNoteRequest(text=""), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.status()["state"] == "connected"
    assert (agent.layout.root / "extensions" / "sitenotes.db").exists()
