"""``silolink``: the project's front door (``silolink demo``)."""

from __future__ import annotations

import click

from silolink import __version__
from silolink.cli_util import CommandGroup


@click.group(cls=CommandGroup)
@click.version_option(__version__, prog_name="silolink")
def main() -> None:
    """silolink: learn from hospital and factory data without moving it."""


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the demo's files here instead of a temp dir.")
def demo(workdir: str | None) -> None:
    """Run a coordinator and agents for two hospitals and a factory here, with real mTLS."""
    from silolink_demo import run_demo

    raise SystemExit(run_demo(workdir))


@main.command("sample-data")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--site", "sites", multiple=True, default=("hospital-a", "hospital-b"), show_default=True,
    help="A hospital to write patients for (repeatable); each gets its own share, no patient in two.",
)  # fmt: skip
def sample_data(directory: str, sites: tuple[str, ...]) -> None:
    """Write real example patients, one CSV per hospital, to try silolink with (needs the demo extra).

    The rows are scikit-learn's breast cancer data set (569 patients, 30 measurements and a
    diagnosis, 1 = benign), shuffled and split between the hospitals as the demo does; a fifth
    is held back as public reference data. Columns: patient_id, the measurements, diagnosis.
    """
    from pathlib import Path

    from silolink_demo import datasets

    _, splits = datasets.breast_cancer_splits(list(sites))
    for name, split in splits.items():
        path = datasets.write_csv(Path(directory) / f"{name}.csv", split)
        click.echo(f"{path}: {len(split['ids'])} patients")
