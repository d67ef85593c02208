"""The shell examples of the guides run, as written, against real daemons.

Pages run in mkdocs.yml's nav order in one temporary directory: Getting started sets up a
coordinator and two hospitals (real processes, real mTLS on loopback), and the how-to
guides after it run their marked blocks against them. Which blocks run, and how, is marked
in the page source (docs/developing.md, "Documentation"). The well-known ports in the
blocks are replaced by free ones; everything else runs exactly as a reader would type it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .pages import ROOT, RunBlock, nav_pages, run_blocks

WAIT_S = 60.0
PAGES = [page for page in nav_pages() if run_blocks(page)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A free port whose next port is free too: the enrollment port is the mTLS port + 1, as
    7444 is to 7443, so a reader who leaves out --enroll-address still reaches it."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports on loopback")


class World:
    """The reader's directory and shell: environment, daemons started so far, remembered values."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        mtls = free_port_pair()
        self.ports = {7443: mtls, 7444: mtls + 1, 9464: free_port(), 9465: free_port()}
        self.placeholders: dict[str, str] = {}
        self.daemons: list[tuple[str, subprocess.Popen, Path]] = []
        self.stopped: set[int] = set()  # daemons a page stopped on purpose
        self.broken = ""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SILOLINK_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["SILOLINK_COORDINATOR_DATA_DIR"] = str(workdir / "coordinator")
        env["SILOLINK_AGENT_DATA_DIR"] = str(workdir / "hospital-a")
        (workdir / "home").mkdir()
        env["HOME"] = str(workdir / "home")  # the reader's home: audit pins and the like land there
        env.pop("XDG_STATE_HOME", None)
        env["DOCS_REPO"] = str(ROOT)  # for setup directives that copy an example from the repository
        self.env = env

    def text(self, body: str) -> str:
        for placeholder in sorted(self.placeholders, key=len, reverse=True):
            body = body.replace(placeholder, self.placeholders[placeholder])
        for port, free in self.ports.items():
            body = re.sub(rf"\b{port}\b", str(free), body)
        return body

    def shell(self, script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def run(self, block: RunBlock) -> None:
        env = dict(self.env)
        if block.at:
            env["SILOLINK_AGENT_DATA_DIR"] = str(self.workdir / block.at)
        for text in block.stop:
            self.stop_daemons(text)
        for command in block.setup:
            done = self.shell(self.text(command), env)
            assert done.returncode == 0, self.report(block, command, done)
        script = self.text(block.body)
        if block.background:
            for line in script.replace("\\\n", " ").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    self.start(line.strip(), env)
            return
        deadline = time.monotonic() + (WAIT_S if block.retry or block.until else 0)
        while True:
            done = self.shell(script, env)
            if block.fails:
                assert done.returncode != 0, self.report(block, script, done, "expected this to fail")
                said = done.stdout + done.stderr
                assert block.until in said, self.report(block, script, done, f"expected it to say {block.until!r}")
                break
            ok = done.returncode == 0 and (not block.until or block.until in done.stdout)
            if ok:
                break
            dead = [line for line, proc, _ in self.daemons if proc.poll() is not None and proc.pid not in self.stopped]
            if time.monotonic() > deadline or dead:
                raise AssertionError(
                    self.report(block, script, done, f"waited for {block.until!r}" * bool(block.until))
                )
            time.sleep(0.3)
        output = done.stdout + done.stderr
        for placeholder, pattern in block.capture.items():
            match = re.search(pattern, output)
            assert match, self.report(block, script, done, f"nothing matched {pattern} to stand for {placeholder}")
            self.placeholders[placeholder] = match.group(1) if match.groups() else match.group(0)

    def start(self, line: str, env: dict[str, str]) -> None:
        log = self.workdir / f"daemon-{len(self.daemons)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["bash", "-c", line],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.daemons.append((line, proc, log))

    def stop_daemons(self, text: str) -> None:
        """Stop the running daemons whose command line holds ``text``, as a reader stops one to restart it."""
        chosen = [(line, proc) for line, proc, _ in self.daemons if text in line and proc.poll() is None]
        assert chosen, f"no running daemon's command holds {text!r}: {[line for line, _, _ in self.daemons]}"
        for _, proc in chosen:
            self.stopped.add(proc.pid)
            os.killpg(proc.pid, signal.SIGTERM)
        for line, proc in chosen:
            assert proc.wait(30) == 0 or proc.returncode == -signal.SIGTERM, f"{line} exited {proc.returncode}"

    def report(self, block: RunBlock, script: str, done: subprocess.CompletedProcess, why: str = "") -> str:
        lines = [f"{block.where()}: {why or f'exit {done.returncode}'}", f"$ {script.strip()}"]
        lines += [f"stdout: {done.stdout[-2000:]}", f"stderr: {done.stderr[-2000:]}"]
        for line, proc, log in self.daemons:
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            lines.append(f"--- daemon ({state}): {line}\n{log.read_text()[-1500:]}")
        return "\n".join(lines)

    def stop(self) -> None:
        for _, proc, _ in reversed(self.daemons):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, _ in self.daemons:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("reader"))
    yield w
    w.stop()
    unclean = [(line, proc.returncode) for line, proc, _ in w.daemons if proc.returncode not in (0, -signal.SIGTERM)]
    assert not unclean, f"daemons did not stop cleanly: {unclean}"


def test_getting_started_is_the_first_page_that_runs():
    assert PAGES[0].name == "getting-started.md"
    assert len(PAGES) >= 10


@pytest.mark.timeout(300)  # Getting started alone starts three daemons and trains; slower under load
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_the_marked_examples_run(world, page):
    if world.broken:
        pytest.skip(f"an earlier page failed: {world.broken}")
    try:
        for block in run_blocks(page):
            world.run(block)
    except BaseException:
        world.broken = str(page.relative_to(ROOT))
        raise
