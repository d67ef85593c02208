"""What the agent reports about its host in heartbeats."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from pathlib import Path

import psutil

from silolink import __version__
from silolink.gen.common.v1 import site_pb2

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def detect_gpus() -> tuple[tuple[str, int], ...]:
    """NVIDIA GPUs by nvidia-smi, looked up once (names and memory in bytes)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return ()
    try:
        out = subprocess.run(
            [tool, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        log.info("nvidia-smi is present but did not answer; reporting no GPUs")
        return ()
    gpus = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        gpus.append((name.strip(), int(float(mib.strip() or 0)) * 1024 * 1024))
    return tuple(gpus)


def resource_report(data_dir: Path) -> site_pb2.ResourceReport:
    memory = psutil.virtual_memory()
    return site_pb2.ResourceReport(
        cpu_count=os.cpu_count() or 0,
        load_average_1m=os.getloadavg()[0],
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
        disk_free_bytes=shutil.disk_usage(data_dir).free,
        gpus=[site_pb2.GpuInfo(name=n, memory_total_bytes=m) for n, m in detect_gpus()],
        agent_version=__version__,
    )
