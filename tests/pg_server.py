"""A real PostgreSQL server for tests: initdb in a temporary directory, listening on a
unix socket only (no TCP port), stopped and removed afterwards.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the
unprivileged ``nobody`` user (through ``setpriv``, or ``runuser``), in a directory it owns.
As any other user it runs as that user. Skipped, naming the reason and the fix, only where
the server binaries or psycopg are not installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "silolink"
INSTALL_HINT = "install Debian's postgresql (bash scripts/install-system-packages.sh does it)"


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: Debian's /usr/lib/postgresql/N/bin, or PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _as_server_user(command: list[str]) -> tuple[list[str], str | None]:
    """The command as the user the server may run as (root: nobody), and that user's name."""
    if os.geteuid() != 0:
        return command, None
    user = pwd.getpwnam("nobody")
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command], "nobody"
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--", *command], "nobody"
    pytest.skip("running as root without setpriv or runuser to start PostgreSQL as an unprivileged user")
    raise AssertionError  # unreachable


@dataclass
class PostgresServer:
    root: Path
    socket_dir: Path
    bindir: Path

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql+psycopg://{user}{secret}@/{database}?host={self.socket_dir}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), dbname=database, user=SUPERUSER, autocommit=True)

    def execute(self, sql: str, database: str = "postgres", params=None) -> None:
        with self.connect(database) as conn:
            conn.execute(sql, params)

    def stop(self) -> None:
        command, _ = _as_server_user([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.root / "data"), "-m", "fast"])
        subprocess.run(command, capture_output=True, timeout=60)

    def start(self) -> None:
        data = self.root / "data"
        command, _ = _as_server_user(
            [str(self.bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(self.root / "log"),
             "-o", f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -c fsync=off"]
        )  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, timeout=90)
        if proc.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {proc.stderr}\n{log[-2000:]}")


def start_postgres() -> PostgresServer:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL server binaries (initdb) not found: {INSTALL_HINT}")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[dev]' (the [sources] extra)")
    # Not under pytest's tmp_path: as root, that is a 0700 root directory nobody cannot enter.
    root = Path(tempfile.mkdtemp(prefix="silolink-pg-"))
    _, user = _as_server_user([])
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    os.chmod(root, 0o755)
    initdb, _ = _as_server_user(
        [str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "--auth-local=trust", "-E", "UTF8",
         "--no-sync", "--no-instructions"]
    )  # fmt: skip
    proc = subprocess.run(initdb, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {proc.stderr[-2000:]}")
    # The superuser (the tests) by trust; every other role must give its password.
    (root / "data" / "pg_hba.conf").write_text(f"local all {SUPERUSER} trust\nlocal all all scram-sha-256\n")
    server = PostgresServer(root, root, bindir)
    try:
        server.start()
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def remove(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)
