"""Rollouts: which sites get which version, the orders sent down their control streams,
and each site's progress.

A rollout resolves its site selectors (the grammar queries and training jobs use; a
union) to sites once, when it starts, and records one order per site. Orders go to
connected sites at once and to the others when they connect; the agent answers each with
the order's state and reports later progress itself. A newer order for the same model at a site supersedes older open
ones there, and a site's active order supersedes the one it replaced. With a canary of K,
the first K sites (by name) get the order and the rest are held until the operator
continues the rollout, which is refused until every canary site is active.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from silolink import errors
from silolink.gen.common.v1.site_pb2 import SiteSelector
from silolink.gen.registry.v1 import registry_pb2 as pb

from ..audit.store import AuditLog
from ..control.hub import ControlHub
from ..exchange.committer import GroupCommitter
from ..sites import selector as site_selector
from ..sites.service import SiteService
from ..sites.store import SiteRecord
from .delivery import Delivery
from .models import ModelRegistry
from .store import FINAL_STATES, OPEN_STATES, STATES, OrderRecord, RegistryStore, RolloutRecord

log = logging.getLogger(__name__)
# Progress only moves forward; a late "pending" answer never undoes a "downloading" report.
RANK = {"held": 0, "pending": 1, "downloading": 2, "verified": 3, "awaiting_approval": 4, "active": 5,
        "failed": 5, "superseded": 6}  # fmt: skip
STATE_TO_PROTO = {s: pb.RolloutState.Value(f"ROLLOUT_STATE_{s.upper()}") for s in STATES}
PROTO_TO_STATE = {v: k for k, v in STATE_TO_PROTO.items()}
# Reconnected sites whose open orders are looked up in one query.
REDELIVERY_BATCH = 500
# States in which a site no longer needs its delivery slot (it has the file, or is out).
SETTLED = ("verified", "awaiting_approval", "active", "failed", "superseded")
# Status reports and answers applied in one transaction at most.
REPORT_BATCH = 2000
REPORT_TIMEOUT_S = 30.0


class Rollouts:
    def __init__(
        self,
        store: RegistryStore,
        models: ModelRegistry,
        sites: SiteService,
        hub: ControlHub,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        concurrency: int = 64,
        slot_timeout_s: float = 300.0,
    ) -> None:
        """Orders go out in the background, to at most ``concurrency`` sites at a time
        (see delivery.py); status reports are applied in batches, one transaction each."""
        self.store = store
        self._models = models
        self._sites = sites
        self._hub = hub
        self._audit = audit
        self._clock = clock
        # Sites that (re)connected, waiting for their open orders to be sent again: one
        # worker takes them in batches, so a reconnect storm is a few queries, not a
        # thread and a query per site.
        self._arrivals: queue.Queue[str | None] = queue.Queue()
        self.studies: Any = None  # cloud_coordinator.studies.StudyService, set by attach
        self._redelivery = threading.Thread(target=self._redeliver, name="rollout-redelivery", daemon=True)
        self._redelivery.start()
        self.delivery = Delivery(self._send_key, concurrency, slot_timeout_s)
        self._updates: GroupCommitter = GroupCommitter(
            self._commit_updates, REPORT_BATCH, name="rollout", what="status report"
        )
        self._commands: dict[tuple[str, str], pb.InstallModelCommand] = {}
        self._rollout_studies: dict[str, str] = {}
        hub.on_change(self._site_changed)

    def stop(self) -> None:
        """Stop delivering and applying reports (before the database closes)."""
        self._arrivals.put(None)
        self._redelivery.join(10)
        self.delivery.stop()
        self._updates.stop()

    # -- operator actions ----------------------------------------------------------------
    def start(
        self,
        name: str,
        version: str,
        selectors: list[SiteSelector],
        canary: int = 0,
        actor: Any = "coordinator",
        study: str = "",
    ) -> tuple[RolloutRecord, list[OrderRecord]]:
        """Order the sites ``selectors`` choose to install and activate ``name:version``.

        ``actor`` is the caller's identity; with studies, it must run work in ``study``, and
        every chosen site must have accepted the study."""
        if self.studies is not None:
            study = self.studies.authorize(study, actor, "analyst")
        actor = str(actor)
        record = self._models.get(name, version)
        if record.deprecated_at is not None:
            raise errors.FailedPrecondition(f"model {record.ref} is deprecated and cannot be rolled out")
        sites = self.resolve(selectors)
        if self.studies is not None:
            self.studies.require_scope(study, [s.name for s in sites], f"rollout of {name}:{version}")
        if canary < 0:
            raise errors.InvalidArgument("--canary must be a positive number of sites")
        targets = [site_selector.render(s) for s in selectors]
        rollout = self._create(name, version, "rollout", targets, sites, canary, actor, study)
        self._audit.record(actor, "model.rollout", f"{name}:{version}", rollout_id=rollout.rollout_id,
                           targets=rollout.targets, canary=canary, sites=[s.name for s in sites])  # fmt: skip
        return rollout, self._deliver_rollout(rollout.rollout_id)

    def resume(self, name: str, version: str, actor: str = "coordinator") -> tuple[RolloutRecord, list[OrderRecord]]:
        """Send a canary rollout's held sites their orders once every canary site is active."""
        rollout = self.store.latest_rollout(name, version)
        if rollout is None:
            raise errors.NotFound(f"model {name}:{version} has not been rolled out")
        orders = self.store.orders("rollout_id = ?", [rollout.rollout_id])
        held = [o for o in orders if o.state == "held"]
        if not held:
            raise errors.FailedPrecondition(f"the latest rollout of {name}:{version} holds no sites back")
        waiting = [o for o in orders if o.state != "held" and o.state not in ("active", "superseded")]
        if waiting:
            listed = ", ".join(f"{o.site} ({o.state}{': ' + o.reason if o.reason else ''})" for o in waiting)
            raise errors.FailedPrecondition(
                f"the canary sites are not all active yet: {listed}; continue once they are, "
                f"or roll back with `models rollback {name} --to VERSION`"
            )
        with self.store.atomic():
            for order in held:
                self._supersede_open(order.site, name, rollout.rollout_id)
                self.store.update_order(rollout.rollout_id, order.site, state="pending", updated_at=self._clock())
            self._audit.record(actor, "model.rollout.continue", f"{name}:{version}", rollout_id=rollout.rollout_id,
                               sites=[o.site for o in held])  # fmt: skip
        return rollout, self._deliver_rollout(rollout.rollout_id)

    def rollback(
        self, name: str, to_version: str, actor: str = "coordinator"
    ) -> tuple[RolloutRecord, list[OrderRecord]]:
        """Order every (unrevoked) site that was sent any version of ``name`` back to ``to_version``."""
        record = self._models.get(name, to_version)
        if record.deprecated_at is not None:
            raise errors.FailedPrecondition(
                f"model {record.ref} is deprecated; roll back to a version that is not, or push a new one"
            )
        names = sorted({o.site for o in self.store.orders("name = ?", [name])})
        sites = [s for s in self._sites.list_sites() if s.name in names and s.revoked_at is None]
        if not sites:
            raise errors.FailedPrecondition(f"no site was sent model {name}; there is nothing to roll back")
        targets = [f"site={s.name}" for s in sites]
        # A rollback belongs to the study of the name's latest rollout: its sites accepted that one.
        latest = self.store.latest_of_name(name)
        rollout = self._create(name, to_version, "rollback", targets, sites, 0, actor, latest.study if latest else "")
        self._audit.record(actor, "model.rollback", f"{name}:{to_version}", rollout_id=rollout.rollout_id,
                           sites=[s.name for s in sites])  # fmt: skip
        return rollout, self._deliver_rollout(rollout.rollout_id)

    def status(self, name: str, version: str) -> list[OrderRecord]:
        """Each site's latest order for ``name:version``, by site name."""
        return self.status_page(name, version)[0]

    def status_page(
        self, name: str, version: str, state: str = "", limit: int = 0, offset: int = 0
    ) -> tuple[list[OrderRecord], int, dict[str, int]]:
        """One page of each site's latest order for ``name:version`` (by site name; ``state``
        "" for any), how many sites match, and how many are in each state. SQL does the
        work: a version rolled out to 10,000 sites costs a page, not 10,000 records."""
        self._models.get(name, version)
        if state and state not in STATES:
            raise errors.InvalidArgument(f"rollout state {state!r} is not one of {', '.join(STATES)}")
        return self.store.latest_orders(name, version, state, limit, offset)

    def active(self, limit: int = 20) -> list[tuple[str, str, int, dict[str, int]]]:
        """(name, version, sites sent it, sites per state that is not final) for the versions
        some site is still on its way to, the most recently rolled out first."""
        found = self.store.open_by_version(("held", *OPEN_STATES))[:limit]
        return [(name, version, self.store.sites_sent(name, version), counts) for name, version, counts, _ in found]

    def resolve(self, selectors: list[SiteSelector]) -> list[SiteRecord]:
        """The unrevoked sites ``selectors`` choose (a union), by name. Unlike a query, a
        rollout refuses a selector that matches no site (a typo would otherwise leave sites
        on the old version unnoticed) and includes sites added but not yet enrolled (they get
        the order when they connect)."""
        if not selectors:
            raise errors.InvalidArgument("name the sites: --to kind=hospital, --to region=north or --to SITE")
        sites = self._sites.list_sites()
        chosen: dict[str, SiteRecord] = {}
        for selector in selectors:
            if selector.site:
                site = self._sites.get_site(selector.site)  # NotFound names the unknown site
                if site.revoked_at is not None:
                    raise errors.FailedPrecondition(f"site {site.name} is revoked; it cannot receive models")
            site_selector.check(selector)
            matched = [s for s in sites if s.revoked_at is None and site_selector.matches(s, selector)]
            if not matched:
                raise errors.InvalidArgument(
                    f"--to {site_selector.render(selector)} matches no site that can receive models; "
                    "`cloud-coordinator sites list` shows the sites, their kinds and tags"
                )
            chosen.update({s.name: s for s in matched})
        return [chosen[n] for n in sorted(chosen)]

    # -- agents --------------------------------------------------------------------------
    def report(self, site: str, rollout_id: str, state: str, reason: str = "", bytes_received: int = 0) -> None:
        """A site's progress on one of its orders."""
        if state not in STATES or state in ("held", "superseded"):
            raise errors.InvalidArgument(f"{state!r} is not a state a site can report")
        # Applied with other sites' reports in one transaction; answered once it committed.
        (outcome,) = self._updates.submit([(site, rollout_id, state, reason, bytes_received)]).result(REPORT_TIMEOUT_S)
        if isinstance(outcome, errors.SiloError):
            raise outcome

    def check_download(self, site: str, name: str, version: str) -> tuple[str, int]:
        """The blob's path and size, if ``site`` was sent an order for ``name:version``."""
        orders = self.store.orders("site = ? and name = ? and version = ? and state != 'held'", [site, name, version])
        if not orders:
            raise errors.PermissionDenied(f"site {site} has no order for model {name}:{version}")
        record = self._models.get(name, version)
        path = self._models.blob_path(record.sha256)
        if not path.exists():
            raise errors.Internal(f"the blob of {record.ref} is missing from the registry")
        return str(path), record.size_bytes

    # -- internals -----------------------------------------------------------------------
    def _create(self, name, version, kind, targets, sites, canary, actor, study="") -> RolloutRecord:
        now = self._clock()
        rollout = RolloutRecord(uuid.uuid4().hex[:16], name, version, kind, canary, targets, actor, now, study)
        orders = [
            OrderRecord(rollout.rollout_id, s.name, name, version, i, "held" if canary and i >= canary else "pending",
                        "waiting for `models rollout --continue`" if canary and i >= canary else "", 0, now)
            for i, s in enumerate(sites)
        ]  # fmt: skip
        with self.store.atomic():
            for order in orders:
                if order.state == "pending":
                    self._supersede_open(order.site, name, rollout.rollout_id)
            self.store.add_rollout(rollout, orders)
        log.info("%s %s of %s:%s to %d site(s)", kind, rollout.rollout_id, name, version, len(orders))
        return rollout

    def _supersede_open(self, site: str, name: str, newer_rollout: str) -> None:
        for old in self.store.orders(
            f"site = ? and name = ? and rollout_id != ? and state in ({','.join('?' * 5)})",
            [site, name, newer_rollout, "held", *OPEN_STATES],
        ):
            self.store.update_order(old.rollout_id, site, state="superseded", reason="replaced by a newer order",
                                    updated_at=self._clock())  # fmt: skip
            self.delivery.release(old.rollout_id, site)

    def _deliver_rollout(self, rollout_id: str) -> list[OrderRecord]:
        """Queue the rollout's pending orders for delivery; its orders as they stand now."""
        orders = self.store.orders("rollout_id = ?", [rollout_id])
        self.delivery.enqueue((o.rollout_id, o.site) for o in orders if o.state == "pending")
        return orders

    def _site_changed(self, site: str, connected: bool) -> None:
        if connected:
            self._arrivals.put(site)
        else:
            self.delivery.release_site(site)

    def _redeliver(self) -> None:
        while True:
            site = self._arrivals.get()
            if site is None:
                return
            sites = {site}
            while len(sites) < REDELIVERY_BATCH:
                try:
                    more = self._arrivals.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    return
                sites.add(more)
            self._deliver_sites(sorted(sites))

    def _deliver_sites(self, sites: list[str]) -> None:
        try:
            states = ",".join("?" * len(OPEN_STATES))
            names = ",".join("?" * len(sites))
            orders = self.store.orders(f"site in ({names}) and state in ({states})", [*sites, *OPEN_STATES])
            self.delivery.enqueue((o.rollout_id, o.site) for o in orders)
        except Exception:  # noqa: BLE001 - a failed redelivery is retried at the next connect
            log.exception("could not send pending model orders to %d site(s)", len(sites))

    def _send_key(self, rollout_id: str, site: str) -> bool:
        """Send one queued order if it is still open and its site connected (delivery thread)."""
        if not self._hub.is_connected(site):
            return False  # sent when the site connects
        order = self.store.order(rollout_id, site)
        if order is None or order.state not in OPEN_STATES:
            return False
        try:
            future = self._hub.request(site, install_model=self._command(order))
        except (errors.Unavailable, errors.ResourceExhausted):
            return False  # sent again when the site (re)connects
        future.add_done_callback(lambda f: self._answered(order, f))
        return True

    def _command(self, order: OrderRecord) -> pb.InstallModelCommand:
        key = (order.name, order.version)
        template = self._commands.get(key)
        if template is None:
            record = self._models.get(order.name, order.version)
            template = pb.InstallModelCommand(
                name=order.name,
                version=order.version,
                manifest=record.manifest,
                manifest_signature=record.manifest_signature,
                signer_certificate_pem=self._models.signer.certificate_pem,
            )
            self._commands[key] = template
        command = pb.InstallModelCommand()
        command.CopyFrom(template)
        command.rollout_id = order.rollout_id
        command.study = self._study_of(order.rollout_id)
        return command

    def _study_of(self, rollout_id: str) -> str:
        """The study a rollout belongs to (the site checks it), remembered: rollouts never change study."""
        study = self._rollout_studies.get(rollout_id)
        if study is None:
            rollout = self.store.get_rollout(rollout_id)
            study = self._rollout_studies[rollout_id] = rollout.study if rollout else ""
        return study

    def _answered(self, order: OrderRecord, future: Future) -> None:
        try:
            result = future.result().install_model
            state, reason = PROTO_TO_STATE.get(result.state, "pending"), result.reason
        except errors.Unavailable:
            self.delivery.release(order.rollout_id, order.site)
            return  # the site went away first; the order stays open and is re-sent
        except errors.SiloError as e:
            state, reason = "failed", e.message
        except Exception:  # noqa: BLE001 - a callback must not die silently
            log.exception("handling the answer of %s to rollout %s failed", order.site, order.rollout_id)
            return
        self._updates.submit([(order.site, order.rollout_id, state, reason, 0)])

    def _commit_updates(self, items: list[tuple[str, str, str, str, int]], _: object) -> list:
        """Apply a batch of reports and answers in one transaction (the committer thread)."""
        outcomes: list = []
        changes = []
        with self.store.atomic():
            for site, rollout_id, state, reason, bytes_received in items:
                change = self._apply(site, rollout_id, state, reason, bytes_received)
                if isinstance(change, errors.SiloError):
                    outcomes.append(change)
                    continue
                outcomes.append(None)
                if change is not None:
                    changes.append(change)
        for site, rollout_id, ref, state, reason in changes:
            if state in SETTLED:
                self.delivery.release(rollout_id, site)
            if state == "failed":
                log.warning("site %s: %s failed (%s)", site, ref, reason)
            else:
                log.debug("site %s: %s %s", site, ref, state)
        return outcomes

    def _apply(self, site: str, rollout_id: str, state: str, reason: str, bytes_received: int = 0):
        """One report or answer, inside the batch's transaction: NotFound, the change
        (site, rollout, model, state, reason), or None when it changes nothing."""
        current = self.store.order(rollout_id, site)
        if current is None:
            return errors.NotFound(f"site {site} has no order in rollout {rollout_id!r}")
        if current.state in FINAL_STATES or RANK[state] < RANK[current.state]:
            return None
        values = {"state": state, "reason": reason, "updated_at": self._clock()}
        if bytes_received:
            values["bytes_received"] = bytes_received
        elif state in ("verified", "awaiting_approval", "active"):
            values["bytes_received"] = self._models.get(current.name, current.version).size_bytes
        self.store.update_order(rollout_id, site, **values)
        if state == "active":
            for old in self.store.orders(
                "site = ? and name = ? and rollout_id != ? and state = 'active'", [site, current.name, rollout_id]
            ):
                self.store.update_order(old.rollout_id, site, state="superseded",
                                        reason=f"replaced by {current.name}:{current.version}",
                                        updated_at=self._clock())  # fmt: skip
        if state == current.state:
            return None
        return site, rollout_id, f"{current.name}:{current.version}", state, reason
