"""The operator's client for the coordinator's admin API (used by the CLI and the demo).

Operators authenticate with the operator certificate written by ``init``. On the
coordinator's host the data directory has it; elsewhere, the credentials file
(``operator/credentials.json``) copied from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from silolink import errors
from silolink.cli_util import iso
from silolink.gen.admin.v1 import admin_pb2, admin_pb2_grpc
from silolink.gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from silolink.gen.common.v1 import site_pb2
from silolink.gen.training.v1 import training_pb2, training_pb2_grpc
from silolink.protos import config_from_proto, config_to_proto, epoch, resources_to_dict, timestamp
from silolink.rpc.channels import Credentials, mtls_channel
from silolink.rpc.status import from_rpc_error

from .layout import CoordinatorLayout
from .sites.servicers import KIND_TO_PROTO

STATE_NAMES = {
    site_pb2.SITE_STATE_PENDING: "pending",
    site_pb2.SITE_STATE_ONLINE: "online",
    site_pb2.SITE_STATE_OFFLINE: "offline",
    site_pb2.SITE_STATE_REVOKED: "revoked",
}
KIND_NAMES = {v: k for k, v in KIND_TO_PROTO.items()}


# How an operator gets credentials, said whenever none are found.
FIX_CREDENTIALS = (
    "pass --credentials FILE with operator/credentials.json copied from the coordinator's data directory, "
    "or --data-dir DIR on the coordinator's host"
)


@dataclass(frozen=True)
class OperatorCredentials:
    address: str
    credentials: Credentials

    @classmethod
    def from_file(cls, path: Path, source: str = "--credentials", fix: str = FIX_CREDENTIALS) -> OperatorCredentials:
        """Read a credentials file; errors say where it was looked for (``source``) and ``fix``."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(
                data["coordinator"],
                Credentials(data["ca_pem"].encode(), data["cert_pem"].encode(), data["key_pem"].encode()),
            )
        except FileNotFoundError:
            raise errors.NotFound(f"no operator credentials at {path} (from {source}); {fix}") from None
        except OSError as e:
            raise errors.PermissionDenied(f"cannot read operator credentials at {path} ({e.strerror}); {fix}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise errors.InvalidArgument(
                f"{path} (from {source}) is not an operator credentials file ({type(e).__name__}: {e}); {fix}"
            ) from None

    @classmethod
    def resolve(
        cls, data_dir: Path | None = None, credentials_file: Path | None = None, coordinator: str | None = None
    ) -> OperatorCredentials:
        """Credentials from ``--credentials`` or ``--data-dir``; ``--coordinator`` overrides the address."""
        if credentials_file is not None:
            creds = cls.from_file(credentials_file, "--credentials or SILOLINK_OPERATOR_CREDENTIALS")
        elif data_dir is not None:
            layout = CoordinatorLayout(Path(data_dir))
            creds = cls.from_file(
                layout.operator_credentials,
                "--data-dir or SILOLINK_COORDINATOR_DATA_DIR",
                f"is {data_dir} the coordinator's data directory? (`cloud-coordinator init --data-dir {data_dir}` "
                "makes one), or use --credentials FILE",
            )
            if layout.endpoints.exists():  # a coordinator running here: use what it bound
                creds = cls(json.loads(layout.endpoints.read_text())["address"], creds.credentials)
        else:
            raise errors.InvalidArgument(
                "no operator credentials given (looked for --credentials / SILOLINK_OPERATOR_CREDENTIALS and "
                f"--data-dir / SILOLINK_COORDINATOR_DATA_DIR); {FIX_CREDENTIALS}"
            )
        return cls(coordinator, creds.credentials) if coordinator else creds


def site_to_dict(site: admin_pb2.Site) -> dict[str, Any]:
    return {
        "name": site.name,
        "kind": KIND_NAMES.get(site.kind, "unknown"),
        "tags": {t.key: t.value for t in site.tags},
        "state": STATE_NAMES.get(site.state, "unknown"),
        "last_heartbeat": iso(epoch(site, "last_heartbeat")),
        "version": site.version or None,
        "certificate_expires_at": iso(epoch(site, "certificate_expires_at")),
        "resources": resources_to_dict(site.resources),
    }


class _WithMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata to every call (the console's session, for the account it acts for)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details):
        return details._replace(metadata=(*(details.metadata or ()), *self._metadata))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    intercept_unary_stream = intercept_unary_unary

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    intercept_stream_stream = intercept_stream_unary


class OperatorClient:
    """Typed calls to the admin API; failures raise silolink.errors, never RpcError."""

    def __init__(
        self, creds: OperatorCredentials, timeout_s: float = 15.0, channel: grpc.Channel | None = None
    ) -> None:
        self.address = creds.address
        self.ca_pem = creds.credentials.ca_pem
        self._owns_channel = channel is None
        self.channel = channel if channel is not None else mtls_channel(creds.address, creds.credentials)
        self.timeout_s = timeout_s
        self._admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(self.channel)
        self._training = training_pb2_grpc.TrainingServiceStub(self.channel)
        self._creds = creds

    def acting_for(self, session: str) -> OperatorClient:
        """A client on the same connection whose calls carry ``session`` (the console's view of
        a logged-in account); closing it leaves the shared connection open."""
        channel = grpc.intercept_channel(self.channel, _WithMetadata((("silolink-session", session),)))
        return OperatorClient(self._creds, self.timeout_s, channel=channel)

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def call(self, method, request):
        """Call a stub method; map failures to typed errors naming the coordinator."""
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise from_rpc_error(e, peer=f"the coordinator at {self.address}") from None

    def add_site(
        self, name: str, kind: str, tags: dict[str, str] | None = None, token_ttl_s: int = 0
    ) -> dict[str, Any]:
        if kind not in KIND_TO_PROTO:
            raise errors.InvalidArgument(f"site kind must be hospital or factory, not {kind!r}")
        reply = self.call(
            self._admin.AddSite,
            admin_pb2.AddSiteRequest(
                name=name,
                kind=KIND_TO_PROTO[kind],
                tags=[site_pb2.Tag(key=k, value=v) for k, v in (tags or {}).items()],
                token_ttl_s=token_ttl_s,
            ),
        )
        return {
            "site": reply.site.name,
            "kind": kind,
            "token": reply.token,
            "ca_fingerprint": reply.ca_fingerprint,
            "expires_at": iso(epoch(reply, "expires_at")),
            "coordinator_address": reply.coordinator_address,
            "enroll_address": reply.enroll_address,
        }

    def list_sites(self) -> list[dict[str, Any]]:
        return [site_to_dict(s) for s in self.call(self._admin.ListSites, admin_pb2.ListSitesRequest()).sites]

    def find_sites(
        self,
        page_size: int,
        offset: int = 0,
        kind: str = "",
        state: str = "",
        tag: str = "",
        name_contains: str = "",
        certificate_expires_before: float | None = None,
    ) -> dict[str, Any]:
        """One page of the sites matching the filters (``tag`` is KEY or KEY=VALUE), with
        how many match and how many sites are in each state."""
        if kind and kind not in KIND_TO_PROTO:
            raise errors.InvalidArgument(f"site kind must be hospital or factory, not {kind!r}")
        states = {v: k for k, v in STATE_NAMES.items()}
        if state and state not in states:
            raise errors.InvalidArgument(f"site state must be one of {', '.join(states)}, not {state!r}")
        request = admin_pb2.ListSitesRequest(
            page_size=page_size,
            page_token=str(offset) if offset else "",
            kind=KIND_TO_PROTO.get(kind, 0),
            state=states.get(state, 0),
            name_contains=name_contains,
            certificate_expires_before=timestamp(certificate_expires_before),
        )
        if tag:
            key, _, value = tag.partition("=")
            request.tag.CopyFrom(site_pb2.Tag(key=key, value=value))
        reply = self.call(self._admin.ListSites, request)
        return {
            "sites": [site_to_dict(s) for s in reply.sites],
            "total": reply.total_size,
            "state_counts": {STATE_NAMES[c.state]: c.count for c in reply.state_counts if c.state in STATE_NAMES},
        }

    def get_site(self, name: str, history_after: float | None = None) -> dict[str, Any]:
        """One site, with its resource reports over time (``history``, oldest first; only
        those after ``history_after`` when given)."""
        reply = self.call(
            self._admin.GetSite, admin_pb2.GetSiteRequest(name=name, history_after=timestamp(history_after))
        )
        return {
            **site_to_dict(reply.site),
            "history": [
                {
                    "at": epoch(s, "at"),
                    "load_average_1m": s.load_average_1m,
                    "memory_total_bytes": s.memory_total_bytes,
                    "memory_available_bytes": s.memory_available_bytes,
                    "disk_free_bytes": s.disk_free_bytes,
                }
                for s in reply.resource_history
            ],
            "history_interval_s": reply.history_interval_s,
            "history_capacity": reply.history_capacity,
        }

    def revoke_site(self, name: str) -> dict[str, Any]:
        return site_to_dict(self.call(self._admin.RevokeSite, admin_pb2.RevokeSiteRequest(name=name)).site)

    def list_site_datasets(self, site: str) -> dict[str, Any]:
        """What ``site`` lets the coordinator know about its datasets (asked of the site now)."""
        reply = self.call(self._catalog.ListSiteDatasets, catalog_pb2.ListSiteDatasetsRequest(site=site))
        share = catalog_pb2.ShareLevel.Name(reply.share_level).removeprefix("SHARE_LEVEL_").lower()
        datasets = []
        for d in reply.datasets:
            item: dict[str, Any] = {"name": d.name}
            if d.columns:
                item["columns"] = [{"name": c.name, "type": c.type} for c in d.columns]
                item["label"] = d.label or None
            if d.HasField("row_count"):
                item["row_count"] = d.row_count
            datasets.append(item)
        return {"site": reply.site, "share": share, "datasets": datasets}

    def start_training(self, **spec: Any) -> dict[str, Any]:
        """Start a job; ``spec`` holds JobSpec fields (app, dataset, sites, rounds, ...), with
        ``run_config`` as a dict of overrides."""
        try:
            run_config = config_to_proto(spec.pop("run_config", None) or {})
            request = training_pb2.StartJobRequest(spec=training_pb2.JobSpec(**spec, run_config=run_config))
        except (TypeError, ValueError) as e:
            raise errors.InvalidArgument(f"bad training job settings: {e}") from None
        return job_to_dict(self.call(self._training.StartJob, request).job)

    def read_job_logs(self, job_id: str, offset: int = 0, max_bytes: int = 0) -> tuple[bytes, int, bool]:
        """(output of the job's ServerApp from ``offset``, the next offset, whether it is complete);
        at most ``max_bytes`` (0: the coordinator's 1 MiB). An offset past the end returns
        nothing and the log's size as the next offset."""
        request = training_pb2.ReadJobLogsRequest(id=job_id, offset=offset, max_bytes=max_bytes)
        reply = self.call(self._training.ReadJobLogs, request)
        return reply.data, reply.next_offset, reply.complete

    def get_job(self, job_id: str) -> dict[str, Any]:
        return job_to_dict(self.call(self._training.GetJob, training_pb2.GetJobRequest(id=job_id)).job)

    def list_jobs(self) -> list[dict[str, Any]]:
        return [job_to_dict(j) for j in self.call(self._training.ListJobs, training_pb2.ListJobsRequest()).jobs]

    def find_jobs(self, page_size: int, offset: int = 0, state: str = "", dataset: str = "") -> dict[str, Any]:
        """One page of the jobs (newest first) matching the filters, with how many match and
        how many jobs are in each state."""
        state_value = training_pb2.JobState.Value(f"JOB_STATE_{state.upper()}") if state else 0
        request = training_pb2.ListJobsRequest(
            page_size=page_size, page_token=str(offset) if offset else "", state=state_value, dataset=dataset
        )
        reply = self.call(self._training.ListJobs, request)
        return {
            "jobs": [job_to_dict(j) for j in reply.jobs],
            "total": reply.total_size,
            "state_counts": {
                training_pb2.JobState.Name(c.state).removeprefix("JOB_STATE_").lower(): c.count
                for c in reply.state_counts
            },
        }

    def stop_job(self, job_id: str) -> dict[str, Any]:
        return job_to_dict(self.call(self._training.StopJob, training_pb2.StopJobRequest(id=job_id)).job)


def job_to_dict(job: training_pb2.Job) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    spec = MessageToDict(job.spec, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    spec["run_config"] = config_from_proto(job.spec.run_config)
    return {
        "job": job.id,
        "state": training_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower(),
        "spec": spec,
        "rounds": [
            {
                "round": r.round,
                "participants": list(r.participants),
                "excluded": [{"site": e.site, "reason": e.reason, "message_type": e.message_type} for e in r.excluded],
                "train_metrics": dict(r.train_metrics),
                "eval_metrics": dict(r.eval_metrics),
                "server_metrics": dict(r.server_metrics),
                "duration_s": round(r.duration_s, 3),
            }
            for r in job.rounds
        ],
        "error": job.error or None,
        "model": job.model or None,
        "privacy": {"epsilon": job.dp_epsilon, "delta": job.dp_delta} if job.dp_delta else None,
        "created_by": job.created_by,
        "created_at": iso(epoch(job, "created_at")),
        "updated_at": iso(epoch(job, "updated_at")),
        "resumed": job.resumed,
        "resumed_from_round": job.resumed_from_round,
        "app_version": job.app_version,
        "app_sha256": job.app_sha256,
        "run_config": config_from_proto(job.run_config),
        "published_models": list(job.published_models),
    }
