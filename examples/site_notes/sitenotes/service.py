"""The gRPC face of site notes, and the entry point the coordinator calls."""

from __future__ import annotations

from silolink.extensions import ExtensionContext, Role, ServiceMount, current_identity
from sitenotes.gen.v1 import notes_pb2, notes_pb2_grpc

from .notes import Note, NoteBook


def _pack(note: Note) -> notes_pb2.Note:
    return notes_pb2.Note(site=note.site, text=note.text, posted_at_s=note.posted_at_s)


class NotesServicer(notes_pb2_grpc.NotesServiceServicer):
    def __init__(self, book: NoteBook) -> None:
        self._book = book

    def PostNote(self, request, context):
        # The author is whoever the certificate says, never a field of the request.
        return notes_pb2.PostNoteResponse(note=_pack(self._book.post(current_identity().name, request.text)))

    def ListNotes(self, request, context):
        return notes_pb2.ListNotesResponse(notes=[_pack(n) for n in self._book.all()])


def mount(context: ExtensionContext) -> ServiceMount:
    """Entry point (``silolink.coordinator_services``): the service and who may call what."""
    servicer = NotesServicer(NoteBook.open(context.data_dir))
    return ServiceMount(
        name=notes_pb2.DESCRIPTOR.services_by_name["NotesService"].full_name,
        register=lambda server: notes_pb2_grpc.add_NotesServiceServicer_to_server(servicer, server),
        rules={"PostNote": {Role.AGENT}, "ListNotes": {Role.OPERATOR}},
    )
