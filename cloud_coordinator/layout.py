"""Where the coordinator keeps things inside its data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CoordinatorLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "coordinator.toml"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_key(self) -> Path:
        return self.pki / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.pem"

    @property
    def server_key(self) -> Path:
        return self.pki / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.pki / "server.pem"

    @property
    def audit_key(self) -> Path:
        """Signs audit entries; kept apart from the CA key."""
        return self.pki / "audit.key"

    @property
    def operator(self) -> Path:
        return self.root / "operator"

    @property
    def operator_credentials(self) -> Path:
        """A single file a remote operator copies: address, CA, certificate and key."""
        return self.operator / "credentials.json"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def database(self) -> Path:
        return self.state / "coordinator.db"

    @property
    def endpoints(self) -> Path:
        """Written by a running coordinator: the addresses it actually bound."""
        return self.root / "run" / "endpoints.json"
