"""Fixtures: a running coordinator and a factory for enrolled, running agents."""

from __future__ import annotations

import os

import pytest

from tests import support

# A secret in the environment of the test process, and so of every agent and ClientApp fork
# server it starts (set before any starts): apps must not find it (test_apps_data_policy).
SECRET_IN_ENVIRONMENT = "db-password-from-the-environment"
os.environ["SILOLINK_TEST_DB_PASSWORD"] = SECRET_IN_ENVIRONMENT


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        help="Fuzz every RPC with 100,000 inputs (tests/fuzz) instead of the default few thousand.",
    )


@pytest.fixture
def coordinator(tmp_path):
    coord = support.start_coordinator(tmp_path / "coordinator")
    yield coord
    coord.stop(0)


@pytest.fixture
def make_agent(coordinator, tmp_path):
    """``make_agent(name, kind="hospital", **settings)``: enroll a site and start its agent."""
    started = []

    def make(name: str, kind: str = "hospital", connect: bool = True, **settings):
        agent_dir = tmp_path / name
        support.enroll_site(coordinator, name, agent_dir, kind)
        agent = support.start_agent(agent_dir, **settings)
        started.append(agent)
        if connect:
            assert agent.wait_connected(10), f"agent {name} did not connect: {agent.link.status.last_error}"
        return agent

    yield make
    for agent in started:
        agent.stop(0)


@pytest.fixture
def flower_server_identity():
    """Flower builds Messages from a process-wide task identity; tests that play a ServerApp set it."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on a unix socket, for the whole session (see tests/pg_server.py)."""
    from tests import pg_server

    server = pg_server.start_postgres()
    yield server
    pg_server.remove(server)
