"""The site's installed ONNX models: content-addressed files and a table of versions.

A version is checked before it is recorded (it loads in onnxruntime; its inputs and outputs
are kept), its file is stored once under its SHA-256, and one version per model is active:
the one requests get when they name no version. The CLI and the daemon share the store
through SQLite; the daemon notices changes through ``changes()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from silolink import errors
from silolink.db import Database, Migrations, SqliteStore, open_database
from silolink.onnx_models import Signature, check_name, inspect

migrations = Migrations("agent.models")


@migrations()
def m001_models(db: Database) -> None:
    db["model_versions"].create(
        {
            "name": str,
            "version": str,
            "sha256": str,
            "size_bytes": int,
            "signature": str,
            "source": str,
            "installed_at": float,
        },
        pk=("name", "version"),
    )
    db["active_models"].create({"name": str, "version": str}, pk="name")


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: str
    sha256: str
    size_bytes: int
    signature: Signature
    source: str
    installed_at: float
    active: bool

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "active": self.active,
            "source": self.source,
            "installed_at": self.installed_at,
            **self.signature.to_dict(),
        }


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name:version``."""
    name, _, version = ref.partition(":")
    return check_name("model name", name), (check_name("version", version) if version else None)


class ModelStore(SqliteStore):
    migrations = migrations

    def __init__(self, db: Database, blobs: Path) -> None:
        super().__init__(db)
        self.blobs = Path(blobs)

    @classmethod
    def open(cls, state_db: Path, blobs: Path) -> ModelStore:
        return cls(open_database(state_db), blobs)

    def changes(self) -> int:
        """A number that changes whenever this or another process changed the store."""
        with self.lock:
            # data_version moves on commits by other connections; total_changes on our own.
            other = self.db.execute("PRAGMA data_version").fetchone()[0]
            return (other << 32) + self.db.conn.total_changes

    def install(
        self,
        path: Path,
        name: str,
        version: str,
        activate: bool = True,
        source: str = "local",
        move: bool = False,
    ) -> ModelRecord:
        """Check the ONNX file at ``path`` and install it as ``name:version``. With
        ``move`` the file is taken rather than copied (a file the agent downloaded itself):
        one less full write of a model that can be gigabytes. Either way it is hashed
        again here, so what is installed is what the record names."""
        check_name("model name", name)
        check_name("version", version)
        path = Path(path)
        if not path.is_file():
            raise errors.NotFound(f"{path} does not exist or is not a file")
        self.blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.blobs, prefix=".incoming.")
        tmp = Path(tmp_name)
        try:
            if move and path.stat().st_dev == self.blobs.stat().st_dev:
                os.close(fd)
                os.replace(path, tmp)
                digest, size = _copy_hashing(tmp, None)
            else:
                digest, size = _copy_hashing(path, fd)
            signature = inspect(tmp, label=path.name)
            with self.atomic():
                existing = self._row(name, version)
                if existing is not None:
                    if existing["sha256"] == digest:
                        if activate:
                            self._set_active(name, version)
                        return self.get(name, version)
                    raise errors.AlreadyExists(
                        f"model {name}:{version} is already installed with different content "
                        f"(sha256 {existing['sha256'][:12]}); remove it first or install under a new version"
                    )
                blob = self.blob_path(digest)
                if not blob.exists():
                    os.replace(tmp, blob)
                self.db["model_versions"].insert(
                    {
                        "name": name,
                        "version": version,
                        "sha256": digest,
                        "size_bytes": size,
                        "signature": json.dumps(signature.to_dict()),
                        "source": source,
                        "installed_at": time.time(),
                    }
                )
                if activate or self._active_version(name) is None:
                    self._set_active(name, version)
        finally:
            tmp.unlink(missing_ok=True)
        return self.get(name, version)

    def get(self, name: str, version: str | None = None) -> ModelRecord:
        """The named version, or the active one; NotFound names what is installed."""
        with self.lock:
            if version is None:
                version = self._active_version(name)
                if version is None:
                    raise errors.NotFound(f"no model named {name!r} is installed{self._installed_hint()}")
            row = self._row(name, version)
            if row is None:
                versions = [r["version"] for r in self.db["model_versions"].rows_where("name = ?", [name])]
                if not versions:
                    raise errors.NotFound(f"no model named {name!r} is installed{self._installed_hint()}")
                raise errors.NotFound(
                    f"model {name!r} has no version {version!r}; installed: {', '.join(sorted(versions))}"
                )
            return self._record(row, active=self._active_version(name) == version)

    def list(self) -> list[ModelRecord]:
        with self.lock:
            active = {r["name"]: r["version"] for r in self.db["active_models"].rows}
            rows = self.db["model_versions"].rows_where(order_by="name, installed_at")
            return [self._record(r, active.get(r["name"]) == r["version"]) for r in rows]

    def activate(self, name: str, version: str) -> ModelRecord:
        with self.atomic():
            self.get(name, version)
            self._set_active(name, version)
        return self.get(name, version)

    def remove(self, name: str, version: str) -> ModelRecord:
        """Remove one version; if it was active, the newest remaining version becomes active."""
        with self.atomic():
            record = self.get(name, version)
            self.db["model_versions"].delete((name, version))
            if record.active:
                rest = list(
                    self.db["model_versions"].rows_where("name = ?", [name], order_by="installed_at desc", limit=1)
                )
                if rest:
                    self._set_active(name, rest[0]["version"])
                else:
                    self.db["active_models"].delete_where("name = ?", [name])
            still_used = self.db.execute(
                "select count(*) from model_versions where sha256 = ?", [record.sha256]
            ).fetchone()[0]
        if not still_used:
            self.blob_path(record.sha256).unlink(missing_ok=True)
        return record

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.onnx"

    def _row(self, name: str, version: str) -> dict | None:
        rows = list(self.db["model_versions"].rows_where("name = ? and version = ?", [name, version]))
        return rows[0] if rows else None

    def _active_version(self, name: str) -> str | None:
        rows = list(self.db["active_models"].rows_where("name = ?", [name]))
        return rows[0]["version"] if rows else None

    def _set_active(self, name: str, version: str) -> None:
        self.db["active_models"].upsert({"name": name, "version": version}, pk="name")

    def _installed_hint(self) -> str:
        names = sorted({r["name"] for r in self.db["model_versions"].rows})
        return f"; installed: {', '.join(names)}" if names else "; none is installed"

    @staticmethod
    def _record(row: dict, active: bool) -> ModelRecord:
        return ModelRecord(
            name=row["name"],
            version=row["version"],
            sha256=row["sha256"],
            size_bytes=row["size_bytes"],
            signature=Signature.from_dict(json.loads(row["signature"])),
            source=row["source"],
            installed_at=row["installed_at"],
            active=active,
        )


def _copy_hashing(source: Path, fd: int | None) -> tuple[str, int]:
    """The SHA-256 and size of ``source``, its bytes copied into the open file ``fd`` when
    one is given; whichever file now holds them is fsynced (a download may not have been)."""
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as src, os.fdopen(fd, "wb") if fd is not None else nullcontext() as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            if dst is not None:
                dst.write(chunk)
        if dst is not None:
            dst.flush()
        os.fsync(dst.fileno() if dst is not None else src.fileno())
    if size == 0:
        raise errors.InvalidArgument(f"{source.name} is empty, not an ONNX model")
    return digest.hexdigest(), size
