"""Training jobs at the coordinator: check, start, supervise, stop and resume them.

A job runs a published Flower app: its ServerApp, unchanged, in a process of its own
(Flower keeps the identity of the running task in process-wide state, and a failing or
hanging user app must never take the coordinator down). That process reaches the sites
and reports its rounds, models and end through the coordinator's JobRunnerService on
loopback, authenticated by a one-time token per process; only the coordinator writes the
job's state. The process's stdout, stderr and logging go to the job's ``server.log``.

A coordinator restart resumes running jobs: the job process starts again and the
ServerApp continues from its last checkpointed round (see ``observe`` and
``silolink.serverapp``).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from silolink import errors
from silolink.config import CoordinatorTrainingConfig
from silolink.gen.training.v1 import training_pb2 as pb
from silolink.protos import config_to_proto

from ..control.hub import ControlHub
from ..sites import selector as site_selector
from ..sites.service import SiteService
from . import checkpoints, runconfig
from .store import Job, JobSpec, JobStore, RoundRecord

if TYPE_CHECKING:
    from ..apps.registry import AppRegistry

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
MAX_RESUMES = 3
STOP_GRACE_S = 5.0
LOG_FILE = "server.log"
MAX_LOG_READ = 1 << 20
LOGS_COMMAND = "cloud-coordinator train logs"
EXIT_ORPHANED = 75  # the job process found its coordinator gone (it wrote nothing)


def node_id(site: str) -> int:
    """A stable Flower node id for a site name."""
    return int.from_bytes(hashlib.sha256(site.encode()).digest()[:8], "big") >> 1


@dataclass
class _Process:
    popen: subprocess.Popen
    token: str
    stopping: bool = False


# Registers a job's model: (job, ONNX path, name or "", description) -> "name:version".
RegisterModel = Callable[[Job, Path, str, str], str]


class JobService:
    def __init__(
        self,
        store: JobStore,
        sites: SiteService,
        hub: ControlHub,
        root: Path,
        record_audit: Callable[..., object],
        register_model: RegisterModel | None,
        apps: AppRegistry | None = None,
        config: CoordinatorTrainingConfig | None = None,
    ) -> None:
        self._store = store
        self._sites = sites
        self._hub = hub
        self._root = root
        self._audit = record_audit
        self._register_model = register_model
        self._apps = apps
        self._config = config or CoordinatorTrainingConfig()
        self._processes: dict[str, _Process] = {}
        self._tasks: dict[str, pb.FlowerTask] = {}  # job id -> what every FlowerTask of the job carries
        self._lock = threading.Lock()
        self._shutting_down = False
        self.runner_address = ""  # set once the runner service listens

    # --- operator side ---------------------------------------------------------------

    def start(self, spec: JobSpec, actor: str) -> Job:
        self._check(spec)
        if self._apps is None:
            raise errors.FailedPrecondition("this coordinator runs without the app registry; no job can start")
        app = self._apps.resolve(spec.app, spec.app_version or None)
        config = runconfig.effective(app.ref, app.config, spec)
        if app.builtin:
            runconfig.check_tabular(config)
        min_sites = spec.min_sites or config.get("min-sites", 1)
        matched = self._chosen(spec)
        if len(matched) < max(1, min_sites if isinstance(min_sites, int) else 1):
            which = ", ".join(matched) or "none"
            raise errors.FailedPrecondition(
                f"only {len(matched)} enrolled site(s) match {', '.join(spec.sites)} ({which}); "
                f"the job needs at least {min_sites} (--min-sites)"
            )
        job_id = uuid.uuid4().hex[:12]
        job = self._store.create(job_id, spec, actor, app.version, app.sha256, config)
        self._audit(actor, "training.start", job_id, app=app.ref, sha256=app.sha256, dataset=spec.dataset,
                    sites=list(spec.sites), run_config=sorted(config))  # fmt: skip
        self._spawn(job_id)
        return job

    def stop(self, job_id: str, actor: str) -> Job:
        job = self._store.get(job_id, with_rounds=False)
        if job.state != "running":
            raise errors.FailedPrecondition(f"job {job_id} is already {job.state}")
        job = self._store.finish(job_id, "stopped", error=f"stopped by {actor}")
        self._audit(actor, "training.stop", job_id)
        self._terminate(job_id)
        self._ended(job)
        return job

    def get(self, job_id: str) -> Job:
        return self._store.get(job_id)

    def list(self) -> list[Job]:
        return self._store.list()

    def page(self, state: str, dataset: str, offset: int, limit: int | None) -> tuple[list[Job], int, dict[str, int]]:
        return self._store.page(state, dataset, offset, limit)

    def read_logs(self, job_id: str, offset: int, max_bytes: int = 0) -> tuple[bytes, int, bool]:
        """(output from ``offset``, the next offset, whether the job ended and all was read)."""
        job = self._store.get(job_id, with_rounds=False)
        if offset < 0:
            raise errors.InvalidArgument("offset must not be negative")
        limit = min(max_bytes or MAX_LOG_READ, MAX_LOG_READ)
        path = self.job_dir(job_id) / LOG_FILE
        try:
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(min(offset, size))
                data = f.read(limit)
        except FileNotFoundError:
            data, size = b"", 0
        next_offset = min(offset, size) + len(data)
        return data, next_offset, job.state != "running" and next_offset >= size

    def resume_all(self) -> None:
        """After a restart: resume each job that was running, or fail it with the reason."""
        for job in self._store.running():
            count = self._store.mark_resumed(job.id)
            if count > MAX_RESUMES:
                self._fail(job.id, f"interrupted {count} times by coordinator restarts; not resumed")
                continue
            if not job.app_sha256:
                self._fail(job.id, "started by an earlier coordinator version that cannot resume it; start it again")
                continue
            done = checkpoints.latest_round(self.job_dir(job.id))
            self._store.drop_rounds_after(job.id, done)  # rounds after the checkpoint run again
            self._store.set_resumed_from(job.id, done)
            log.info("resuming training job %s after a coordinator restart (from round %d)", job.id, done)
            self._audit("coordinator", "training.resume", job.id, attempt=count, from_round=done)
            self._spawn(job.id)

    def shutdown(self) -> None:
        """Stop every job process; their jobs stay running and resume on the next start."""
        self._shutting_down = True
        with self._lock:
            job_ids = list(self._processes)
        for job_id in job_ids:
            self._terminate(job_id)

    # --- job-process side --------------------------------------------------------------

    def check_token(self, job_id: str, token: str) -> Job:
        with self._lock:
            process = self._processes.get(job_id)
        if process is None or not hmac.compare_digest(process.token, token):
            raise errors.PermissionDenied(f"no running process of job {job_id} holds that token")
        job = self._store.get(job_id, with_rounds=False)
        if job.state != "running":
            raise errors.FailedPrecondition(f"job {job_id} is {job.state}")
        return job

    def describe_run(self, job: Job) -> tuple[str, str]:
        """(the app bundle's path relative to the data directory, the ServerApp reference)."""
        if self._apps is None:
            raise errors.FailedPrecondition("this coordinator runs without the app registry")
        app = self._apps.get(job.spec.app, job.app_version)
        if app.sha256 != job.app_sha256:
            raise errors.FailedPrecondition(
                f"app {app.ref} changed since job {job.id} started (sha256 {job.app_sha256[:12]}, now "
                f"{app.sha256[:12]}); start the job again"
            )
        return str(self._apps.blob_path(app.sha256).relative_to(self._root)), app.serverapp

    def nodes(self, job: Job) -> list[tuple[int, str]]:
        return [(node_id(name), name) for name in self._chosen(job.spec) if self._hub.is_connected(name)]

    def _chosen(self, spec: JobSpec) -> list[str]:
        """The enrolled, unrevoked sites the job's selectors pick (the same syntax as queries)."""
        return site_selector.choose(self._sites.list_sites(), [site_selector.parse(s) for s in spec.sites])

    def exchange(self, job: Job, site: str, message: bytes, timeout_s: float) -> bytes:
        chosen = site_selector.choose([self._sites.get_site(site)], [site_selector.parse(s) for s in job.spec.sites])
        if not chosen or not self._hub.is_connected(site):
            raise errors.FailedPrecondition(f"site {site} is not a connected site of job {job.id}")
        task = pb.FlowerTask()
        task.CopyFrom(self._task_template(job))
        task.message, task.node_id, task.timeout_s = message, node_id(site), timeout_s
        future = self._hub.request(site, flower=task)
        try:
            return future.result(timeout_s).flower.message
        except concurrent.futures.TimeoutError:
            raise errors.DeadlineExceeded(f"site {site} did not answer within {timeout_s:.0f} s") from None

    def _task_template(self, job: Job) -> pb.FlowerTask:
        with self._lock:
            template = self._tasks.get(job.id)
        if template is None:
            builtin = self._apps is not None and self._apps.get(job.spec.app, job.app_version).builtin
            template = pb.FlowerTask(
                job_id=job.id,
                app=job.spec.app,
                dataset=job.spec.dataset,
                run_id=node_id(job.id),
                # Built-in apps: the sites run their own copy of the code, whatever its version.
                app_version="" if builtin else job.app_version,
                app_sha256="" if builtin else job.app_sha256,
                run_config=config_to_proto(job.run_config),
            )
            with self._lock:
                self._tasks[job.id] = template
        return template

    def record_round(self, job: Job, record: RoundRecord, privacy: tuple[float, float] | None = None) -> None:
        if record.round < 1 or record.round > 1_000_000:
            raise errors.InvalidArgument(f"round {record.round} is out of range")
        self._store.record_round(job.id, record)
        if privacy is not None and all(math.isfinite(v) and v >= 0 for v in privacy):
            self._store.set_privacy(job.id, *privacy)

    def publish(self, job: Job, model_path: str, name: str, description: str) -> str:
        if self._register_model is None:
            raise errors.FailedPrecondition("this coordinator runs without the model registry")
        path = self._job_file(job, model_path)
        model = self._register_model(job, path, name, description)
        self._store.add_published_model(job.id, model)
        self._audit("coordinator", "training.publish", job.id, model=model)
        return model

    def fail(self, job: Job, reason: str) -> Job:
        return self._fail(job.id, reason)

    def finish(self, job: Job, model_path: str) -> Job:
        model = ""
        if model_path:
            model = self.publish(job, model_path, "", "")
        done = self._store.finish(job.id, "completed", model=model)
        self._audit("coordinator", "training.complete", job.id, model=done.model, rounds=len(done.rounds))
        self._ended(done)
        return done

    def _job_file(self, job: Job, relative: str) -> Path:
        path = (self._root / relative).resolve()
        if not path.is_relative_to(self.job_dir(job.id).resolve()) or not path.is_file():
            raise errors.InvalidArgument(f"the model must be a file in training/{job.id}/")
        return path

    def _fail(self, job_id: str, reason: str) -> Job:
        job = self._store.finish(job_id, "failed", reason)
        if job.error == reason:  # not already ended otherwise
            self._audit("coordinator", "training.fail", job_id, reason=reason[:500])
            log.info("training job %s failed: %s", job_id, reason)
        self._ended(job)
        return job

    def _ended(self, job: Job) -> None:
        """Tell the job's sites it ended (best effort), so they drop its ClientApp state."""
        with self._lock:
            self._tasks.pop(job.id, None)
        try:
            sites = [s for s in self._chosen(job.spec) if self._hub.is_connected(s)]
        except errors.SiloError:
            return
        for site in sites:
            try:
                self._hub.request(site, end_flower_job=pb.EndFlowerJob(job_id=job.id)).add_done_callback(
                    lambda f: f.exception()  # an agent without the command, or gone: nothing to do
                )
            except errors.SiloError:
                pass

    # --- processes ---------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self._root / "training" / job_id

    def _timeout_s(self, job_id: str) -> float:
        spec = self._store.get(job_id, with_rounds=False).spec
        return spec.timeout_s or self._config.default_timeout_s

    def _spawn(self, job_id: str) -> None:
        token = secrets.token_urlsafe(32)
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SILOLINK_JOB_TOKEN": token,
            "SILOLINK_JOB_RUNNER": self.runner_address,
            "SILOLINK_JOB_ORPHAN_CHECK_S": str(self._config.orphan_check_s),
            "PYTHONUNBUFFERED": "1",  # `train logs --follow` sees output as it is written
        }
        timeout_s = self._timeout_s(job_id)
        with (job_dir / LOG_FILE).open("ab") as log_file:
            log_file.write(f"--- silolink: job process started at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log_file.flush()
            popen = subprocess.Popen(
                [sys.executable, "-m", "cloud_coordinator.training.runner", str(self._root), job_id],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        with self._lock:
            self._processes[job_id] = _Process(popen, token)
        threading.Thread(
            target=self._supervise, args=(job_id, popen, timeout_s), name=f"job-{job_id}", daemon=True
        ).start()

    def _supervise(self, job_id: str, popen: subprocess.Popen, timeout_s: float) -> None:
        try:
            code = popen.wait(timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            popen.kill()
            code = popen.wait()
        with self._lock:
            process = self._processes.get(job_id)
            stopping = process.stopping if process else True
            if process is not None and process.popen is popen:
                del self._processes[job_id]
        if self._shutting_down or stopping:
            return
        job = self._store.get(job_id, with_rounds=False)
        if job.state != "running":
            return
        if timed_out:
            reason = f"the ServerApp ran past the job's timeout of {timeout_s:g} s (--timeout) and was stopped"
        elif code < 0:
            reason = f"the job process was killed by signal {-code}; `{LOGS_COMMAND} {job_id}` shows its output"
        elif code:
            reason = f"the job process exited with code {code}; `{LOGS_COMMAND} {job_id}` shows why"
        else:
            reason = "the job process ended without finishing the job"
        self._fail(job_id, reason)

    def _terminate(self, job_id: str) -> None:
        with self._lock:
            process = self._processes.get(job_id)
            if process is None:
                return
            process.stopping = True
        process.popen.terminate()
        try:
            process.popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()

    # --- checks ------------------------------------------------------------------------

    def _check(self, spec: JobSpec) -> None:
        """What the request itself must get right (the app's settings are checked against it)."""
        if not NAME.match(spec.app or ""):
            raise errors.InvalidArgument(f"app {spec.app!r} is not a valid app name (e.g. tabular)")
        if not NAME.match(spec.dataset or ""):
            raise errors.InvalidArgument(f"dataset {spec.dataset!r} is not a valid dataset name")
        if spec.model_name and not NAME.match(spec.model_name):
            raise errors.InvalidArgument(f"model name {spec.model_name!r} is not valid")
        for key in spec.run_config:
            if not isinstance(key, str) or not 0 < len(key) <= 200:
                raise errors.InvalidArgument(f"run_config key {key!r} is not valid")
        # 0 is "unset" in the proto: the coordinator's [training] default_timeout_s applies.
        if spec.timeout_s != 0 and not 1 <= spec.timeout_s <= 30 * 24 * 3600:  # NaN fails the range too
            raise errors.InvalidArgument(
                "--timeout must be between 1 s and 30 days (or 0 for the coordinator's default)"
            )
        if spec.rounds and not 1 <= spec.rounds <= 10_000:
            raise errors.InvalidArgument("rounds must be between 1 and 10000")
