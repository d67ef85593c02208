"""``edge-agent data``: the site's catalog (import, add, list, describe, drop, sensitive)
and batch scoring.

These commands work on the data directory directly (the catalog is a SQLite file that the
running daemon shares), so large imports do not travel through the local API. ``data add``
registers data that stays where it is (Parquet, a SQL database, images, DICOM).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, iso, table

from ..catalog.store import Catalog
from ..layout import AgentLayout
from ..models.store import ModelStore, parse_ref
from .options import data_dir_option, json_option


def open_catalog(data_dir: Path) -> Catalog:
    return Catalog.open(AgentLayout(data_dir.resolve()).catalog_db)


def progress_bar(total: int, label: str, quiet: bool):
    """A progress bar on stderr, so stdout stays clean for --json; hidden when quiet."""
    return click.progressbar(length=total, label=label, file=sys.stderr, hidden=quiet)


@click.group()
def data() -> None:
    """The site's datasets: rows stay at the site."""


@data.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The dataset's name in the catalog (letters, digits, _).")
@click.option("--label", "label", metavar="COLUMN", help="The column models learn to predict.")
@click.option("--id", "id_column", metavar="COLUMN", help="A column that identifies each row (must be unique).")
@click.option("--replace", is_flag=True, help="Replace an existing dataset of that name.")
@data_dir_option
@json_option
@handle_errors
def import_(
    file: Path, name: str, label: str | None, id_column: str | None, replace: bool, data_dir: Path, as_json: bool
) -> None:
    """Load a CSV file into the catalog, with column types inferred."""
    from ..catalog.csv_import import scan_csv

    catalog = open_catalog(data_dir)
    # Scan first (all checks, no writes) so the bar knows the row count.
    scan = scan_csv(file, label=label, id_column=id_column)
    with progress_bar(scan.row_count, f"importing {file.name}", as_json) as bar:
        dataset = catalog.import_csv(
            file, name, label=label, id_column=id_column, replace=replace, progress=bar.update, scan=scan
        )
    if as_json:
        echo_json(dataset.to_dict())
        return
    click.echo(f"imported {dataset.row_count} rows into {dataset.name} ({len(dataset.columns)} columns)")


@data.command("add")
@click.argument("name")
@click.option(
    "--source",
    required=True,
    metavar="PATH|URL",
    help="A .parquet/.arrow file or folder, a folder of PNG/JPEG or DICOM files, or a SQLAlchemy database URL "
    "(write ${VAR} where the password goes; it is read from the environment or DATA_DIR/secrets/VAR).",
)
@click.option("--table", metavar="TABLE", help="Database sources: the table or view to read (schema.table works).")
@click.option("--query", metavar="SQL", help="Database sources: a SELECT to read instead of a table.")
@click.option("--label", "label", metavar="COLUMN", help="The column models learn to predict.")
@click.option("--id", "id_column", metavar="COLUMN", help="A column that identifies each row.")
@click.option(
    "--labels",
    "labels_file",
    metavar="FILE",
    help="Images/DICOM: a CSV of file,label (default: labels.csv in the folder).",
)
@click.option("--tags", metavar="TAG,TAG,...", help="DICOM: the attributes to read into the metadata table.")
@click.option("--sensitive", metavar="COL,COL,...", help="Columns to mark sensitive (see data sensitive).")
@click.option("--replace", is_flag=True, help="Replace an existing dataset of that name.")
@data_dir_option
@json_option
@handle_errors
def add(
    name: str,
    source: str,
    table: str | None,
    query: str | None,
    label: str | None,
    id_column: str | None,
    labels_file: str | None,
    tags: str | None,
    sensitive: str | None,
    replace: bool,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Register data where it lives, without copying it: the kind comes from the source."""
    from ..catalog.sources import add_source

    dataset = add_source(
        open_catalog(data_dir),
        name,
        source,
        table=table,
        query=query,
        label=label,
        id_column=id_column,
        labels_file=labels_file,
        tags=_names(tags) or None,
        sensitive=_names(sensitive),
        replace=replace,
    )
    if as_json:
        echo_json(dataset.to_dict())
        return
    click.echo(
        f"registered {dataset.name}: {dataset.kind}, {dataset.row_count} rows, {len(dataset.columns)} columns, "
        "read in place"
    )


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


@data.command("sensitive")
@click.argument("name")
@click.argument("columns")
@click.option("--clear", is_flag=True, help="Unmark the columns instead.")
@data_dir_option
@json_option
@handle_errors
def sensitive_(name: str, columns: str, clear: bool, data_dir: Path, as_json: bool) -> None:
    """Mark columns (COL,COL,...) sensitive: never filtered or grouped on by analytics, never
    described to the coordinator, never given to an app the site has not allowed."""
    dataset = open_catalog(data_dir).mark_sensitive(name, _names(columns), sensitive=not clear)
    if as_json:
        echo_json(dataset.to_dict())
        return
    marked = ", ".join(dataset.sensitive) or "none"
    click.echo(f"{dataset.name}: sensitive columns {marked}")


@data.command("list")
@data_dir_option
@json_option
@handle_errors
def list_(data_dir: Path, as_json: bool) -> None:
    """List the datasets in the catalog."""
    datasets = open_catalog(data_dir).list()
    if as_json:
        echo_json([d.to_dict() for d in datasets])
        return
    rows = [[d.name, d.kind, d.row_count, len(d.columns), d.label, d.source, iso(d.created_at)] for d in datasets]
    click.echo(table(["NAME", "KIND", "ROWS", "COLUMNS", "LABEL", "SOURCE", "CREATED"], rows))


@data.command()
@click.argument("name")
@data_dir_option
@json_option
@handle_errors
def describe(name: str, data_dir: Path, as_json: bool) -> None:
    """Show a dataset's kind, columns, types, row count (read now, for sources) and label."""
    catalog = open_catalog(data_dir)
    dataset = catalog.describe(name)
    if dataset.kind != "table":
        # Sources change in place: count them now (through the reading interface).
        from dataclasses import replace as with_

        dataset = with_(dataset, row_count=catalog.source(name).count())
    if as_json:
        echo_json(dataset.to_dict())
        return
    click.echo(f"{dataset.name}: {dataset.row_count} rows, {dataset.kind}, from {dataset.source}")
    roles = {dataset.label: "label", dataset.id_column: "id"}
    rows = [
        [
            c.name,
            c.type,
            ", ".join(r for r in (roles.get(c.name, ""), "sensitive" * (c.name in dataset.sensitive)) if r),
        ]
        for c in dataset.columns
    ]
    click.echo(table(["COLUMN", "TYPE", "ROLE"], rows))


@data.command()
@click.argument("name")
@data_dir_option
@json_option
@handle_errors
def drop(name: str, data_dir: Path, as_json: bool) -> None:
    """Delete a dataset from the catalog: an imported table's rows go with it; a source's
    files or database are never touched."""
    dataset = open_catalog(data_dir).drop(name)
    if as_json:
        echo_json({"dropped": dataset.name, "kind": dataset.kind, "row_count": dataset.row_count})
        return
    kept = "" if dataset.kind == "table" else f"; its {dataset.kind} source was left as it is"
    click.echo(f"dropped {dataset.name} ({dataset.row_count} rows){kept}")


@click.group()
def infer() -> None:
    """Score the site's data with an installed model."""


@infer.command("table")
@click.argument("dataset")
@click.option("--model", "model_ref", required=True, metavar="NAME[:VERSION]", help="The model (default: active).")
@click.option("--output", required=True, metavar="TABLE", help="The new dataset that receives the predictions.")
@click.option("--features", metavar="COL,COL,...", help="Feature columns in model order (default: all but label/id).")
@click.option("--batch-rows", default=4096, show_default=True, help="Rows scored per model run.")
@click.option("--replace", is_flag=True, help="Replace the output dataset if it exists.")
@data_dir_option
@json_option
@handle_errors
def infer_table(
    dataset: str,
    model_ref: str,
    output: str,
    features: str | None,
    batch_rows: int,
    replace: bool,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Score every row of a dataset; write predictions and the model version to a new dataset."""
    from ..inference.table import score_table

    layout = AgentLayout(data_dir.resolve())
    catalog = Catalog.open(layout.catalog_db)
    models = ModelStore.open(layout.state_db, layout.model_blobs)
    name, version = parse_ref(model_ref)
    chosen = [f.strip() for f in features.split(",") if f.strip()] if features else None
    with progress_bar(catalog.describe(dataset).row_count, f"scoring {dataset}", as_json) as bar:
        result = score_table(
            catalog, models, dataset, name, version, output, chosen, batch_rows, replace, progress=bar.update
        )
    if as_json:
        echo_json(result.__dict__)
        return
    click.echo(f"scored {result.rows} rows of {result.dataset} with {result.model}:{result.version} into {output}")
