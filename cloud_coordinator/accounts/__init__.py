"""Operator accounts with roles (viewer, operator, admin), used by the CLI and the console.

``build`` makes the AccountService early, because the server's authenticator needs it to
look up each operator's role per call; ``attach`` serves its gRPC services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..app import Coordinator
    from .service import AccountService


def build(coordinator: Coordinator) -> AccountService:
    from .service import AccountService, Certificates, SessionLimits
    from .store import AccountStore
    from .throttle import LoginThrottle

    cfg = coordinator.config.accounts
    return AccountService(
        AccountStore(coordinator.db, coordinator.db_lock),
        Certificates(coordinator.ca, coordinator.sites, coordinator.config.operator_cert_lifetime_s),
        coordinator.audit,
        setup_ttl_s=cfg.setup_ttl_s,
        sessions=SessionLimits(idle_s=cfg.session_idle_s, max_s=cfg.session_max_s),
        throttle=LoginThrottle(cfg.login_max_failures, cfg.login_window_s, cfg.login_lockout_s),
        clock=coordinator.clock,
    )


def attach(coordinator: Coordinator) -> list[ServiceMount]:
    from .servicer import mounts

    return mounts(coordinator.accounts, lambda: coordinator.public_addresses)
