"""Back up and restore a coordinator's data directory, online.

A backup is one gzip'd tar holding every file under the data directory, so whatever a
capability keeps there (model blobs, for example) comes along without this module knowing
about it. Two kinds of file are treated specially:

- SQLite databases (found by their header, not their name) are copied through SQLite's
  online backup API, so the copy is one consistent snapshot while the coordinator keeps
  writing. Their ``-wal``/``-shm``/``-journal`` side files are left out: the snapshot
  already holds what they held.
- ``run/`` is left out: it describes a running process (its addresses and pid), not state.

Files are listed after the snapshot, so every file a snapshotted row names was already
written. A file the coordinator deletes after the snapshot while the backup copies (a
segment whose envelopes were all delivered meanwhile, say) would leave the archive naming
rows whose bytes are gone, so after copying, the files the snapshot's pending envelopes
need (``FILES_IN_USE``) are checked against the archive, and the backup is taken again
if one is missing.

``MANIFEST.json`` comes last in the archive: the SHA-256, size and mode of every file, the
audit log's head at the time of the snapshot, and the version that wrote it. Restore
refuses any archive whose members do not match it, writes only into a new or empty
directory, and checks the restored databases and the audit chain before it reports success.

The archive holds the CA and audit keys: keep it as secret as the data directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silolink import __version__, errors
from silolink.audit.chain import AuditEntry
from silolink.audit.chain import verify as verify_chain
from silolink.files import private_dir

from . import exchange
from .layout import CoordinatorLayout

log = logging.getLogger(__name__)

FORMAT = "silolink-coordinator-backup"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
SKIPPED_DIRS = frozenset({"run"})
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
SQLITE_HEADER = b"SQLite format 3\x00"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
CHUNK = 1024 * 1024
# What each capability's rows in the main database need on disk (paths relative to the root).
FILES_IN_USE: tuple[Callable[[sqlite3.Connection], set[str]], ...] = (exchange.files_in_use,)
ATTEMPTS = 3


class _FilesGone(Exception):
    """Files the snapshot needs were deleted before they were copied."""


@dataclass(frozen=True)
class BackupResult:
    output: Path
    sha256: str
    files: int
    bytes: int
    databases: list[str]
    audit_entries: int | None
    audit_head: str | None


@dataclass(frozen=True)
class RestoreResult:
    data_dir: Path
    files: int
    bytes: int
    databases: list[str]
    audit_entries: int | None
    audit_head: str | None
    created_at: str
    written_by: str


# -- backup ------------------------------------------------------------------------------


def backup(data_dir: Path, output: Path, clock: Callable[[], float] = time.time) -> BackupResult:
    """Write a consistent snapshot of ``data_dir`` to the new file ``output``."""
    layout = CoordinatorLayout(Path(data_dir).resolve())
    if not layout.config.exists() or not layout.ca_key.exists():
        raise errors.FailedPrecondition(f"{layout.root} holds no coordinator (no coordinator.toml and pki/ca.key)")
    output = Path(output).resolve()
    if output.exists():
        raise errors.AlreadyExists(f"{output} exists; choose a new file name for the backup")
    if output.is_relative_to(layout.root):
        raise errors.InvalidArgument(f"write the backup outside the data directory {layout.root}")
    if not output.parent.is_dir():
        raise errors.InvalidArgument(f"{output.parent} is not a directory")

    missing = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _backup_once(layout, output, clock)
        except _FilesGone as gone:
            missing = str(gone)
            log.warning("backup attempt %d of %d: %s deleted while being copied", attempt, ATTEMPTS, missing)
    raise errors.Aborted(
        f"the coordinator kept deleting files the snapshot needs ({missing}) while they were being "
        "copied; run the backup again when it is quieter"
    )


def _backup_once(layout: CoordinatorLayout, output: Path, clock: Callable[[], float]) -> BackupResult:
    databases = [rel for rel, path in _walk(layout.root)[1].items() if _is_sqlite(path)]
    fd, partial = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
    raw = os.fdopen(fd, "wb")
    try:
        with raw, tempfile.TemporaryDirectory(dir=output.parent, prefix=".silolink-backup-") as staging:
            snapshots = {
                rel: _snapshot(layout.root / rel, Path(staging) / f"{i}.db") for i, rel in enumerate(databases)
            }
            # Listed after the snapshot: a file a snapshotted row names (written before the row
            # that names it commits) is there to be listed.
            dirs, files = _walk(layout.root)
            main_db = snapshots.get(_rel(layout.database, layout.root))
            audit = _audit_head(main_db) if main_db else None
            needed = _files_in_use(main_db) if main_db else set()
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created_at": dt.datetime.fromtimestamp(clock(), dt.UTC).isoformat(timespec="seconds"),
                "written_by": f"silolink {__version__}",
                "databases": databases,
                "audit": audit,
                "directories": {},
                "files": {},
            }
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                for rel, mode in dirs.items():
                    tar.addfile(_tarinfo(rel, tarfile.DIRTYPE, 0, mode))
                    manifest["directories"][rel] = mode
                for rel, path in files.items():
                    entry = _add_file(tar, rel, snapshots.get(rel, path))
                    if entry is not None:
                        manifest["files"][rel] = entry
                gone = sorted(needed - manifest["files"].keys())
                if gone:
                    raise _FilesGone(", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else ""))
                blob = json.dumps(manifest, indent=2, sort_keys=True).encode()
                tar.addfile(_tarinfo(MANIFEST, tarfile.REGTYPE, len(blob), 0o600), _BytesReader(blob))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, output)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    _fsync_dir(output.parent)
    digest = _sha256_file(output)
    total = sum(f["size"] for f in manifest["files"].values())
    log.info("backed up %s to %s: %d files, %d bytes", layout.root, output, len(manifest["files"]), total)
    return BackupResult(
        output,
        digest,
        len(manifest["files"]),
        total,
        databases,
        audit["entries"] if audit else None,
        audit["head"] if audit else None,
    )


def _files_in_use(database: Path) -> set[str]:
    conn = sqlite3.connect(database)
    try:
        return set().union(*(find(conn) for find in FILES_IN_USE))
    finally:
        conn.close()


def _walk(root: Path) -> tuple[dict[str, int], dict[str, Path]]:
    """Directories (relative path to mode) and regular files to back up, in a stable order."""
    dirs: dict[str, int] = {}
    files: dict[str, Path] = {}
    for current, subdirs, names in os.walk(root):
        here = Path(current)
        subdirs[:] = sorted(d for d in subdirs if not (here == root and d in SKIPPED_DIRS))
        for d in list(subdirs):
            if (here / d).is_symlink():
                raise errors.FailedPrecondition(f"{here / d} is a symbolic link; a backup holds only real files")
            dirs[_rel(here / d, root)] = stat.S_IMODE((here / d).stat().st_mode)
        for name in sorted(names):
            path = here / name
            if name.endswith(SQLITE_SIDE_FILES):
                continue
            if here == root and name == MANIFEST:
                raise errors.FailedPrecondition(f"{path} would clash with the backup's own manifest; move it")
            try:
                info = path.lstat()
            except FileNotFoundError:  # a temporary file, gone already
                continue
            if stat.S_ISLNK(info.st_mode):
                raise errors.FailedPrecondition(f"{path} is a symbolic link; a backup holds only real files")
            if stat.S_ISREG(info.st_mode):
                files[_rel(path, root)] = path
            # Sockets and pipes belong to a running process, not to the state.
    return dirs, files


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except FileNotFoundError:
        return False


def _snapshot(source: Path, target: Path) -> Path:
    """A consistent copy of the database at ``source`` through SQLite's online backup API.

    The copy is one read transaction, whatever writers do meanwhile. Even a read-only reader
    of a WAL database creates its ``-wal``/``-shm`` files when they are missing (the
    coordinator is stopped); those must stay the coordinator's, or it cannot open its own
    database afterwards.
    """
    owner = source.stat()
    if os.geteuid() not in (0, owner.st_uid):
        raise errors.FailedPrecondition(
            f"{source} belongs to uid {owner.st_uid}; run the backup as that user (the coordinator's)"
        )
    side_files = [source.with_name(source.name + suffix) for suffix in SQLITE_SIDE_FILES]
    existed = {p for p in side_files if p.exists()}
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    except sqlite3.Error as e:
        raise errors.Unavailable(f"cannot snapshot the database {source}: {e}") from None
    finally:
        dst.close()
        src.close()
        for path in side_files:
            if path not in existed and path.exists() and os.geteuid() == 0:
                os.chown(path, owner.st_uid, owner.st_gid)
    return target


def _audit_head(database: Path) -> dict[str, Any] | None:
    conn = sqlite3.connect(database)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='audit_log'").fetchone():
            return None
        row = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        return {"entries": row[0], "head": row[1]} if row else {"entries": 0, "head": None}
    finally:
        conn.close()


def _tarinfo(name: str, kind: bytes, size: int, mode: int, mtime: float | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, mode
    info.mtime = int(time.time() if mtime is None else mtime)
    return info


def _add_file(tar: tarfile.TarFile, rel: str, path: Path) -> dict[str, Any] | None:
    """Add one file, hashing what is read; None if it vanished (a temporary file)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    with f:
        info = os.fstat(f.fileno())
        reader = _Hashing(f)
        try:
            tar.addfile(_tarinfo(rel, tarfile.REGTYPE, info.st_size, stat.S_IMODE(info.st_mode), info.st_mtime), reader)
        except OSError as e:  # tarfile's "unexpected end of data": the file shrank meanwhile
            raise errors.Aborted(f"{path} changed while it was being backed up ({e}); run the backup again") from None
    return {"sha256": reader.hexdigest(), "size": info.st_size, "mode": stat.S_IMODE(info.st_mode)}


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk, self._pos = self._data[self._pos : end], min(end, len(self._data))
        return chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- restore -----------------------------------------------------------------------------


def restore(archive: Path, data_dir: Path) -> RestoreResult:
    """Restore the backup ``archive`` into ``data_dir``, which must be new or empty.

    Nothing is left in ``data_dir`` unless every file matched the manifest and the
    databases and the audit chain checked out.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise errors.NotFound(f"no backup file at {archive}")
    root = Path(data_dir).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise errors.FailedPrecondition(
            f"{root} is not empty; restore only into a new or empty directory (move the old one aside first)"
        )
    created = not root.exists()
    private_dir(root)
    work = Path(tempfile.mkdtemp(dir=root, prefix=".restore-"))
    try:
        manifest = _extract(archive, work)
        audit = _check_restored(work, manifest)
        for child in work.iterdir():
            os.replace(child, root / child.name)
        work.rmdir()
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise
    files = manifest["files"]
    log.info("restored %s into %s: %d files", archive, root, len(files))
    return RestoreResult(
        root,
        len(files),
        sum(f["size"] for f in files.values()),
        list(manifest["databases"]),
        audit["entries"] if audit else None,
        audit["head"] if audit else None,
        manifest["created_at"],
        manifest["written_by"],
    )


def _extract(archive: Path, work: Path) -> dict[str, Any]:
    """Unpack regular files and directories only, hashing each; check them against the manifest."""
    damaged = f"{archive} is not a complete silolink coordinator backup"
    seen: dict[str, dict[str, Any]] = {}
    dirs: set[str] = set()
    manifest: dict[str, Any] | None = None
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in _members(tar):
                rel = _safe_name(member.name, damaged)
                if member.isdir():
                    (work / rel).mkdir(parents=True, exist_ok=True, mode=0o700)
                    dirs.add(rel)
                elif not member.isfile():
                    raise errors.InvalidArgument(f"{damaged}: {member.name} is not a regular file or directory")
                elif rel in seen or (rel == MANIFEST and manifest is not None):
                    raise errors.InvalidArgument(f"{damaged}: {member.name} appears twice")
                elif rel == MANIFEST:
                    if member.size > MAX_MANIFEST_BYTES:
                        raise errors.InvalidArgument(f"{damaged}: its manifest is implausibly large")
                    source = tar.extractfile(member)
                    manifest = _parse_manifest(source.read() if source else b"", damaged)
                else:
                    seen[rel] = _write_member(tar, member, work / rel)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise errors.InvalidArgument(f"{damaged} ({e})") from None
    if manifest is None:
        raise errors.InvalidArgument(f"{damaged}: it has no {MANIFEST}")
    expected = manifest["files"]
    missing, extra = sorted(set(expected) - set(seen)), sorted(set(seen) - set(expected))
    if missing or extra:
        raise errors.InvalidArgument(f"{damaged}: missing {missing or 'nothing'}, unexpected {extra or 'nothing'}")
    for rel, want in expected.items():
        got = seen[rel]
        if got["sha256"] != want["sha256"] or got["size"] != want["size"]:
            raise errors.InvalidArgument(f"{archive} is damaged: {rel} does not match its SHA-256 in the manifest")
        os.chmod(work / rel, int(want["mode"]) & 0o777)
    for rel, mode in manifest["directories"].items():
        if rel not in dirs:
            raise errors.InvalidArgument(f"{damaged}: directory {rel} is missing")
        os.chmod(work / rel, int(mode) & 0o777)
    return manifest


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tar.next()) is not None:
        yield member


def _safe_name(name: str, damaged: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        raise errors.InvalidArgument(f"{damaged}: it names {name!r}, outside the data directory")
    return path.as_posix()


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> dict[str, Any]:
    source = tar.extractfile(member)
    if source is None:
        raise errors.InvalidArgument(f"cannot read {member.name} from the backup")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest, size = hashlib.sha256(), 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return {"sha256": digest.hexdigest(), "size": size}


def _parse_manifest(blob: bytes, damaged: str) -> dict[str, Any]:
    try:
        manifest = json.loads(blob)
        if manifest.get("format") != FORMAT:
            raise errors.InvalidArgument(f"{damaged}: its manifest is not a coordinator backup's")
        if int(manifest["format_version"]) > FORMAT_VERSION:
            raise errors.InvalidArgument(
                f"the backup was written by {manifest.get('written_by')} in a newer format "
                f"({manifest['format_version']}); restore it with that version or later"
            )
        for key in ("files", "directories", "databases", "created_at", "written_by"):
            manifest[key]  # noqa: B018 - presence check
        return manifest
    except (ValueError, KeyError, TypeError, AttributeError):
        raise errors.InvalidArgument(f"{damaged}: its manifest cannot be read") from None


def _check_restored(root: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Each database passes SQLite's quick check; the audit chain verifies up to the recorded head."""
    for rel in manifest["databases"]:
        conn = sqlite3.connect(f"{(root / rel).as_uri()}?mode=ro", uri=True)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as e:
            verdict = str(e)
        finally:
            conn.close()
        if verdict != "ok":
            raise errors.InvalidArgument(f"the database {rel} in the backup is damaged: {verdict}")
    recorded = manifest.get("audit")
    if recorded is None:
        return None
    layout = CoordinatorLayout(root)
    entries = _audit_entries(layout.database)
    key = serialization.load_pem_private_key(layout.audit_key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise errors.InvalidArgument(f"{_rel(layout.audit_key, root)} in the backup is not an Ed25519 key")
    try:
        head = verify_chain(entries, key.public_key()) if entries else None
    except errors.FailedPrecondition as e:
        raise errors.InvalidArgument(f"the audit log in the backup does not verify: {e.message}") from None
    if len(entries) != recorded["entries"] or head != recorded["head"]:
        raise errors.InvalidArgument(
            f"the restored audit log has {len(entries)} entries, the backup recorded {recorded['entries']}"
        )
    return {"entries": len(entries), "head": head}


def _audit_entries(database: Path) -> list[AuditEntry]:
    conn = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [AuditEntry(**{**dict(r), "details": json.loads(r["details"])}) for r in rows]
