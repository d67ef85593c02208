"""No breaking change to a released API: `buf breaking` against the newest release.

Each release commits an image of its API (``proto/releases/vX.Y.Z.binpb``, made by
``buf build proto --exclude-source-info -o ...``) and tags the commit ``vX.Y.Z``. The
image makes the check work from any clone, with or without tags; where the tag is present
the image must match what the tag holds. The check is shown to catch a break, so it cannot
pass by checking nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).parent / "buf"
RELEASES = ROOT / "proto" / "releases"
# Every package of the first release (v0.1.0); a release never loses one.
FIRST_RELEASE_PACKAGES = {
    f"silolink.{area}.v1"
    for area in (
        "admin agent analytics audit catalog common control enrollment exchange inference registry training".split()
    )
}


def newest_release() -> tuple[str, Path]:
    images = sorted(RELEASES.glob("v*.binpb"), key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.stem)))
    assert images, f"no released API image in {RELEASES}"
    return images[-1].stem, images[-1]


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    assert BUF.exists(), "buf comes with the dev extra (buf-bin)"
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def files_of(image: bytes) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    # A buf image is wire-compatible with a FileDescriptorSet.
    return {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(image).file}


def test_the_released_image_holds_the_whole_api():
    _, image = newest_release()
    packages = {f.package for f in files_of(image.read_bytes()).values()}
    assert FIRST_RELEASE_PACKAGES <= packages


def test_no_breaking_change_since_the_last_release():
    _, image = newest_release()
    proc = buf("breaking", "proto", "--against", str(image))
    assert proc.returncode == 0, (
        "a breaking change to a released API (add a field or a new package version instead; see README, "
        f"'API versions'):\n{proc.stdout}{proc.stderr}"
    )


def test_the_check_catches_a_break(tmp_path):
    _, image = newest_release()
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("releases"))
    registry = tmp_path / "proto" / "silolink" / "registry" / "v1" / "registry.proto"
    text = registry.read_text()
    assert "  uint32 canary = 4;\n" in text
    registry.write_text(text.replace("  uint32 canary = 4;\n", ""))
    proc = buf("breaking", "proto", "--against", str(image), cwd=tmp_path)
    assert proc.returncode != 0 and "canary" in proc.stdout, proc.stdout + proc.stderr


def test_the_release_tag_holds_the_committed_image(tmp_path):
    version, image = newest_release()
    tagged = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", f"refs/tags/{version}"], cwd=ROOT, capture_output=True
    )
    if tagged.returncode != 0:
        pytest.skip(f"this clone has no tag {version} (the committed image is checked above)")
    built = tmp_path / "tagged.binpb"
    proc = buf("build", f".git#tag={version},subdir=proto", "--exclude-source-info", "-o", str(built))
    assert proc.returncode == 0, proc.stderr
    assert files_of(built.read_bytes()) == files_of(image.read_bytes())
