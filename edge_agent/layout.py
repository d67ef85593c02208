"""Where the agent keeps things inside its data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgentLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "agent.toml"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def identity(self) -> Path:
        """The site's private key and certificate in one file, so renewal swaps both at once."""
        return self.pki / "identity.pem"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.pem"

    @property
    def state_db(self) -> Path:
        """The agent's own state: installed models and what the capabilities track."""
        return self.root / "agent.db"

    @property
    def catalog_db(self) -> Path:
        """The site's data: one table per dataset. Its rows never leave the site."""
        return self.root / "catalog.db"

    @property
    def model_blobs(self) -> Path:
        """Installed ONNX files, named by their SHA-256."""
        return self.root / "models" / "blobs"

    @property
    def apps_dir(self) -> Path:
        """Installed Flower apps, unpacked under ``NAME/VERSION/SHA256/``."""
        return self.root / "apps"

    @property
    def endpoints(self) -> Path:
        """Written by a running agent: the local API address it bound."""
        return self.root / "run" / "endpoints.json"

    def local_address(self, listen: str) -> str:
        """``unix:NAME`` relative to the data directory becomes an absolute socket path."""
        if listen.startswith("unix:") and not listen.startswith("unix:/"):
            return f"unix:{(self.root / listen[5:]).resolve()}"
        return listen
