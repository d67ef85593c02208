"""Flower's own strategies, configured from a job spec (they run unchanged)."""

from __future__ import annotations

from .store import JobSpec

DP_DELTA = 1e-5


def build(spec: JobSpec, population: int):
    """The strategy for ``spec``; wrapped for server-side DP with an RDP accountant if asked."""
    from flwr.serverapp import strategy as flower

    common = dict(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=spec.min_sites,
        min_evaluate_nodes=spec.min_sites,
        min_available_nodes=spec.min_sites,
    )
    if spec.strategy == "fedprox":
        strategy = flower.FedProx(proximal_mu=spec.proximal_mu, **common)
    elif spec.strategy == "fedadam":
        strategy = flower.FedAdam(eta=spec.server_learning_rate, eta_l=spec.learning_rate, **common)
    else:
        strategy = flower.FedAvg(**common)
    if spec.dp_noise_multiplier > 0:
        from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=DP_DELTA,
                population_size=population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        strategy = flower.DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=spec.dp_noise_multiplier,
            clipping_norm=spec.dp_clipping_norm,
            num_sampled_clients=population,
            accountant=accountant,
        )
    return strategy
