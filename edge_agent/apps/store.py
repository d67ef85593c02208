"""The Flower apps this site approved: a table in agent.db and the unpacked files.

Installing an app is this site's approval of that exact code: its bundle's SHA-256 is
recorded with what the bundle declares, and its files are unpacked under
``apps/NAME/VERSION/SHA256/`` in the data directory. A version never changes: installing
the same name and version with other content is refused until the old one is removed.
The CLI writes this store and the daemon reads it (through SQLite) for every message.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from silolink import errors
from silolink.apps.fab import FabInfo
from silolink.db import Database, Migrations, SqliteStore, open_database

migrations = Migrations("agent.apps")


@migrations()
def m001_apps(db: Database) -> None:
    db["apps"].create(
        {
            "name": str,
            "version": str,
            "sha256": str,
            "publisher": str,
            "size_bytes": int,
            "clientapp": str,
            "config": str,  # JSON: [tool.flwr.app.config] defaults, flattened
            "dependencies": str,  # JSON list of requirement strings
            "files": str,  # JSON list of {path, size, sha256}
            "source": str,  # "local" (edge-agent apps install) or "coordinator" (approve)
            "installed_at": float,
        },
        pk=("name", "version"),
        not_null={"sha256", "publisher", "clientapp", "source", "installed_at"},
    )


@dataclass(frozen=True)
class InstalledApp:
    name: str
    version: str
    sha256: str
    publisher: str
    size_bytes: int
    clientapp: str
    config: dict[str, Any]
    dependencies: tuple[str, ...]
    files: tuple[dict[str, Any], ...]
    source: str
    installed_at: float
    path: Path

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def present(self) -> bool:
        """Whether its unpacked files are still where they were put."""
        return (self.path / "pyproject.toml").is_file()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "publisher": self.publisher,
            "size_bytes": self.size_bytes,
            "clientapp": self.clientapp,
            "config": self.config,
            "dependencies": list(self.dependencies),
            "files": list(self.files),
            "source": self.source,
            "installed_at": self.installed_at,
            "path": str(self.path),
            "state": "installed" if self.present else "approved",
        }


def parse_app_ref(ref: str, need_version: bool = True) -> tuple[str, str | None]:
    """``NAME:VERSION`` (or ``NAME`` when ``need_version`` is false)."""
    name, _, version = ref.partition(":")
    if not name or (need_version and not version):
        raise errors.InvalidArgument(f"name an app and its version as NAME:VERSION, not {ref!r}")
    return name, version or None


class AppStore(SqliteStore):
    migrations = migrations

    def __init__(self, db: Database, apps_dir: Path) -> None:
        super().__init__(db)
        self.apps_dir = Path(apps_dir)

    @classmethod
    def open(cls, state_db: Path, apps_dir: Path) -> AppStore:
        return cls(open_database(state_db), apps_dir)

    def directory(self, name: str, version: str, sha256: str) -> Path:
        return self.apps_dir / name / version / sha256

    def list(self) -> list[InstalledApp]:
        with self.lock:
            return [self._record(r) for r in self.db["apps"].rows_where(order_by="name, installed_at")]

    def find(self, name: str, version: str | None = None) -> list[InstalledApp]:
        """Installed versions of ``name`` (just ``version`` when given)."""
        clause, args = ("name = ? and version = ?", [name, version]) if version else ("name = ?", [name])
        with self.lock:
            return [self._record(r) for r in self.db["apps"].rows_where(clause, args, order_by="installed_at")]

    def get(self, name: str, version: str) -> InstalledApp:
        found = self.find(name, version)
        if not found:
            others = [a.ref for a in self.find(name)]
            hint = f"; installed: {', '.join(others)}" if others else ""
            raise errors.NotFound(f"app {name}:{version} is not installed at this site{hint}")
        return found[0]

    def record(self, info: FabInfo, source: str) -> InstalledApp:
        """Record an unpacked bundle as installed (the caller unpacked it first)."""
        row = {
            "name": info.name,
            "version": info.version,
            "sha256": info.sha256,
            "publisher": info.publisher,
            "size_bytes": info.size,
            "clientapp": info.clientapp,
            "config": json.dumps(info.config),
            "dependencies": json.dumps(list(info.dependencies)),
            "files": json.dumps([{"path": f.path, "size": f.size, "sha256": f.sha256} for f in info.files]),
            "source": source,
            "installed_at": time.time(),
        }
        with self.atomic():
            self._refuse_other_content(info.name, info.version, info.sha256)
            self.db["apps"].insert(row, replace=True)
        return self.get(info.name, info.version)

    def check_new(self, name: str, version: str, sha256: str) -> InstalledApp | None:
        """The installed record when this exact bundle is already installed; refuses other content."""
        with self.lock:
            self._refuse_other_content(name, version, sha256)
            found = self.find(name, version)
        return found[0] if found else None

    def remove(self, name: str, version: str) -> InstalledApp:
        """Forget the approval, then delete the files: from now on jobs naming it are refused."""
        with self.atomic():
            app = self.get(name, version)
            self.db["apps"].delete((name, version))
        shutil.rmtree(app.path, ignore_errors=True)
        for parent in (app.path.parent, app.path.parent.parent):  # NAME/VERSION, NAME when empty
            try:
                parent.rmdir()
            except OSError:
                break
        return app

    def _refuse_other_content(self, name: str, version: str, sha256: str) -> None:
        for app in self.find(name, version):
            if app.sha256 != sha256:
                raise errors.AlreadyExists(
                    f"app {name}:{version} is already installed here with other content (sha256 {app.sha256[:12]}, "
                    f"this bundle's is {sha256[:12]}); a version never changes: remove it first "
                    f"(edge-agent apps remove {name}:{version}) or publish the app under a new version"
                )

    def _record(self, row: dict[str, Any]) -> InstalledApp:
        return InstalledApp(
            name=row["name"],
            version=row["version"],
            sha256=row["sha256"],
            publisher=row["publisher"],
            size_bytes=row["size_bytes"],
            clientapp=row["clientapp"],
            config=json.loads(row["config"] or "{}"),
            dependencies=tuple(json.loads(row["dependencies"] or "[]")),
            files=tuple(json.loads(row["files"] or "[]")),
            source=row["source"],
            installed_at=row["installed_at"],
            path=self.directory(row["name"], row["version"], row["sha256"]),
        )
