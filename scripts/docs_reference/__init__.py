"""Reference pages generated from the code, so they cannot drift from it.

Each module turns one source of truth into Markdown and lists what is undocumented:

- ``cli``: every command and option of the click CLIs (``cloud-coordinator``, ``edge-agent``,
  ``silolink``), from their help texts;
- ``proto``: every service, method, message, field and enum under ``proto/``, from the
  comments protoc keeps in its descriptors;
- ``config``: every setting of ``coordinator.toml`` and ``agent.toml``, from the config
  dataclasses in ``silolink/config.py`` and the comment above each field.

``hook.py`` is the MkDocs hook that writes these pages at build time (nothing generated is
committed); ``tests/docs/`` fails when anything is undocumented.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def md_cell(text: str) -> str:
    """Text made safe for one cell of a Markdown table."""
    return " ".join(text.split()).replace("|", "\\|")
