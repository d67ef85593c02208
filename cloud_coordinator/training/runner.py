"""A training job's own process: ``python -m cloud_coordinator.training.runner DATA_DIR JOB``.

Started by the coordinator with a one-time token and the address of its JobRunnerService in
the environment, its stdout and stderr going to the job's ``server.log``. It unpacks the
job's app bundle into ``training/<job>/app/``, imports the ServerApp named in the app's
``[tool.flwr.app.components]`` from there, and calls it, unchanged, with silolink's Grid and
a Context whose ``run_config`` is the job's. The job completes when the ServerApp returns;
it fails, with the reason, when the ServerApp cannot be imported or raises.

The process never writes the job's state itself: it reports to its coordinator. If the
coordinator is gone (killed), the process notices (its parent changed) and exits at once
without a word to anyone, so the job is still ``running`` when the coordinator comes back,
and resumes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

from silolink import errors, logs, serverapp
from silolink.apps import fab
from silolink.gen.training.v1 import training_pb2 as pb
from silolink.protos import config_from_proto

from . import checkpoints, observe
from .jobs import EXIT_ORPHANED
from .recorder import RoundRecorder

log = logging.getLogger("cloud_coordinator.training.runner")
MAX_REASON = 2000
UNREACHABLE_GRACE_S = 2.0


class Watchdog:
    """Exits the process at once when its coordinator (the parent process) is gone."""

    def __init__(self, interval_s: float) -> None:
        self.parent = os.getppid()
        self._interval_s = interval_s

    def start(self) -> Watchdog:
        threading.Thread(target=self._watch, name="coordinator-watchdog", daemon=True).start()
        return self

    def _watch(self) -> None:
        while True:
            time.sleep(self._interval_s)
            self.check()

    def check(self, grace_s: float = 0.0) -> None:
        """Exit if the parent is gone, looking for up to ``grace_s``: a coordinator killed with
        -9 resets its connections before the kernel hands this process to a new parent, so an
        UNAVAILABLE can come a moment before the parent visibly changes."""
        deadline = time.monotonic() + grace_s
        while os.getppid() == self.parent:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)
        os.write(2, b"silolink: the coordinator is gone; this job process stops without ending the job, "
                    b"which resumes from its last checkpoint when the coordinator restarts\n")  # fmt: skip
        os._exit(EXIT_ORPHANED)

    def check_unreachable(self) -> None:
        """The coordinator did not answer: gone, or only a passing fault (then go on)."""
        self.check(UNREACHABLE_GRACE_S)


class JobHost:
    """What ``silolink.serverapp`` offers the ServerApp, in this job."""

    def __init__(self, root: Path, job_dir: Path, client, grid, recorder: RoundRecorder) -> None:
        self._root, self._job_dir = root, job_dir
        self._client, self._grid, self._recorder = client, grid, recorder

    def publish_model(self, data: bytes, name: str | None, description: str) -> str:
        path = self._job_dir / "published" / f"{uuid.uuid4().hex[:8]}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        model = self._client.publish(str(path.relative_to(self._root)), name or "", description)
        log.info("published model %s", model)
        return model

    def exclude(self, reply, reason: str) -> None:
        site = self._grid.site_of(reply.metadata.src_node_id) or f"node {reply.metadata.src_node_id}"
        self._recorder.exclude(reply, site, reason)

    def site_of(self, node: int) -> str | None:
        return self._grid.site_of(node)

    def save_checkpoint(self, server_round: int, arrays) -> None:
        self._recorder.flush()
        checkpoints.save(self._job_dir, checkpoints.APP_SOURCE, server_round + self._recorder.offset, arrays)

    def load_checkpoint(self) -> serverapp.Checkpoint | None:
        saved = checkpoints.load(self._job_dir, checkpoints.APP_SOURCE)
        if saved is None:
            return None
        self._recorder.offset = saved[0]
        log.info("the ServerApp resumes after round %d (its own checkpoint)", saved[0])
        return serverapp.Checkpoint(saved[0], saved[1])


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:MAX_REASON] if text else type(error).__name__


def _round_record(fields: dict) -> pb.RoundRecord:
    return pb.RoundRecord(**{**fields, "excluded": [pb.Exclusion(**e) for e in fields["excluded"]]})


def _unpack(root: Path, job_dir: Path, described: pb.DescribeRunResponse) -> Path:
    """The app's files in ``training/<job>/app/``, from the bundle whose hash the job names."""
    data = (root / described.bundle_path).read_bytes()
    if hashlib.sha256(data).hexdigest() != described.job.app_sha256:
        raise errors.FailedPrecondition(f"the app bundle {described.bundle_path} does not match the job's sha256")
    app_dir = job_dir / "app"
    shutil.rmtree(app_dir, ignore_errors=True)  # a resumed run unpacks afresh
    fab.unpack_fab(data, app_dir)
    return app_dir


def _run(described: pb.DescribeRunResponse, app_dir: Path, grid, run_config: dict) -> None:
    """Import the ServerApp in isolation and run it; its exceptions propagate."""
    from flwr.app import Context, RecordDict
    from flwr.serverapp import ServerApp
    from flwr.supercore.object_ref import load_app

    os.chdir(app_dir)  # relative paths in the app resolve in its own folder, as under `flwr run`
    try:
        app = load_app(described.serverapp, errors.FailedPrecondition, app_dir)
    except BaseException as e:  # noqa: BLE001 - anything an import can raise is the app's
        traceback.print_exc()
        raise _AppFailed(f"the ServerApp {described.serverapp} could not be imported ({_one_line(e)})") from None
    if not isinstance(app, ServerApp):
        raise _AppFailed(f"{described.serverapp} is a {type(app).__name__}, not a flwr.serverapp.ServerApp")
    context = Context(run_id=described.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    log.info("running ServerApp %s with run_config %s", described.serverapp, run_config)
    try:
        app(grid, context)
    except SystemExit as e:
        if e.code not in (None, 0):
            raise _AppFailed(f"the ServerApp exited with code {e.code}") from None
    except BaseException as e:  # noqa: BLE001 - a user app's failure ends its job, nothing else
        traceback.print_exc()
        raise _AppFailed(f"the ServerApp raised {_one_line(e)}") from None


class _AppFailed(Exception):
    """The user's app failed; the message is the job's reason."""


def run(root: Path, job_id: str, address: str, token: str, orphan_check_s: float) -> int:
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity

    from .grid import RunnerClient, SiloGrid

    watchdog = Watchdog(orphan_check_s).start()
    client = RunnerClient(address, job_id, token, on_unreachable=watchdog.check_unreachable)
    job_dir = root / "training" / job_id
    try:
        described = client.describe()
    except errors.SiloError as e:
        log.error("job %s: the coordinator did not describe the run: %s", job_id, e.message)
        return 1
    job = described.job
    run_config = config_from_proto(job.run_config)
    recorder = RoundRecorder(lambda record: client.record_round(_round_record(record)))
    run = Run.create_empty(described.run_id)
    run.fab_id, run.fab_version, run.fab_hash = job.spec.app, job.app_version, job.app_sha256
    run.override_config = run_config
    # Flower builds messages from a process-wide task identity: one job per process.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = described.run_id, 0, 1
    grid = SiloGrid(client, run, recorder)
    try:
        try:
            app_dir = _unpack(root, job_dir, described)
        except (errors.SiloError, OSError) as e:
            raise _AppFailed(f"the app bundle could not be unpacked: {getattr(e, 'message', e)}") from None
        observe.install(recorder, job_dir)
        serverapp.install(JobHost(root, job_dir, client, grid, recorder))
        if job.resumed and not job.resumed_from_round:
            log.info("resumed after a coordinator restart with no checkpoint: the ServerApp starts from round 1")
        _run(described, app_dir, grid, run_config)
        recorder.flush()
        client.finish()
        log.info("job %s completed", job_id)
    except _AppFailed as e:
        watchdog.check()  # a failure because the coordinator went away is no failure of the job
        log.error("job %s failed: %s", job_id, e)
        _report(client.fail, str(e))
    except errors.SiloError as e:
        watchdog.check()  # (an UNAVAILABLE has already looked, with a grace: RunnerClient's on_unreachable)
        log.error("job %s: %s", job_id, e.message)
        _report(client.fail, f"the job process could not go on: {e.message}")
    finally:
        serverapp.install(None)
        grid.close()
    return 0


def _report(call, reason: str) -> None:
    try:
        call(reason)
    except errors.SiloError as e:  # stopped meanwhile, or the coordinator is going away
        log.info("could not report the job's end: %s", e.message)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m cloud_coordinator.training.runner DATA_DIR JOB_ID")
    logs.configure(os.environ.get("SILOLINK_COORDINATOR_LOG_LEVEL", "INFO"))
    import flwr.common.logger  # noqa: F401 - Flower's logger prints on its own: once is enough

    logging.getLogger("flwr").propagate = False
    address, token = os.environ.get("SILOLINK_JOB_RUNNER", ""), os.environ.get("SILOLINK_JOB_TOKEN", "")
    if not address or not token:
        sys.exit("this process is started by the coordinator, which sets SILOLINK_JOB_RUNNER and SILOLINK_JOB_TOKEN")
    orphan_check_s = float(os.environ.get("SILOLINK_JOB_ORPHAN_CHECK_S", "0.5"))
    code = run(Path(args[0]).resolve(), args[1], address, token, orphan_check_s)
    # The job has ended (or cannot start): leave now, whatever threads the app left behind or
    # exchanges still wait for a silent site (a normal exit would join them).
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
