"""DownloadModelResponse chunks encoded and decoded by hand; no sockets."""

from __future__ import annotations

import os

import pytest
from google.protobuf.message import DecodeError

from silolink import model_chunks
from silolink.gen.registry.v1 import registry_pb2 as pb

OFFSETS = [0, 1, 127, 128, 16_383, 16_384, 2**31, 2**40, 2**63 - 1]
SIZES = [0, 1, 127, 128, 300, 1 << 20]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("size", SIZES)
def test_encode_writes_what_protobuf_writes_and_decode_reads_it_back(offset, size):
    data = os.urandom(size)
    encoded = model_chunks.encode(offset, data)
    assert encoded == pb.DownloadModelResponse(offset=offset, data=data).SerializeToString()
    at, view = model_chunks.decode(encoded)
    assert (at, bytes(view)) == (offset, data)


def test_decode_returns_a_view_of_the_received_buffer_not_a_copy():
    encoded = model_chunks.encode(5, b"x" * 1000)
    _, view = model_chunks.decode(encoded)
    assert view.obj is encoded


def other_layouts():
    data = pb.DownloadModelResponse(data=b"payload").SerializeToString()
    offset = pb.DownloadModelResponse(offset=300).SerializeToString()
    unknown = bytes([0x18, 0x07])  # field 3, varint: from a newer coordinator
    return {
        "data before offset": data + offset,
        "an unknown field after": offset + data + unknown,
        "an unknown field first": unknown + offset + data,
        "offset sent twice (the last wins)": pb.DownloadModelResponse(offset=1).SerializeToString() + offset + data,
        "data split in two (protobuf keeps the last)": offset + pb.DownloadModelResponse(data=b"x").SerializeToString()
        + data,
    }  # fmt: skip


@pytest.mark.parametrize("layout", list(other_layouts()))
def test_decode_reads_any_other_valid_layout_as_protobuf_does(layout):
    message = other_layouts()[layout]
    expected = pb.DownloadModelResponse.FromString(message)
    at, view = model_chunks.decode(message)
    assert (at, bytes(view)) == (expected.offset, expected.data) == (300, b"payload")


def test_a_negative_offset_from_another_encoder_is_read_as_protobuf_reads_it():
    message = pb.DownloadModelResponse(offset=-5, data=b"ab").SerializeToString()
    assert model_chunks.decode(message)[0] == -5
    with pytest.raises(ValueError):
        model_chunks.encode(-5, b"ab")


@pytest.mark.parametrize(
    "message",
    [
        model_chunks.encode(7, b"0123456789")[:-1],  # the data cut short
        bytes([0x08]),  # an offset tag with no value
        bytes([0x08]) + b"\xff" * 11,  # a varint longer than 64 bits
        bytes([0x12, 0x05, 0x01]),  # a length beyond the message
    ],
)
def test_a_malformed_chunk_is_refused(message):
    with pytest.raises(DecodeError):
        model_chunks.decode(message)


@pytest.mark.parametrize("offset", [0, 1, 999, 1000, 2500, 2999, 3000, 4000])
def test_file_chunks_cover_the_file_from_the_offset(tmp_path, offset):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(3000))
    chunks = [model_chunks.decode(c) for c in model_chunks.file_chunks(blob, offset, 1000)]
    assert [at for at, _ in chunks] == list(range(offset, 3000, 1000))
    assert b"".join(bytes(view) for _, view in chunks) == blob.read_bytes()[offset:]


def test_file_chunks_of_an_empty_file_and_a_stream_left_early(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(model_chunks.file_chunks(empty, 0, 1000)) == []
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 5000)
    stream = model_chunks.file_chunks(blob, 0, 1000)
    next(stream)
    stream.close()  # a client that hangs up: the mapping is released, nothing raises
