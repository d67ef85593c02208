"""The child side of a job's ClientApp worker process (see ``workers.py``).

The process loads the app once (Flower's own loader, with the app's unpacked directory on
``sys.path``), keeps one Flower ``Context`` for the whole job (stateful mods such as
SecAgg+'s keep their state in ``context.state``), and answers messages one at a time over
its pipe. Frames, each one ``send_bytes`` call:

- parent -> child: a serialized ``flwr.proto.message_pb2.Message``;
- child -> parent: ``b"R"`` + the serialized reply, or ``b"E"`` + JSON
  ``{"type", "code", "message", "detail"}`` for a failure. ``message`` is set only for
  errors whose text is safe to pass on (silolink's own and ``DatasetError``: names, never
  values); ``detail`` is the traceback, which the agent writes to the site's log only.
- while the app handles a message, data requests: child -> parent ``b"Q"`` + JSON (see
  ``data_service``), parent -> child ``b"A"`` + the pickled answer or ``b"E"`` + JSON
  ``{"code", "message"}``. The agent never unpickles what a worker sends.

Before the app is loaded the process keeps only the environment variables of
``KEPT_ENVIRONMENT`` (locale, paths, thread and GPU settings), so secrets the agent was given
through its environment (a database password behind a source's ``${NAME}``, say) are not in
the app's ``os.environ``.

The first frame from the child is ``b"R"`` (ready) or ``b"E"`` (the app failed to load).
This module is imported by the agent's fork server ahead of time, so Flower's import cost
is paid once per agent, not once per job.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

# Imported here, in the fork server, so that every worker starts with them loaded.
from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as MessageProto

READY = b"R"
REPLY = b"R"
ERROR = b"E"
PARENT_POLL_S = 1.0
# Environment variables an app keeps: what Python, numeric libraries and GPUs need to run.
KEPT_ENVIRONMENT = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMP", "TEMP", "TERM",
    "VIRTUAL_ENV", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
}  # fmt: skip
KEPT_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_")


def serve(conn, spec: dict[str, Any]) -> None:
    """Load the app, then answer messages until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when this process ends
    _exit_with_parent()
    _keep_environment(spec.get("environment", ()))
    _connect_data(conn)
    try:
        app = _load(spec)
    except BaseException as e:  # noqa: BLE001 - reported to the agent, which logs the details
        conn.send_bytes(ERROR + _error(e))
        return
    from flwr.supercore.task_identity import TaskIdentity

    # As Flower's own ClientApp process does: Messages an app creates carry this identity.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = spec["run_id"], spec["node_id"], 1
    context = Context(spec["run_id"], spec["node_id"], dict(spec["node_config"]), RecordDict(),
                      dict(spec["run_config"]))  # fmt: skip
    conn.send_bytes(READY)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            proto = MessageProto()
            proto.ParseFromString(request)
            message = message_from_proto(proto)
        except Exception as e:  # noqa: BLE001 - protobuf and flwr raise various types
            conn.send_bytes(
                ERROR + _error(e, code="INVALID_ARGUMENT", message="the Flower message could not be decoded")
            )
            continue
        try:
            reply = app(message, context)
            data = REPLY + message_to_proto(reply).SerializeToString()
        except BaseException as e:  # noqa: BLE001 - SystemExit too: an app must not end its worker this way
            data = ERROR + _error(e)
        conn.send_bytes(data)


def _load(spec: dict[str, Any]) -> ClientApp:
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.supercore.object_ref import load_app

    app_dir = spec.get("app_dir")
    if app_dir:  # an installed bundle: Flower's loader, with the app's directory first on sys.path
        os.chdir(app_dir)  # as Flower's own engine runs an app: relative paths resolve in its directory
        app = load_app(spec["reference"], LoadClientAppError, app_dir)
    else:  # code already in the agent's environment ([training] apps)
        module, _, attributes = spec["reference"].partition(":")
        app = importlib.import_module(module)
        for attribute in (attributes or "app").split("."):
            app = getattr(app, attribute)
        os.chdir(tempfile.gettempdir())  # not the agent's working directory, which may hold its data
    if not isinstance(app, ClientApp):
        raise LoadClientAppError(f"{spec['reference']} is not a flwr ClientApp")
    return app


def _error(error: BaseException, code: str = "", message: str = "") -> bytes:
    from silolink import errors

    from ..apps.data import DatasetError

    if not message and isinstance(error, errors.SiloError):
        code, message = error.code.value, error.message
    elif not message and isinstance(error, DatasetError):
        code, message = "FAILED_PRECONDITION", str(error)
    detail = "".join(traceback.format_exception(error))
    return json.dumps({"type": type(error).__name__, "code": code, "message": message, "detail": detail}).encode()


def _keep_environment(also: list[str]) -> None:
    kept = KEPT_ENVIRONMENT | set(also)
    for name in list(os.environ):
        if name not in kept and not name.startswith(KEPT_PREFIXES):
            del os.environ[name]


def _connect_data(conn) -> None:
    """The data helper's way to the agent: one request and its answer on the job's pipe."""
    from silolink import errors

    from ..catalog import reading

    lock = threading.Lock()  # an app reading from two threads still asks one thing at a time

    def request(op: dict[str, Any]) -> Any:
        with lock:
            conn.send_bytes(b"Q" + json.dumps(op).encode())
            answer = conn.recv_bytes()
        if answer[:1] == b"A":
            return pickle.loads(answer[1:])  # from the agent, which this process trusts
        failure = json.loads(answer[1:])
        raise errors.BY_CODE[errors.Code(failure["code"])](failure["message"])

    reading.connect_agent(request)


def _exit_with_parent() -> None:
    """End this process if the fork server (and so the agent) is gone, even mid-app."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                sys.stderr.flush()
                os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
