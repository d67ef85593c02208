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


FORMATS = ("csv", "parquet", "sqlite", "dicom", "png")


@main.command("sample-data")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--site", "sites", multiple=True, default=("hospital-a", "hospital-b"), show_default=True,
    help="A hospital to write patients for (repeatable); each gets its own share, no patient in two.",
)  # fmt: skip
@click.option(
    "--format", "formats", multiple=True, type=click.Choice(FORMATS), default=("csv",), show_default=True,
    help="What to write per hospital (repeatable): csv, parquet (NAME.parquet), sqlite (NAME.sqlite, table "
    "patients), dicom or png (a folder NAME-scans/ or NAME-images/ of small scans with labels.csv).",
)  # fmt: skip
def sample_data(directory: str, sites: tuple[str, ...], formats: tuple[str, ...]) -> None:
    """Write real example data, one share per hospital, to try silolink with (needs the demo extra).

    The patients are scikit-learn's breast cancer data set (569 patients, 30 measurements and
    a diagnosis, 1 = benign), shuffled and split between the hospitals as the demo does; a
    fifth is held back as public reference data. Columns: patient_id, the measurements,
    diagnosis. The scans (dicom, png) are scikit-learn's 8x8 handwritten digits standing in
    for images, labelled with the digit; the DICOM files carry made-up patient attributes.
    Parquet needs pyarrow and DICOM/PNG pydicom/Pillow (the sources extra).
    """
    from pathlib import Path

    from silolink_demo import datasets, imaging_data

    root = Path(directory)
    _, splits = datasets.breast_cancer_splits(list(sites))
    for i, (name, split) in enumerate(splits.items()):
        for fmt in dict.fromkeys(formats):
            if fmt == "csv":
                path = datasets.write_csv(root / f"{name}.csv", split)
            elif fmt == "parquet":
                path = datasets.write_parquet(root / f"{name}.parquet", split)
            elif fmt == "sqlite":
                path = datasets.write_sqlite(root / f"{name}.sqlite", split)
            else:
                images, labels = imaging_data.digits(SCANS, offset=i * SCANS)
                write = imaging_data.dicom_folder if fmt == "dicom" else imaging_data.png_folder
                path = write(root / f"{name}-{'scans' if fmt == 'dicom' else 'images'}", images, labels)
                click.echo(f"{path}/: {SCANS} {'DICOM files' if fmt == 'dicom' else 'PNG images'} and labels.csv")
                continue
            click.echo(f"{path}: {len(split['ids'])} patients")


# Scans per hospital: enough to train on, few enough to write in a blink.
SCANS = 60
