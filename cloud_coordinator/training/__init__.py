"""Federated training: users' Flower ServerApps, unchanged, over silolink's agent connections.

The operator API is mounted on the coordinator's mTLS port; the job processes reach the
coordinator through a JobRunnerService of their own on loopback (token per process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    from silolink.identity import LOCAL
    from silolink.rpc.guard import fixed_authenticator
    from silolink.rpc.server import bind, build_server

    from .jobs import KIND, JobService
    from .servicer import JobRunnerServicer, TrainingServicer, operator_mount, runner_mount
    from .store import JobStore

    def register(job, path, name: str, description: str) -> str:
        """Push a model the job produced into the registry (signed), under the job's provenance."""
        registry = getattr(coordinator, "registry", None)
        if registry is None:  # a coordinator built without the registry capability
            return f"file:{path.relative_to(coordinator.layout.root)}"
        spec = job.spec
        version = registry.push_file(
            path,
            name or spec.model_name or f"{spec.dataset}-{spec.app}",
            description=description
            or f"trained by job {job.id}: app {spec.app}:{job.app_version} on "
            f"{spec.dataset}, sites {', '.join(spec.sites)}",
            creator=f"job:{job.id}",
            source_job=job.id,
        )
        return f"{version.name}:{version.version}"

    jobs = JobService(
        JobStore(coordinator.db),
        coordinator.sites,
        coordinator.hub,
        coordinator.layout.root,
        coordinator.audit.record,
        register,
        getattr(coordinator, "apps", None),
        coordinator.config.training,
        queue=getattr(coordinator, "queue", None),
        studies=getattr(coordinator, "studies", None),
    )
    runner_server, _ = build_server(
        [runner_mount(JobRunnerServicer(jobs))],
        fixed_authenticator(LOCAL),
        max_workers=64,
        max_message_bytes=coordinator.config.max_message_bytes,
    )
    port = bind(runner_server, "127.0.0.1:0", None)
    runner_server.start()
    jobs.runner_address = f"127.0.0.1:{port}"
    coordinator.training = jobs
    jobs.resume_all()
    if jobs.queue is not None:  # from now on the queue places training jobs
        jobs.queue.register(KIND, jobs.launcher())

    # Job processes stop before the agents' streams close, so no job mistakes the
    # coordinator's own shutdown for its sites failing; their jobs resume on the next start.
    coordinator.on_stopping(jobs.shutdown)
    coordinator.on_stop(lambda: runner_server.stop(1).wait())
    return [operator_mount(TrainingServicer(jobs))]
