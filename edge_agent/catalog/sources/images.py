"""Folders of image files read in place: PNG/JPEG (Pillow) here, DICOM in ``dicom.py``.

A dataset's rows are the lines of its labels file (a CSV whose ``file`` column names each
image relative to the folder, the other columns labels or metadata), or every image file in
the folder when there is none. Its columns: ``file``, the labels file's columns, any
metadata the kind reads, and ``image`` (type IMAGE): each row's pixels as a numpy array,
all of one shape, decoded only for the rows a reader asks for, one batch at a time.

Registration opens every file (headers only) so that a missing file, a file that is not an
image, or an image of another size is reported before anything is recorded.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from silolink import errors
from silolink.analytics import where as where_mod

from ..schema import Column
from .base import DEFAULT_BATCH_ROWS, Batch, Source, column_array, present_mask, where_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABELS_FILE = "labels.csv"
IMAGE_COLUMN = "image"


def labels_path(folder: Path, labels_file: str | None) -> Path | None:
    if labels_file:
        return Path(labels_file).resolve()
    default = folder / LABELS_FILE
    return default if default.exists() else None


def _labels_columns(name: str, path: Path) -> tuple[Column, ...]:
    from ..csv_import import scan_csv

    try:
        scan = scan_csv(path, id_column="file")
    except errors.InvalidArgument as e:
        if "'file' is not a column" in str(e):
            raise errors.InvalidArgument(
                f"dataset {name!r}: the labels file {path.name} needs a column named file (the image's path in the "
                "folder) beside its label columns"
            ) from None
        raise errors.InvalidArgument(f"dataset {name!r}: labels file {e}") from None
    except errors.NotFound:
        raise errors.NotFound(f"dataset {name!r}: the labels file {path} does not exist; check --labels") from None
    return scan.columns


def _label_rows(path: Path, columns: tuple[Column, ...]) -> Iterator[list]:
    from ..csv_import import _converter, _rows

    converters = [_converter(c) for c in columns]
    rows = _rows(path)
    next(rows)  # the header
    for _, fields in rows:
        yield [convert(v) for convert, v in zip(converters, fields, strict=True)]


class FolderSource(Source):
    """Rows of files in a folder; subclasses read metadata and decode pixels."""

    suffixes: tuple[str, ...] = IMAGE_SUFFIXES

    @property
    def folder(self) -> Path:
        return Path(self.dataset.location)

    # -- what subclasses provide ----------------------------------------------------------
    def list_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.suffix.lower() in self.suffixes
        )

    def metadata_columns(self) -> list[str]:
        """Columns read from each file's header (none for PNG/JPEG)."""
        return []

    def read_metadata(self, files: list[str], columns: list[str]) -> dict[str, list]:
        return {}

    @abc.abstractmethod
    def decode(self, file: str) -> np.ndarray:
        """The image's pixels."""

    # -- shared ---------------------------------------------------------------------------
    def _path(self, file: str) -> str:
        # Checked by name, not by resolving links (a system call per image), and joined as
        # text (pathlib costs more than decoding a small image): files are named relative
        # to the folder and may not climb out of it.
        if file.startswith(("/", "\\")) or ".." in file.replace("\\", "/").split("/"):
            raise self.fail(f"{file!r} in the labels file points outside the folder", "name files inside it")
        return os.path.join(self.dataset.location, file)

    def _base_rows(self, batch_rows: int) -> Iterator[dict[str, list]]:
        """Batches of file + labels columns (as Python lists), in the dataset's row order."""
        labels = self.dataset.options.get("labels")
        if not self.folder.is_dir():
            raise self.fail(
                f"the folder {self.folder} does not exist",
                "restore it or register the dataset again with its new path (edge-agent data add --replace)",
                errors.NotFound,
            )
        if labels:
            names = [
                c.name for c in self.dataset.columns if c.type != "IMAGE" and c.name not in self.metadata_columns()
            ]
            label_columns = tuple(c for c in self.dataset.columns if c.name in names)
            chunk: list[list] = []
            try:
                for row in _label_rows(Path(labels), label_columns):
                    chunk.append(row)
                    if len(chunk) == batch_rows:
                        yield dict(zip(names, (list(v) for v in zip(*chunk, strict=True)), strict=True))
                        chunk = []
            except errors.SiloError as e:
                raise self.fail(f"labels file {e}", "fix the labels file") from None
            if chunk:
                yield dict(zip(names, (list(v) for v in zip(*chunk, strict=True)), strict=True))
            return
        files = self.list_files()
        for start in range(0, len(files), batch_rows):
            yield {"file": files[start : start + batch_rows]}

    def _check_image(self, file: str, pixels: np.ndarray) -> np.ndarray:
        shape = tuple(self.dataset.options["shape"])
        if pixels.shape != shape:
            raise self.fail(
                f"{file} is {_size(pixels.shape)}, the dataset's images are {_size(shape)}",
                f"resize it to {_size(shape)}, or remove it (and its line in the labels file)",
                errors.InvalidArgument,
            )
        return pixels

    def _batches(self, columns, where, present, batch_rows) -> Iterator[tuple[Batch, int]]:
        wanted = [c for c in columns if c not in ("rowid", IMAGE_COLUMN)]
        needed = list(dict.fromkeys([*wanted, *where_mod.columns(where), *present, "file"]))
        needed = [c for c in needed if c != IMAGE_COLUMN]
        meta = [c for c in needed if c in self.metadata_columns()]
        position = 0
        for rows in self._base_rows(batch_rows):
            count = len(rows["file"])
            if meta:
                rows.update(self.read_metadata(rows["file"], meta))
            batch = {c: column_array(rows[c], self.column_type(c)) for c in needed}
            mask = where_mask(where, batch, self.column_type, count) & present_mask(batch, present, count)
            out = {c: batch[c][mask] for c in wanted}
            if "rowid" in columns:
                out["rowid"] = np.arange(position + 1, position + count + 1, dtype=np.int64)[mask]
            if IMAGE_COLUMN in columns:
                chosen = batch["file"][mask]
                shape = tuple(self.dataset.options["shape"])
                pixels = np.empty((len(chosen), *shape), dtype=np.dtype(self.dataset.options["dtype"]))
                for i, file in enumerate(chosen):
                    pixels[i] = self._check_image(file, self.decode(file))
                out[IMAGE_COLUMN] = pixels
            position += count
            yield out, int(mask.sum())

    def count(self, where: where_mod.Node | None = None) -> int:
        return sum(n for _, n in self._batches([], where, (), DEFAULT_BATCH_ROWS))

    def scan(
        self,
        columns: Sequence[str],
        where: where_mod.Node | None = None,
        present: Sequence[str] = (),
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> Iterator[Batch]:
        self.check_columns([*columns, *present])
        for batch, rows in self._batches(columns, where, present, batch_rows):
            if rows:
                yield batch


def _size(shape: Sequence[int]) -> str:
    text = f"{shape[1]}x{shape[0]}"
    return text + (f" with {shape[2]} channels" if len(shape) > 2 else "")


class ImageSource(FolderSource):
    kind = "images"

    def decode(self, file: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self._path(file)
        try:
            with Image.open(path) as image:
                if image.mode != self.dataset.options["mode"]:
                    raise self.fail(
                        f"{file} is a {image.mode} image, the dataset's images are {self.dataset.options['mode']}",
                        f"convert it to {self.dataset.options['mode']} or remove it",
                        errors.InvalidArgument,
                    )
                return np.asarray(image)
        except FileNotFoundError:
            raise self.fail(
                f"{file} is missing from {self.folder}", "restore it or remove its line", errors.NotFound
            ) from None
        except (UnidentifiedImageError, OSError) as e:
            raise self.fail(
                f"{file} is not a readable image ({e})", "replace or remove it", errors.InvalidArgument
            ) from None


def probe(name: str, location: str, labels_file: str | None) -> tuple[tuple[Column, ...], int, dict[str, Any]]:
    """Columns, row count and options of an image folder, after opening every image's header."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(location)
    labels = labels_path(folder, labels_file)
    label_columns = _labels_columns(name, labels) if labels else (Column("file", "TEXT"),)
    options: dict[str, Any] = {"labels": str(labels) if labels else ""}
    from ..store import Dataset

    draft = ImageSource(
        Dataset(name, (*label_columns, Column(IMAGE_COLUMN, "IMAGE")), None, "file", 0, "", 0.0, "images",
                str(folder), {**options, "shape": [0], "dtype": "uint8", "mode": ""}),
        Path(),
    )  # fmt: skip
    first: tuple[str, tuple[int, ...], str, str] | None = None
    rows = 0
    for batch in draft._base_rows(DEFAULT_BATCH_ROWS):
        for file in batch["file"]:
            path = draft._path(file)
            try:
                with Image.open(path) as image:
                    size, mode = image.size, image.mode
                    if image.format not in ("PNG", "JPEG"):
                        raise UnidentifiedImageError(f"{image.format} is neither PNG nor JPEG")
            except FileNotFoundError:
                raise draft.fail(
                    f"{file} is missing from {folder}", "add it or remove its line", errors.NotFound
                ) from None
            except (UnidentifiedImageError, OSError) as e:
                raise draft.fail(
                    f"{file} is not a PNG or JPEG image ({e})", "replace or remove it", errors.InvalidArgument
                ) from None
            if first is None:
                with Image.open(path) as image:
                    sample = np.asarray(image)
                first = (file, tuple(sample.shape), str(sample.dtype), mode)
            elif (size[1], size[0]) != first[1][:2] or mode != first[3]:
                raise draft.fail(
                    f"{file} is a {size[0]}x{size[1]} {mode} image, {first[0]} is {_size(first[1])} {first[3]}",
                    "give every image the same size and mode, or remove the odd ones (and their lines)",
                    errors.InvalidArgument,
                )
            rows += 1
    if first is None:
        raise errors.InvalidArgument(f"dataset {name!r}: {folder} holds no PNG or JPEG images")
    options.update(shape=list(first[1]), dtype=first[2], mode=first[3])
    return (*label_columns, Column(IMAGE_COLUMN, "IMAGE")), rows, options
