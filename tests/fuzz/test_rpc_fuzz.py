"""Every RPC of both daemons, as every role, under generated, bit-flipped and random input:
never INTERNAL or UNKNOWN, never a traceback in a server's log, and both servers still
answer afterwards (issue 15). About a minute by default; ``--fuzz-long`` sends 100,000."""

from __future__ import annotations

import json

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from silolink.gen.admin.v1 import admin_pb2, admin_pb2_grpc
from silolink.gen.agent.v1 import agent_pb2, agent_pb2_grpc

from .rpc_fuzz import fuzz_all, start_daemons

DEFAULT_INPUTS = 3_000
LONG_INPUTS = 100_000


@pytest.mark.timeout(4 * 3600)
def test_no_rpc_fails_internally_under_fuzzed_input(tmp_path, request):
    long = request.config.getoption("--fuzz-long")
    daemons = start_daemons(tmp_path)
    try:
        roles = {t.role: len(t.methods) for t in daemons.targets}
        # Reflection lists what each server serves: the enrollment listener only enrollment
        # (with health and reflection), the mTLS listener and local API far more.
        assert roles["anonymous"] >= 4 and roles["operator"] >= 30 and roles["local"] >= 10, roles
        tally = fuzz_all(daemons, LONG_INPUTS if long else DEFAULT_INPUTS, print if long else None)
        summary = tally.summary()
        print("\nfuzz:", json.dumps(summary))
        assert tally.inputs >= (LONG_INPUTS if long else DEFAULT_INPUTS)
        assert not tally.failures, json.dumps(tally.failures[:20], indent=1)

        # Both servers still answer, to every role.
        for target in daemons.targets:
            reply = health_pb2_grpc.HealthStub(target.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, target.role
        operator = next(t for t in daemons.targets if t.role == "operator").channel
        sites = admin_pb2_grpc.AdminServiceStub(operator).ListSites(admin_pb2.ListSitesRequest(), timeout=10).sites
        assert "hospital-a" in [s.name for s in sites]
        local = next(t for t in daemons.targets if t.role == "local").channel
        assert (
            agent_pb2_grpc.AgentServiceStub(local).GetStatus(agent_pb2.GetStatusRequest(), timeout=10).site
            == "hospital-a"
        )
    finally:
        codes = daemons.stop()
    logs = daemons.logs()
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name} log:\n{text[-5000:]}"
        assert "failed unexpectedly" not in text, f"{name} log:\n{text[-5000:]}"
    assert codes == {"agent": 0, "coordinator": 0}, codes
