"""The model registry's logic: push (check, store by SHA-256, sign), list, show, deprecate.

Blobs live under ``registry/blobs/<sha256>.onnx`` in the data directory. An upload is
written to a temporary file in the same folder, hashed as it arrives, loaded in
onnxruntime, and only then renamed into place and recorded, so a refused model leaves
nothing behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from silolink import errors, manifests
from silolink.onnx_models import check_name, inspect

from ..audit.store import AuditLog
from .store import ModelVersion, RegistryStore

log = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20
# ONNX files are protobuf messages, which cannot exceed 2 GiB.
MAX_MODEL_BYTES = (2 << 30) - 1
INCOMING_PREFIX = ".incoming."


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:VERSION``."""
    name, _, version = ref.partition(":")
    return check_name("model name", name), (check_name("version", version) if version else None)


class Upload:
    """An incoming model file: written to a temporary file, hashed as it arrives.

    Use as a context manager; leaving it without ``finish`` removes the temporary file.
    """

    def __init__(self, registry: ModelRegistry, name: str, version: str | None, max_bytes: int) -> None:
        self._registry = registry
        self.name, self.version = name, version
        self._max_bytes = max_bytes
        registry.blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=registry.blobs, prefix=INCOMING_PREFIX)
        self.path = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise errors.ResourceExhausted(f"the model is larger than the registry's limit of {self._max_bytes} bytes")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self, description: str = "", creator: str = "", source_job: str = "") -> ModelVersion:
        """Check the file loads, then store, sign and record it."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.size == 0:
            raise errors.InvalidArgument("the upload is empty, not an ONNX model")
        return self._registry._register(self, description, creator, source_job)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class ModelRegistry:
    """Signed model versions, independent of transport."""

    def __init__(
        self,
        store: RegistryStore,
        blobs: Path,
        signer: manifests.Signer,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        max_model_bytes: int = MAX_MODEL_BYTES,
    ) -> None:
        self.store = store
        self.blobs = Path(blobs)
        self.signer = signer
        self._audit = audit
        self._clock = clock
        self._max_model_bytes = max_model_bytes
        self.rollouts = None  # set by attach(): the Rollouts that send versions to sites
        self._sweep_incoming()

    def _sweep_incoming(self) -> None:
        """Uploads cut short by a crash leave temporary files; they are never resumed."""
        if self.blobs.exists():
            for stale in self.blobs.glob(INCOMING_PREFIX + "*"):
                stale.unlink(missing_ok=True)

    # -- push ----------------------------------------------------------------------------
    def begin_upload(self, name: str, version: str | None = None) -> Upload:
        """Check the name (and version, if given) before any byte is received."""
        check_name("model name", name)
        if version:
            check_name("version", version)
            self._refuse_taken(name, version)
        return Upload(self, name, version or None, self._max_model_bytes)

    def push_file(
        self,
        path: Path,
        name: str,
        version: str | None = None,
        description: str = "",
        creator: str = "coordinator",
        source_job: str = "",
    ) -> ModelVersion:
        """Register the ONNX file at ``path`` as ``name:version`` (next integer if None).

        For code inside the coordinator, such as a finished training job
        (``creator="job:<id>"``, ``source_job="<id>"``). Raises InvalidArgument when the
        file does not load in onnxruntime, AlreadyExists when the version is taken.
        """
        path = Path(path)
        if not path.is_file():
            raise errors.NotFound(f"{path} does not exist or is not a file")
        with self.begin_upload(name, version) as upload, path.open("rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                upload.write(chunk)
            return upload.finish(description, creator, source_job)

    def _register(self, upload: Upload, description: str, creator: str, source_job: str) -> ModelVersion:
        signature = inspect(upload.path, label=f"model {upload.name}")
        digest = upload.sha256
        blob = self.blob_path(digest)
        with self.store.atomic():
            version = upload.version or self._next_version(upload.name)
            self._refuse_taken(upload.name, version)
            now = self._clock()
            manifest = manifests.encode(
                {
                    "name": upload.name,
                    "version": version,
                    "sha256": digest,
                    "size": upload.size,
                    **signature.to_dict(),
                    "description": description,
                    "creator": creator,
                    "source_job": source_job,
                    "created_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
                }
            )
            record = ModelVersion(
                name=upload.name,
                version=version,
                sha256=digest,
                size_bytes=upload.size,
                signature=signature,
                description=description,
                creator=creator,
                source_job=source_job,
                created_at=now,
                deprecated_at=None,
                manifest=manifest,
                manifest_signature=self.signer.sign(manifest),
            )
            self.store.add_version(record)
            self._audit.record(creator or "coordinator", "model.push", record.ref, sha256=digest, size=upload.size,
                               source_job=source_job)  # fmt: skip
            if not blob.exists():
                os.replace(upload.path, blob)  # last: a failure above rolls back without a stray blob
        log.info("registered model %s (sha256 %s, %d bytes)", record.ref, digest[:12], upload.size)
        return record

    def _next_version(self, name: str) -> str:
        numbers = [int(v.version) for v in self.store.versions(name) if v.version.isdigit()]
        return str(max(numbers, default=0) + 1)

    def _refuse_taken(self, name: str, version: str) -> None:
        existing = self.store.get_version(name, version)
        if existing is not None:
            raise errors.AlreadyExists(
                f"model {existing.ref} is already registered (sha256 {existing.sha256[:12]}); versions never "
                "change: push under a new version, or leave --version out to take the next number"
            )

    # -- read ----------------------------------------------------------------------------
    def list(self) -> list[ModelVersion]:
        return self.store.versions()

    def get(self, name: str, version: str) -> ModelVersion:
        record = self.store.get_version(name, version)
        if record is None:
            known = [v.version for v in self.store.versions(name)]
            if not known:
                raise errors.NotFound(f"no model named {name!r} is registered; `models list` shows them")
            raise errors.NotFound(f"model {name!r} has no version {version!r}; registered: {', '.join(known)}")
        return record

    def show(self, name: str, version: str | None = None) -> list[ModelVersion]:
        if version:
            return [self.get(name, version)]
        found = self.store.versions(name)
        if not found:
            raise errors.NotFound(f"no model named {name!r} is registered; `models list` shows them")
        return found

    def deprecate(self, name: str, version: str, actor: str) -> ModelVersion:
        with self.store.atomic():
            record = self.get(name, version)
            if record.deprecated_at is None:
                self.store.deprecate(name, version, self._clock())
                self._audit.record(actor, "model.deprecate", record.ref, sha256=record.sha256)
        log.info("model %s deprecated", record.ref)
        return self.get(name, version)

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.onnx"
