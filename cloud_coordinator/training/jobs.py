"""Training jobs at the coordinator: check, start, supervise, stop and resume them.

A job runs a published Flower app: its ServerApp, unchanged, in a process of its own
(Flower keeps the identity of the running task in process-wide state, and a failing or
hanging user app must never take the coordinator down). That process reaches the sites
and reports its rounds, models and end through the coordinator's JobRunnerService on
loopback, authenticated by a one-time token per process; only the coordinator writes the
job's state. The process's stdout, stderr and logging go to the job's ``server.log``.

A job belongs to a study and goes through the coordinator's work queue
(``cloud_coordinator.scheduling``): ``start`` authorizes the caller in the study, submits
what the job needs at each site and returns the job ``queued``; when the queue places it,
the sites that accepted the offer are the job's nodes, exactly, and the job process starts.
When the job ends the queue releases its sites.

A coordinator restart resumes running jobs: the job process starts again and the
ServerApp continues from its last checkpointed round (see ``observe`` and
``silolink.serverapp``); the queue keeps their reservations and the queued jobs.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from silolink import errors
from silolink.config import CoordinatorTrainingConfig
from silolink.gen.training.v1 import training_pb2 as pb
from silolink.identity import Identity
from silolink.protos import config_to_proto

from ..control.hub import ControlHub
from ..scheduling.model import GIB, JobNeeds
from ..scheduling.service import Launcher, Offer
from ..sites import selector as site_selector
from ..sites.service import SiteService
from . import checkpoints, runconfig
from .store import FINAL, Job, JobSpec, JobStore, RoundRecord

if TYPE_CHECKING:
    from ..apps.registry import AppRegistry
    from ..scheduling.service import WorkQueue
    from ..studies.service import StudyService

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
MAX_RESUMES = 3
STOP_GRACE_S = 5.0
LOG_FILE = "server.log"
MAX_LOG_READ = 1 << 20
LOGS_COMMAND = "cloud-coordinator train logs"
EXIT_ORPHANED = 75  # the job process found its coordinator gone (it wrote nothing)
KIND = "training"  # the work queue's name for this capability's jobs
DEFAULT_STUDY = "default"
DEFAULT_DURATION_S = 3600.0
DEFAULT_DP_DELTA = 1e-5  # the built-in tabular app's accountant states its epsilon at this delta


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
        queue: WorkQueue | None = None,
        studies: StudyService | None = None,
    ) -> None:
        self._store = store
        self._sites = sites
        self._hub = hub
        self._root = root
        self._audit = record_audit
        self._register_model = register_model
        self._apps = apps
        self._config = config or CoordinatorTrainingConfig()
        self.queue = queue  # the work queue: jobs wait there until their sites have room
        self._studies = studies
        self._processes: dict[str, _Process] = {}
        self._tasks: dict[str, pb.FlowerTask] = {}  # job id -> what every FlowerTask of the job carries
        self._lock = threading.Lock()
        self._admission = threading.Lock()
        self._shutting_down = False
        self.runner_address = ""  # set once the runner service listens

    # --- operator side ---------------------------------------------------------------

    def start(self, spec: JobSpec, caller: Identity | str) -> Job:
        """Check the job, authorize ``caller`` in its study and queue it: the job as queued,
        with its place. FailedPrecondition at once if too few sites match or no sites could
        ever hold it."""
        actor = str(caller)
        self._check(spec)
        if self._apps is None:
            raise errors.FailedPrecondition("this coordinator runs without the app registry; no job can start")
        app = self._apps.resolve(spec.app, spec.app_version or None)
        config = runconfig.effective(app.ref, app.config, spec)
        if app.builtin:
            runconfig.check_tabular(config)
            if spec.privacy_noise_multiplier:
                raise errors.InvalidArgument(
                    f"app {app.ref} declares its differential privacy itself (--dp-noise, --dp-clip and --rounds); "
                    "--privacy-noise is for apps of your own"
                )
        study = DEFAULT_STUDY
        if self._studies is not None and not isinstance(caller, str):
            study = self._studies.authorize(spec.study, caller, "analyst")
        elif spec.study and spec.study != DEFAULT_STUDY:
            raise errors.FailedPrecondition("this coordinator runs without studies; leave --study out")
        min_sites = spec.min_sites or config.get("min-sites", 1)
        min_sites = max(1, min_sites if isinstance(min_sites, int) else 1)
        matched = self._chosen(spec)
        inside, outside = self._studies.scope(study, matched) if self._studies is not None else (matched, [])
        if len(inside) < min_sites:
            which = ", ".join(inside) or "none"
            left_out = f"; not in study {study!r}: {', '.join(outside)}" if outside else ""
            raise errors.FailedPrecondition(
                f"only {len(inside)} enrolled site(s) match {', '.join(spec.sites)} ({which}){left_out}; "
                f"the job needs at least {min_sites} (--min-sites)"
            )
        job_id = uuid.uuid4().hex[:12]
        spec = replace(spec, study=study)
        job = self._store.create(job_id, spec, actor, app.version, app.sha256, config)
        # Held until the job is audited as started, so its placement is never recorded first.
        with self._admission:
            if self.queue is None:  # a coordinator built without the work queue: start at once
                self._store.placed(job_id, inside)
                self._spawn(job_id)
            else:
                needs = self.needs(job_id, spec, min_sites, inside)
                try:
                    self.queue.submit(KIND, needs, Offer(spec.dataset, spec.app))
                except errors.SiloError:
                    self._store.delete_unstarted(job_id)  # refused at once: the job never existed
                    raise
            self._audit(actor, "training.start", job_id, app=app.ref, sha256=app.sha256, dataset=spec.dataset,
                        sites=list(spec.sites), run_config=sorted(config), study=study)  # fmt: skip
        return self.get(job.id)

    @staticmethod
    def needs(job_id: str, spec: JobSpec, min_sites: int, sites: list[str]) -> JobNeeds:
        """What the queue reserves for the job at each site it runs on.

        A job that declares no CPU, memory or GPUs: in the default study it reserves none
        (it starts as soon as its sites are online, as before studies existed); in any other
        study it reserves 1 CPU and 1 GiB, so a site's share for the study is kept.
        """
        declared = bool(spec.cpu or spec.memory_bytes or spec.gpus)
        default = spec.study in ("", DEFAULT_STUDY)
        cpu = spec.cpu or (0.0 if default and not declared else 1.0)
        memory = spec.memory_bytes or (0 if default and not declared else GIB)
        return JobNeeds(
            job_id, spec.study or DEFAULT_STUDY, cpu=cpu, memory_bytes=memory, gpus=spec.gpus,
            duration_s=spec.expected_duration_s or DEFAULT_DURATION_S, min_sites=min_sites,
            max_sites=spec.max_sites, priority=spec.priority, sites=tuple(sites),
        )  # fmt: skip

    def launcher(self) -> Launcher:
        """How the work queue starts a placed training job and fails one it cannot keep."""
        return Launcher(self._launch, self._queue_failed)

    def _launch(self, job_id: str, sites: list[str]) -> None:
        """The queue placed the job on ``sites`` (each said yes): run its process against them."""
        with self._admission:
            job = self._store.placed(job_id, sites)
        self._audit("coordinator", "training.place", job_id, study=job.spec.study, sites=sites)
        log.info("training job %s placed on %s", job_id, ", ".join(sites))
        self._spawn(job_id)

    def _queue_failed(self, job_id: str, reason: str) -> None:
        """The queue gave up on the job (its sites left the study, or none can hold it any more)."""
        threading.Thread(target=self._terminate, args=(job_id,), name=f"stop-{job_id}", daemon=True).start()
        self._fail(job_id, reason)

    def stop(self, job_id: str, actor: str) -> Job:
        job = self._store.get(job_id, with_rounds=False)
        if job.state in FINAL:
            raise errors.FailedPrecondition(f"job {job_id} is already {job.state}")
        job = self._store.finish(job_id, "stopped", error=f"stopped by {actor}")
        self._audit(actor, "training.stop", job_id)
        self._terminate(job_id)
        return self._ended(job)

    def get(self, job_id: str) -> Job:
        return self._with_queue([self._store.get(job_id)])[0]

    def list(self) -> list[Job]:
        return self._with_queue(self._store.list())

    def page(self, state: str, dataset: str, offset: int, limit: int | None) -> tuple[list[Job], int, dict[str, int]]:
        jobs, total, counts = self._store.page(state, dataset, offset, limit)
        return self._with_queue(jobs), total, counts

    def _with_queue(self, jobs: list[Job]) -> list[Job]:
        """Queued jobs with their place in the queue and why they wait; running ones with the
        sites they hold now."""
        if self.queue is None:
            return jobs
        places = self.queue.positions([job.id for job in jobs if job.state == "queued"])
        return [self._placed(job, places) for job in jobs]

    def _placed(self, job: Job, places: dict[str, tuple[int, str]]) -> Job:
        if job.state == "queued":
            found = places.get(job.id)
            if found is not None:
                return replace(job, queue_position=found[0], queue_reason=found[1])
            return replace(job, queue_reason="its sites are being asked whether they take it")
        if job.state == "running":
            held = self.queue.placement(job.id)
            if held is not None and list(held) != job.placed_sites:
                return replace(job, placed_sites=list(held))
        return job

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
        return data, next_offset, job.state in FINAL and next_offset >= size

    def resume_all(self) -> None:
        """After a restart: queued jobs wait on (the queue kept them); resume each job that was
        running, or fail it with the reason."""
        kept = self.queue.known() if self.queue is not None else set()
        for job in self._store.queued():
            if job.id not in kept:
                self._fail(
                    job.id, "the work queue lost this job (the coordinator stopped as it was queued); start it again"
                )
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
        """The job's connected sites: those the queue placed it on (and still holds)."""
        return [(node_id(name), name) for name in self._sites_of(job) if self._hub.is_connected(name)]

    def _sites_of(self, job: Job) -> list[str]:
        held = self.queue.placement(job.id) if self.queue is not None else None
        if held is not None:
            return list(held)
        if not job.spec.study:  # started before the work queue existed: every site it selects
            return self._chosen(job.spec)
        return job.placed_sites

    def _chosen(self, spec: JobSpec) -> list[str]:
        """The enrolled, unrevoked sites the job's selectors pick (the same syntax as queries)."""
        return site_selector.choose(self._sites.list_sites(), [site_selector.parse(s) for s in spec.sites])

    def exchange(self, job: Job, site: str, message: bytes, timeout_s: float) -> bytes:
        if site not in self._sites_of(job) or not self._hub.is_connected(site):
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
                study=job.spec.study or DEFAULT_STUDY,
            )
            noise, rounds, delta = privacy_declared(job, builtin)
            if noise > 0:
                template.dp_noise_multiplier, template.dp_rounds, template.dp_delta = noise, rounds, delta
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
        return replace(done, placed_sites=self._ended(done).placed_sites)

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
        return self._ended(job)

    def _ended(self, job: Job) -> Job:
        """Release the job's place in the queue; tell its sites it ended (best effort), so they
        drop its ClientApp state. The job as it ended, with the sites it held last."""
        with self._lock:
            self._tasks.pop(job.id, None)
        try:
            sites = self._sites_of(job)
        except errors.SiloError:
            sites = []
        if self.queue is not None and not self._shutting_down:
            if job.spec.study and sites != job.placed_sites:  # a site left its study mid-job
                self._store.set_placed_sites(job.id, sites)
                job = replace(job, placed_sites=sites)
            self.queue.finish(job.id)
        sites = [s for s in sites if self._hub.is_connected(s)]
        for site in sites:
            try:
                self._hub.request(site, end_flower_job=pb.EndFlowerJob(job_id=job.id)).add_done_callback(
                    lambda f: f.exception()  # an agent without the command, or gone: nothing to do
                )
            except errors.SiloError:
                pass
        return job

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
        self._start_at_sites(job_id)

    def _start_at_sites(self, job_id: str) -> None:
        """Have the job's sites start its ClientApp while its ServerApp starts (best effort).

        A site's first message of a job would otherwise wait for the site to fork the job's
        worker and import the app (0.3-1 s each, more on a busy host), and that wait would land
        in the job's first round. A site that refuses refuses the job's first message the same
        way, where the operator sees it."""
        try:
            job = self._store.get(job_id, with_rounds=False)
            template = self._task_template(job)
            sites = [s for s in self._sites_of(job) if self._hub.is_connected(s)]  # only where it was placed
        except errors.SiloError as e:
            log.debug("job %s: sites not told to start its ClientApp: %s", job_id, e.message)
            return
        for site in sites:
            task = pb.FlowerTask()
            task.CopyFrom(template)
            task.node_id = node_id(site)
            try:
                future = self._hub.request(site, start_flower_job=pb.StartFlowerJob(task=task))
            except errors.SiloError:
                continue
            future.add_done_callback(lambda f: f.exception())  # an older agent, or gone: its first message starts it

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
        if not (0 <= spec.cpu <= 100_000 and 0 <= spec.gpus <= 1024 and 0 <= spec.memory_bytes <= 1 << 50):
            raise errors.InvalidArgument("--cpu, --memory and --gpus must be >= 0 (and at most one big host's)")
        if not 0 <= spec.expected_duration_s <= 30 * 24 * 3600:
            raise errors.InvalidArgument("--duration must be between 0 (one hour) and 30 days")
        if spec.max_sites and spec.min_sites and spec.max_sites < spec.min_sites:
            raise errors.InvalidArgument(f"--max-sites {spec.max_sites} is below --min-sites {spec.min_sites}")
        if spec.privacy_noise_multiplier or spec.privacy_rounds:
            if not (spec.privacy_noise_multiplier > 0 and 1 <= spec.privacy_rounds <= 100_000):
                raise errors.InvalidArgument(
                    "a job that declares differential privacy gives both --privacy-noise (> 0) and "
                    "--privacy-rounds (1 to 100000)"
                )
            if not 0 <= spec.privacy_delta < 1:
                raise errors.InvalidArgument("--privacy-delta must be between 0 (1e-5) and 1")


def privacy_declared(job: Job, builtin: bool) -> tuple[float, int, float]:
    """(noise multiplier, rounds, delta) of the job's differential privacy; noise 0 without DP.

    The built-in tabular app adds Gaussian noise when its run_config's ``dp-noise`` is above
    0, once per round (``num-server-rounds``), its accountant stating epsilon at 1e-5; an app
    of the user's declares its own (``--privacy-noise``, ``--privacy-rounds``)."""
    spec = job.spec
    if spec.privacy_noise_multiplier > 0:
        return spec.privacy_noise_multiplier, spec.privacy_rounds, spec.privacy_delta or DEFAULT_DP_DELTA
    if builtin:
        noise = job.run_config.get("dp-noise", 0.0)
        rounds = job.run_config.get("num-server-rounds", 0)
        if isinstance(noise, int | float) and noise > 0 and isinstance(rounds, int) and rounds > 0:
            return float(noise), rounds, DEFAULT_DP_DELTA
    return 0.0, 0, 0.0
