import numpy as np
import pytest

from edge_agent.inference import codec
from silolink import errors
from silolink.gen.inference.v1 import inference_pb2 as pb


def test_arrays_round_trip_in_every_dtype():
    for dtype in codec.DTYPES.values():
        array = np.arange(12).reshape(3, 4).astype(dtype)
        back = codec.to_array(codec.from_array("x", array))
        assert back.dtype == dtype and back.shape == (3, 4)
        assert np.array_equal(back, array)


def test_a_big_endian_array_is_sent_little_endian():
    array = np.arange(6, dtype=">f4").reshape(2, 3)
    tensor = codec.from_array("x", array)
    assert tensor.dtype == pb.DATA_TYPE_FLOAT32
    assert np.array_equal(codec.to_array(tensor), array)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dtype": 0, "shape": [1], "data": b"\0" * 4}, "input 'x' has no or an unknown dtype; use one of float32"),
        ({"dtype": 99, "shape": [1], "data": b"\0" * 4}, "unknown dtype"),
        ({"dtype": pb.DATA_TYPE_FLOAT32, "shape": [], "data": b""}, "input 'x' has no shape"),
        ({"dtype": pb.DATA_TYPE_FLOAT32, "shape": [2, -1], "data": b""}, "negative dimension in shape [2, -1]"),
        ({"dtype": pb.DATA_TYPE_FLOAT32, "shape": [0, -1], "data": b""}, "negative dimension in shape [0, -1]"),
        ({"dtype": pb.DATA_TYPE_FLOAT32, "shape": [0, 3], "data": b""}, "input 'x' is empty (shape [0, 3])"),
        (
            {"dtype": pb.DATA_TYPE_FLOAT64, "shape": [2, 2], "data": b"\0" * 31},
            "input 'x': shape [2, 2] of float64 needs 32 bytes of data, got 31",
        ),
    ],
)
def test_a_malformed_tensor_is_refused_with_what_is_wrong(fields, message):
    with pytest.raises(errors.InvalidArgument) as caught:
        codec.to_array(pb.Tensor(name="x", **fields))
    assert message in caught.value.message


def test_outputs_are_named_as_outputs_in_errors():
    reply = pb.InferResponse(outputs=[pb.Tensor(name="y", dtype=pb.DATA_TYPE_INT8, shape=[3], data=b"\0")])
    with pytest.raises(errors.InvalidArgument, match="output 'y': shape \\[3\\] of int8 needs 3 bytes"):
        codec.outputs_of(reply)


def test_an_unsupported_dtype_is_refused_on_the_way_out():
    with pytest.raises(errors.InvalidArgument, match="'x' has dtype complex64"):
        codec.from_array("x", np.zeros(2, dtype=np.complex64))
