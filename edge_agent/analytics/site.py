"""The site's side of a federated query: policy, local computation, both masking rounds.

Round 1 (``setup``) does everything that can refuse: policy, dataset, columns, filter,
minimum cohort, noise bounds. Only then does it compute, add noise, and answer with a signed
ephemeral key; the values wait in memory. Round 2 (``mask``) checks every participant's
signed key and answers with the masked vector, once: the state is dropped whatever happens,
so the same values are never masked twice.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from silolink import errors, pki
from silolink.analytics import secagg
from silolink.analytics.query import MODULUS, STATISTIC_NAMES, check_query
from silolink.config import SHARE_LEVELS, AnalyticsConfig
from silolink.gen.analytics.v1 import analytics_pb2 as pb

from ..catalog.sources import open_source
from ..catalog.store import Catalog
from ..identity import SiteIdentity
from .compute import compute
from .noise import add_noise

log = logging.getLogger(__name__)

QUERY_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_PENDING = 32
MAX_SITES = 1_000_000
REMEMBERED_IDS = 4096


@dataclass
class _Pending:
    query: pb.Query
    participants: secagg.Participants
    key: X25519PrivateKey
    public_key: bytes
    values: list[int]
    expires_at: float


class SiteAnalytics:
    """Answers the coordinator's analytics commands for one site."""

    def __init__(
        self,
        catalog: Catalog,
        catalog_db: Path,
        identity: Callable[[], SiteIdentity],
        config: AnalyticsConfig,
        share: str,
        clock: Callable[[], float] = time.monotonic,
        terms: Callable[[pb.Query], Any] | None = None,
    ) -> None:
        self._catalog = catalog
        # The study's terms for a query (edge_agent.studies.gate.QueryTerms): its minimum cohort,
        # its noise, and its payment to the privacy ledger. None: [analytics] alone decides.
        self._terms = terms
        self._catalog_db = catalog_db
        self._identity = identity  # read at each query: renewal may have replaced it
        self._config = config
        self._show_schema = SHARE_LEVELS.index(share) >= SHARE_LEVELS.index("schema")
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    # -- round 1 -------------------------------------------------------------------------
    def setup(self, command: pb.AnalyticsSetupCommand) -> pb.AnalyticsSetupResult:
        identity = self._identity()
        query, participants = command.query, secagg.Participants.of(command)
        self._check_participants(command.query_id, identity.site, participants)
        with self._lock:
            if command.query_id in self._seen:
                raise errors.AlreadyExists(f"query {command.query_id} was already set up here; start a new query")
        check_query(query)
        dataset = self._dataset(query.dataset)
        statistic = STATISTIC_NAMES[query.statistic]
        terms = self._terms(query) if self._terms else None
        epsilon = terms.epsilon if terms else self._config.epsilon
        if epsilon > 0 and statistic in ("sum", "mean") and not query.HasField("bounds"):
            raise errors.FailedPrecondition(
                f"this site adds noise (epsilon {epsilon:g}), so {statistic} needs clipping bounds: "
                "add --clip LO:HI to bound what one row can add"
            )
        local = compute(open_source(dataset, self._catalog_db), query, self._show_schema)
        minimum = max(self._config.min_cohort, terms.min_cohort) if terms else self._config.min_cohort
        # Say only that the cohort is too small, never how small: the size is the secret.
        if local.cohort < minimum:
            raise errors.FailedPrecondition(
                f"the query matches fewer rows here than this site's minimum cohort of {minimum}; "
                "widen the filter or ask other sites"
            )
        small = sum(1 for c in local.bins if 0 < c < minimum)
        if small:
            raise errors.FailedPrecondition(
                f"{small} histogram bin(s) here would hold fewer rows than this site's minimum cohort of "
                f"{minimum}; use wider bins"
            )
        limit = MODULUS // 2 // participants.count
        if any(abs(v) >= limit for v in local.values):
            raise errors.InvalidArgument(
                f"{statistic} of {query.column!r} here is too large to add up exactly; clip it with --clip LO:HI"
            )
        if terms:  # paid for before the noised answer exists; a refusal leaves nothing spent
            terms.charge(command.query_id, epsilon)
        values = add_noise(local.values, query, epsilon)
        key, public_key = secagg.new_key()
        message = participants.transcript(command.query_id, query, identity.site, public_key)
        signature = secagg.sign(identity.key, message)
        with self._lock:
            self._expire()
            if command.query_id in self._seen:
                raise errors.AlreadyExists(f"query {command.query_id} was already set up here; start a new query")
            if len(self._pending) >= MAX_PENDING:
                raise errors.ResourceExhausted(
                    f"this site already has {MAX_PENDING} queries waiting for their second round; retry later"
                )
            self._remember(command.query_id)
            self._pending[command.query_id] = _Pending(
                query, participants, key, public_key, values, self._clock() + self._config.pending_ttl_s
            )
        log.info(
            "query %s: %s on %s across %d sites: round 1 answered", command.query_id, statistic, dataset.name,
            participants.count,
        )  # fmt: skip
        return pb.AnalyticsSetupResult(
            public_key=public_key,
            signature=signature,
            certificate_pem=pki.cert_to_pem(identity.cert),
            vector_length=len(values),
            epsilon=epsilon,
        )

    def _check_participants(self, query_id: str, site: str, participants: secagg.Participants) -> None:
        if not QUERY_ID.match(query_id):
            raise errors.InvalidArgument("the query id must be 8 to 64 letters, digits, '-' or '_'")
        participants.check(site, MAX_SITES)
        if participants.count < self._config.min_sites:
            raise errors.FailedPrecondition(
                f"this site takes part only in queries across at least {self._config.min_sites} sites; "
                f"this one has {participants.count}"
            )

    def _dataset(self, name: str):
        allowed = self._config.datasets
        if "*" not in allowed and name not in allowed:
            raise errors.PermissionDenied(
                f"this site's policy does not allow queries on dataset {name!r} ([analytics] datasets in agent.toml)"
            )
        try:
            return self._catalog.describe(name)
        except errors.NotFound:
            # The catalog's own message lists every dataset; the share policy may forbid that.
            raise errors.NotFound(f"this site has no dataset named {name!r}") from None

    # -- round 2 -------------------------------------------------------------------------
    def mask(self, command: pb.AnalyticsMaskCommand) -> pb.AnalyticsMaskResult:
        identity = self._identity()
        with self._lock:
            self._expire()
            pending = self._pending.pop(command.query_id, None)
        if pending is None:
            raise errors.FailedPrecondition(
                f"no query {command.query_id} waits for its second round here "
                "(already answered, expired, or the agent restarted); run the query again"
            )
        pending.participants.check_peers(identity.site, command.peers)
        ca = x509.load_pem_x509_certificate(identity.ca_pem)
        for peer in command.peers:
            if peer.site == identity.site:
                if peer.public_key != pending.public_key:
                    raise errors.PermissionDenied("the key relayed as this site's own is not the one it sent")
                continue
            pending.participants.verify(peer, ca, command.query_id, pending.query)
        masked = secagg.mask(pending.values, pending.key, identity.site, command.peers, command.query_id, pending.query)
        log.info("query %s: round 2 answered", command.query_id)
        return pb.AnalyticsMaskResult(masked=masked)

    # -- state ---------------------------------------------------------------------------
    def _expire(self) -> None:
        now = self._clock()
        for query_id in [q for q, p in self._pending.items() if p.expires_at <= now]:
            del self._pending[query_id]
            log.info("query %s: dropped, round 2 did not come in time", query_id)

    def _remember(self, query_id: str) -> None:
        self._seen[query_id] = None
        while len(self._seen) > REMEMBERED_IDS:
            self._seen.popitem(last=False)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)
