"""The site builds with `mkdocs build --strict` and loads nothing from another host."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest

from .pages import DOCS, ROOT

MERMAID = DOCS / "assets" / "vendor" / "mermaid"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_strict_build_succeeds_with_every_page(site):
    for page in ["index.html", "getting-started.html", "security.html", "concepts/sites.html"]:
        assert (site / page).exists(), page
    # The generated reference is there, one page per CLI and per proto package.
    for page in ["reference/cli/cloud-coordinator.html", "reference/cli/edge-agent.html", "reference/config.html"]:
        assert (site / page).exists(), page
    assert (site / "reference/proto/silolink.admin.v1.html").exists()
    assert "<h2" in (site / "reference/cli/edge-agent.html").read_text()


def test_the_site_loads_nothing_from_another_host(site):
    loads = re.compile(r"<(?:script|img|iframe|source)[^>]*\ssrc=\"([^\"]+)\"|<link[^>]*\shref=\"([^\"]+)\"", re.I)
    remote = []
    for page in site.rglob("*.html"):
        for m in loads.finditer(page.read_text()):
            url = m.group(1) or m.group(2)
            if url.startswith(("http:", "https:", "//")):
                remote.append(f"{page.relative_to(site)}: {url}")
    assert not remote, remote
    for css in site.rglob("*.css"):
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", css.read_text()), css  # no web fonts


def test_diagrams_render_with_the_vendored_mermaid(site):
    page = (site / "concepts" / "sites.html").read_text()
    assert 'class="mermaid"' in page
    assert re.search(r'<script src="[./]*assets/vendor/mermaid/mermaid\.min\.js"', page)
    source = (MERMAID / "SOURCE.txt").read_text()
    digest = hashlib.sha256((MERMAID / "mermaid.min.js").read_bytes()).hexdigest()
    assert f"sha256 {digest}" in source, "mermaid.min.js changed: update SOURCE.txt"
