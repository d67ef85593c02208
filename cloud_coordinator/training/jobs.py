"""Training jobs at the coordinator: check, start, supervise, stop and resume them.

Each job's rounds run in a process of its own (Flower keeps the identity of the running
task in process-wide state, and a failing strategy must not take the coordinator down).
That process reaches the sites through the coordinator's JobRunnerService on loopback,
authenticated by a one-time token per process, and records rounds in the shared database.
A coordinator restart resumes running jobs from their last completed round.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from silolink import errors, softmax
from silolink.gen.training.v1 import training_pb2 as pb

from ..control.hub import ControlHub
from ..sites import selector as site_selector
from ..sites.service import SiteService
from .store import Job, JobSpec, JobStore

log = logging.getLogger(__name__)
STRATEGIES = ("fedavg", "fedprox", "fedadam")
MAX_ROUND_TIMEOUT_S = 7 * 24 * 3600
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
MAX_RESUMES = 3
STOP_GRACE_S = 5.0


def node_id(site: str) -> int:
    """A stable Flower node id for a site name."""
    return int.from_bytes(hashlib.sha256(site.encode()).digest()[:8], "big") >> 1


@dataclass
class _Process:
    popen: subprocess.Popen
    token: str
    stopping: bool = False


class JobService:
    def __init__(
        self,
        store: JobStore,
        sites: SiteService,
        hub: ControlHub,
        root: Path,
        record_audit: Callable[..., object],
        register_model: Callable[[Job, Path], str] | None,
    ) -> None:
        self._store = store
        self._sites = sites
        self._hub = hub
        self._root = root
        self._audit = record_audit
        self._register_model = register_model
        self._processes: dict[str, _Process] = {}
        self._lock = threading.Lock()
        self._shutting_down = False
        self.runner_address = ""  # set once the runner service listens

    # --- operator side ---------------------------------------------------------------

    def start(self, spec: JobSpec, actor: str) -> Job:
        self._check(spec)
        job_id = uuid.uuid4().hex[:12]
        job = self._store.create(job_id, spec, actor)
        self._audit(actor, "training.start", job_id, app=spec.app, dataset=spec.dataset, sites=list(spec.sites))
        self._spawn(job_id)
        return job

    def stop(self, job_id: str, actor: str) -> Job:
        job = self._store.get(job_id, with_rounds=False)
        if job.state != "running":
            raise errors.FailedPrecondition(f"job {job_id} is already {job.state}")
        job = self._store.finish(job_id, "stopped", error=f"stopped by {actor}")
        self._audit(actor, "training.stop", job_id)
        self._terminate(job_id)
        return job

    def get(self, job_id: str) -> Job:
        return self._store.get(job_id)

    def list(self) -> list[Job]:
        return self._store.list()

    def resume_all(self) -> None:
        """After a restart: resume each job that was running, or fail it with the reason."""
        for job in self._store.running():
            count = self._store.mark_resumed(job.id)
            if count > MAX_RESUMES:
                self._store.finish(job.id, "failed", f"interrupted {count} times by coordinator restarts; not resumed")
                continue
            log.info("resuming training job %s after a coordinator restart", job.id)
            self._audit("coordinator", "training.resume", job.id, attempt=count)
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

    def nodes(self, job: Job) -> list[tuple[int, str]]:
        return [(node_id(name), name) for name in self._chosen(job.spec) if self._hub.is_connected(name)]

    def _chosen(self, spec: JobSpec) -> list[str]:
        """The enrolled, unrevoked sites the job's selectors pick (the same syntax as queries)."""
        return site_selector.choose(self._sites.list_sites(), [site_selector.parse(s) for s in spec.sites])

    def exchange(self, job: Job, site: str, message: bytes, timeout_s: float) -> bytes:
        chosen = site_selector.choose([self._sites.get_site(site)], [site_selector.parse(s) for s in job.spec.sites])
        if not chosen or not self._hub.is_connected(site):
            raise errors.FailedPrecondition(f"site {site} is not a connected site of job {job.id}")
        task = pb.FlowerTask(
            job_id=job.id,
            app=job.spec.app,
            dataset=job.spec.dataset,
            message=message,
            run_id=node_id(job.id),
            node_id=node_id(site),
        )
        future = self._hub.request(site, flower=task)
        try:
            return future.result(timeout_s).flower.message
        except concurrent.futures.TimeoutError:
            raise errors.DeadlineExceeded(f"site {site} did not answer within {timeout_s:.0f} s") from None

    def finish(self, job: Job, model_path: str) -> Job:
        path = (self._root / model_path).resolve()
        if not path.is_relative_to(self._root / "training" / job.id) or not path.is_file():
            raise errors.InvalidArgument(f"the model must be a file in training/{job.id}/")
        model = self._register_model(job, path) if self._register_model else f"file:{model_path}"
        done = self._store.finish(job.id, "completed", model=model)
        self._audit("coordinator", "training.complete", job.id, model=model, rounds=len(done.rounds))
        return done

    # --- processes ---------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self._root / "training" / job_id

    def _spawn(self, job_id: str) -> None:
        token = secrets.token_urlsafe(32)
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SILOLINK_JOB_TOKEN": token,
            "SILOLINK_JOB_RUNNER": self.runner_address,
        }
        with (job_dir / "runner.log").open("ab") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "cloud_coordinator.training.runner", str(self._root), job_id],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        with self._lock:
            self._processes[job_id] = _Process(popen, token)
        threading.Thread(target=self._supervise, args=(job_id, popen), name=f"job-{job_id}", daemon=True).start()

    def _supervise(self, job_id: str, popen: subprocess.Popen) -> None:
        code = popen.wait()
        with self._lock:
            process = self._processes.get(job_id)
            stopping = process.stopping if process else True
            if process is not None and process.popen is popen:
                del self._processes[job_id]
        if self._shutting_down or stopping:
            return
        job = self._store.get(job_id, with_rounds=False)
        if job.state == "running":
            reason = (
                f"the job process exited with code {code}; see training/{job_id}/runner.log"
                if code
                else "the job process ended without finishing the job"
            )
            self._store.finish(job_id, "failed", reason)
            self._audit("coordinator", "training.fail", job_id, reason=reason)

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
        if not NAME.match(spec.app or ""):
            raise errors.InvalidArgument(f"app {spec.app!r} is not a valid app name (e.g. tabular)")
        if not NAME.match(spec.dataset or ""):
            raise errors.InvalidArgument(f"dataset {spec.dataset!r} is not a valid dataset name")
        if spec.model_name and not NAME.match(spec.model_name):
            raise errors.InvalidArgument(f"model name {spec.model_name!r} is not valid")
        if spec.strategy not in STRATEGIES:
            raise errors.InvalidArgument(f"strategy {spec.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not 1 <= spec.rounds <= 10_000:
            raise errors.InvalidArgument("rounds must be between 1 and 10000")
        if spec.min_sites < 1:
            raise errors.InvalidArgument("min-sites must be at least 1")
        if spec.round_timeout_s <= 0 or spec.learning_rate <= 0 or spec.local_epochs < 1:
            raise errors.InvalidArgument("round timeout, learning rate and local epochs must be positive")
        if spec.round_timeout_s > MAX_ROUND_TIMEOUT_S:  # beyond this, the job process's waits overflow
            raise errors.InvalidArgument(f"the round timeout must be at most {MAX_ROUND_TIMEOUT_S} s (7 days)")
        if spec.dp_noise_multiplier < 0 or (spec.dp_noise_multiplier > 0 and spec.dp_clipping_norm <= 0):
            raise errors.InvalidArgument("differential privacy needs a noise multiplier >= 0 and a clipping norm > 0")
        if spec.secure_aggregation and (spec.strategy != "fedavg" or spec.dp_noise_multiplier > 0):
            raise errors.InvalidArgument("secure aggregation runs with --strategy fedavg and without --dp-noise")
        if spec.secure_aggregation and spec.min_sites < 3:
            raise errors.InvalidArgument(
                "secure aggregation needs --min-sites 3 or more: with two sites each could work out the other's "
                "update from the sum"
            )
        if len(spec.hidden_units) > softmax.MAX_HIDDEN_LAYERS or not all(
            1 <= units <= softmax.MAX_HIDDEN_UNITS for units in spec.hidden_units
        ):
            raise errors.InvalidArgument(
                f"hidden layers {list(spec.hidden_units)}: give at most {softmax.MAX_HIDDEN_LAYERS} layers "
                f"of 1 to {softmax.MAX_HIDDEN_UNITS} units (e.g. --hidden 32)"
            )
        matched = self._chosen(spec)
        if len(matched) < spec.min_sites:
            which = ", ".join(matched) or "none"
            raise errors.FailedPrecondition(
                f"only {len(matched)} enrolled site(s) match {', '.join(spec.sites)} ({which}); "
                f"the job needs at least {spec.min_sites} (--min-sites)"
            )
