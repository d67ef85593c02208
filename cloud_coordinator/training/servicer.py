"""TrainingService (operators) and JobRunnerService (the coordinator's job processes)."""

from __future__ import annotations

import grpc

from silolink import errors
from silolink.gen.training.v1 import training_pb2 as pb
from silolink.gen.training.v1 import training_pb2_grpc
from silolink.identity import Role
from silolink.protos import timestamp
from silolink.rpc.guard import current_identity
from silolink.rpc.server import ServiceMount

from .jobs import JobService
from .store import Job, JobSpec

STATE_TO_PROTO = {
    "running": pb.JOB_STATE_RUNNING,
    "completed": pb.JOB_STATE_COMPLETED,
    "failed": pb.JOB_STATE_FAILED,
    "stopped": pb.JOB_STATE_STOPPED,
}
DEFAULTS = JobSpec(app="", dataset="", sites=(), rounds=0)


def spec_from_proto(spec: pb.JobSpec) -> JobSpec:
    return JobSpec(
        app=spec.app,
        dataset=spec.dataset,
        sites=tuple(spec.sites),
        rounds=spec.rounds,
        strategy=spec.strategy or DEFAULTS.strategy,
        min_sites=spec.min_sites or DEFAULTS.min_sites,
        round_timeout_s=spec.round_timeout_s or DEFAULTS.round_timeout_s,
        local_epochs=spec.local_epochs or DEFAULTS.local_epochs,
        learning_rate=spec.learning_rate or DEFAULTS.learning_rate,
        proximal_mu=spec.proximal_mu,
        server_learning_rate=spec.server_learning_rate or DEFAULTS.server_learning_rate,
        dp_noise_multiplier=spec.dp_noise_multiplier,
        dp_clipping_norm=spec.dp_clipping_norm,
        model_name=spec.model_name,
        secure_aggregation=spec.secure_aggregation,
        hidden_units=tuple(spec.hidden_units),
    )


def job_to_proto(job: Job) -> pb.Job:
    spec = job.spec
    return pb.Job(
        id=job.id,
        spec=pb.JobSpec(
            app=spec.app,
            dataset=spec.dataset,
            sites=spec.sites,
            rounds=spec.rounds,
            strategy=spec.strategy,
            min_sites=spec.min_sites,
            round_timeout_s=spec.round_timeout_s,
            local_epochs=spec.local_epochs,
            learning_rate=spec.learning_rate,
            proximal_mu=spec.proximal_mu,
            server_learning_rate=spec.server_learning_rate,
            dp_noise_multiplier=spec.dp_noise_multiplier,
            dp_clipping_norm=spec.dp_clipping_norm,
            model_name=spec.model_name,
            secure_aggregation=spec.secure_aggregation,
            hidden_units=spec.hidden_units,
        ),
        state=STATE_TO_PROTO[job.state],
        rounds=[
            pb.RoundRecord(
                round=r.round,
                participants=r.participants,
                excluded=[pb.Exclusion(site=e["site"], reason=e["reason"]) for e in r.excluded],
                train_metrics=r.train_metrics,
                eval_metrics=r.eval_metrics,
                duration_s=r.duration_s,
            )
            for r in job.rounds
        ],
        error=job.error,
        model=job.model,
        dp_epsilon=job.dp_epsilon or 0.0,
        dp_delta=job.dp_delta or 0.0,
        created_by=job.created_by,
        created_at=timestamp(job.created_at),
        updated_at=timestamp(job.updated_at),
        resumed=job.resumed,
    )


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    def StartJob(self, request: pb.StartJobRequest, context: grpc.ServicerContext):
        job = self._jobs.start(spec_from_proto(request.spec), actor=str(current_identity()))
        return pb.StartJobResponse(job=job_to_proto(job))

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext):
        return pb.GetJobResponse(job=job_to_proto(self._jobs.get(request.id)))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext):
        return pb.ListJobsResponse(jobs=[job_to_proto(j) for j in self._jobs.list()])

    def StopJob(self, request: pb.StopJobRequest, context: grpc.ServicerContext):
        return pb.StopJobResponse(job=job_to_proto(self._jobs.stop(request.id, actor=str(current_identity()))))


class JobRunnerServicer(training_pb2_grpc.JobRunnerServiceServicer):
    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    def ListNodes(self, request: pb.ListNodesRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        return pb.ListNodesResponse(nodes=[pb.Node(node_id=n, site=s) for n, s in self._jobs.nodes(job)])

    def Exchange(self, request: pb.ExchangeRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        if request.timeout_s <= 0:
            raise errors.InvalidArgument("timeout_s must be positive")
        return pb.ExchangeResponse(message=self._jobs.exchange(job, request.site, request.message, request.timeout_s))

    def FinishJob(self, request: pb.FinishJobRequest, context: grpc.ServicerContext):
        job = self._jobs.check_token(request.job_id, request.token)
        return pb.FinishJobResponse(job=job_to_proto(self._jobs.finish(job, request.model_path)))


def operator_mount(servicer: TrainingServicer) -> ServiceMount:
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["TrainingService"].full_name,
        register=lambda server: training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server),
        rules={
            "StartJob": {Role.OPERATOR},
            "StopJob": {Role.OPERATOR},
            "GetJob": {Role.VIEWER},
            "ListJobs": {Role.VIEWER},
        },
    )


def runner_mount(servicer: JobRunnerServicer) -> ServiceMount:
    return ServiceMount(
        name=pb.DESCRIPTOR.services_by_name["JobRunnerService"].full_name,
        register=lambda server: training_pb2_grpc.add_JobRunnerServiceServicer_to_server(servicer, server),
        rules={m: {Role.LOCAL} for m in ("ListNodes", "Exchange", "FinishJob")},
    )
