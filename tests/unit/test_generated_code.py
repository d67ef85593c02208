"""The committed generated code must equal a fresh generation with the pinned tools."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh():
    proc = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_generated_code_is_not_newer_than_the_protobuf_runtime():
    from google.protobuf import __version__ as runtime

    text = (ROOT / "silolink/gen/admin/v1/admin_pb2.py").read_text()
    line = next(
        line
        for line in text.splitlines()
        if "ValidateProtobufRuntimeVersion" in line or "_runtime_version.Domain" in line
    )
    assert line  # the version guard is present
    gen = [int(x) for x in text.split("# Protobuf Python Version: ")[1].split()[0].split(".")[:2]]
    assert gen <= [int(x) for x in runtime.split(".")[:2]]


def test_protos_pass_buf_lint():
    """buf's STANDARD and COMMENTS rules (buf.yaml): versioned packages, _UNSPECIFIED zero
    values, Request/Response per RPC, every element documented."""
    buf = Path(sys.executable).parent / "buf"
    assert buf.exists(), "buf comes with the dev extra (buf-bin)"
    proc = subprocess.run([str(buf), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
