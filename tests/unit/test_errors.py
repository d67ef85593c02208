import grpc

from silolink import errors
from silolink.rpc.status import error_for, grpc_code


def test_every_error_maps_to_its_grpc_status_and_back():
    for code, cls in errors.BY_CODE.items():
        status = grpc_code(cls("x"))
        assert status.name == code.value
        assert type(error_for(status, "x")) is cls
        assert status.value[0] == errors.NUMBERS[code]
        assert type(errors.from_number(errors.NUMBERS[code], "x")) is cls


def test_unknown_status_is_internal():
    assert isinstance(error_for(grpc.StatusCode.UNIMPLEMENTED, "x"), errors.Internal)
    assert isinstance(errors.from_number(99, "x"), errors.Internal)
