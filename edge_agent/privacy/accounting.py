"""What a differentially private release costs, worked out by the site itself.

- A noised query answer (the discrete Laplace mechanism in ``edge_agent.analytics.noise``)
  is epsilon-DP for the epsilon the site calibrated it to, with delta 0. Answers compose
  sequentially: k answers spend the sum of their epsilons (basic composition).
- A DP training job (Flower's server-side fixed clipping: each round releases the sum of
  clipped updates plus Gaussian noise of ``noise_multiplier`` times the clipping norm) is
  accounted with dp-accounting's RDP accountant, the same accountant the coordinator's DP
  wrapper uses: ``rounds`` Gaussian releases, no sampling amplification, the site's whole
  dataset as the unit (one site added or removed). The site computes this from the job's
  declared noise multiplier and the rounds it agreed to, never from the coordinator's figure.

Across spends, the ledger adds epsilons and deltas (basic composition), which holds for any
mix of mechanisms and never under-counts.
"""

from __future__ import annotations

import functools
import math

from silolink import errors

# The largest number of rounds one job may reserve: beyond this RDP gives nothing useful.
MAX_ROUNDS = 100_000


@functools.lru_cache(maxsize=256)
def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``rounds`` Gaussian releases with ``noise_multiplier`` (RDP)."""
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise errors.InvalidArgument("a DP job needs a positive, finite noise multiplier")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise errors.InvalidArgument(f"a DP job must declare between 1 and {MAX_ROUNDS} rounds")
    if not 0 < delta < 1:
        raise errors.InvalidArgument("delta must be between 0 and 1")
    # dp-accounting pulls in scipy (seconds to import): only when a DP job arrives.
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    accountant = rdp.RdpAccountant(neighboring_relation=rdp.NeighborRel.ADD_OR_REMOVE_ONE)
    accountant.compose(dp_event.GaussianDpEvent(noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


def laplace_epsilon(epsilon: float) -> float:
    """The epsilon one noised answer spends: the epsilon its noise was calibrated to."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise errors.InvalidArgument("a noised answer needs a positive, finite epsilon")
    return epsilon
