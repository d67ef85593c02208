"""``edge-agent privacy``: the site's privacy ledger."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, iso, table

from ..privacy import PrivacyLedger, ledger_path
from .options import data_dir_option, json_option


def _describe(detail: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(detail.items()))


@click.group()
def privacy() -> None:
    """What each dataset has given away in differential privacy, per study."""


@privacy.command()
@click.option("--study", help="Only this study's spends.")
@click.option("--dataset", help="Only spends on this dataset.")
@data_dir_option
@json_option
@handle_errors
def ledger(study: str | None, dataset: str | None, data_dir: Path, as_json: bool) -> None:
    """List every privacy spend, oldest first, with the query or job behind it."""
    book = PrivacyLedger.open(ledger_path(data_dir.resolve()))
    spends = book.spends(study, dataset)
    if as_json:
        echo_json([s.to_dict() for s in spends])
        return
    if not spends:
        click.echo("no privacy spends recorded" + (" for that selection" if study or dataset else ""))
        return
    rows = [
        [s.seq, iso(s.at), s.study, s.dataset, s.kind, s.work_id, s.mechanism, f"{s.epsilon:.4g}",
         f"{s.delta:.3g}", _describe(s.detail)]
        for s in spends
    ]  # fmt: skip
    click.echo(table(["#", "at", "study", "dataset", "kind", "work", "mechanism", "epsilon", "delta", "detail"], rows))
    totals: dict[tuple[str, str], list[float]] = {}
    for s in spends:
        total = totals.setdefault((s.study, s.dataset), [0.0, 0.0])
        total[0] += s.epsilon
        total[1] += s.delta
    click.echo("")
    for (st, ds), (eps, delta) in sorted(totals.items()):
        click.echo(f"study {st}, dataset {ds}: epsilon {eps:.4g} spent, delta {delta:.3g}")
