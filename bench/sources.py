"""Site data where it lives: what reading through the catalog's one interface costs.

    python -m bench.sources [--quick]

Each figure is a ratio against a baseline measured in the same run, on the same data:
- Parquet: an analytics count and mean (filtered) over 1M rows through ``compute`` (filter
  pushed into pyarrow's scanner, batches summed with numpy), against pyarrow's own
  ``dataset.to_table(filter=...)`` + ``pyarrow.compute`` on the same file (target >= 0.5).
- PostgreSQL (a real server started here on a unix socket; skipped if not installed): the
  same count and mean through ``compute`` (SQLAlchemy, bound parameters, read-only session)
  against a direct psycopg query of the same SQL aggregate (target >= 0.5).
- Images: decoding and loading every image of a folder into one array through the reader,
  against a bare Pillow loop and a bare pydicom loop over the same files (target >= 0.8).
- Memory: peak RSS of a process scanning a Parquet file of 10x, then 100x, its batch size
  (flat: the larger scan should not need more memory).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import median, parse_args, report

# The child's own peak is VmHWM: getrusage's ru_maxrss survives exec on Linux, so it
# started at the size of the bench process that forked it (which grows as the bench runs).
SCAN_CHILD = """
import json, sys
from pathlib import Path
from edge_agent.catalog.store import Catalog

def high_water_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

catalog = Catalog.open(Path(sys.argv[1]))
before = high_water_mb()
rows = 0
for batch in catalog.source(sys.argv[2]).scan(["age", "value", "ward"], batch_rows=int(sys.argv[3])):
    rows += len(batch["age"])
print(json.dumps({"rows": rows, "before_mb": before, "peak_mb": high_water_mb()}))
"""


def _paired(ours, base, repeats: int) -> tuple[float, float, object, object]:
    """Medians of ``ours`` and ``base`` run alternately (so load from elsewhere hits both
    alike), and their last results."""
    times: dict[str, list[float]] = {"ours": [], "base": []}
    results = {}
    for _ in range(repeats):
        for key, fn in (("ours", ours), ("base", base)):
            start = time.perf_counter()
            results[key] = fn()
            times[key].append(time.perf_counter() - start)
    return median(times["ours"]), median(times["base"]), results["ours"], results["base"]


def _table(rows: int, seed: int = 0):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "age": rng.integers(20, 90, rows),
            "value": rng.normal(50, 10, rows),
            "ward": rng.choice(["north", "south", "east", "west"], rows),
        }
    )


def _query_answer(source, statistic: str, where: str):
    from edge_agent.analytics.compute import compute
    from silolink.analytics.query import build_query

    query = build_query(source.dataset.name, statistic, where=where)
    return compute(source, query, show_columns=True).values


def bench_parquet(tmp: Path, rows: int, repeats: int) -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from edge_agent.catalog.sources import add_source
    from edge_agent.catalog.store import Catalog

    path = tmp / "rows.parquet"
    pq.write_table(_table(rows), path, row_group_size=128 * 1024)
    catalog = Catalog.open(tmp / "catalog.db")
    add_source(catalog, "rows", str(path))
    source = catalog.source("rows")
    where = "age >= 50"

    def direct_count():
        return ds.dataset(str(path)).count_rows(filter=pc.field("age") >= 50)

    def direct_mean():
        table = ds.dataset(str(path)).to_table(columns=["value"], filter=pc.field("age") >= 50)
        return pc.count(table["value"]).as_py(), pc.mean(table["value"]).as_py()

    ours_count, base_count, got, want = _paired(lambda: _query_answer(source, "count", where), direct_count, repeats)
    assert got[0] == want, (got, want)
    ours_mean, base_mean, got, (n, mean) = _paired(
        lambda: _query_answer(source, "mean value", where), direct_mean, repeats
    )
    assert got[0] == n and abs(got[1] / 65536 / n - mean) < 1e-6
    return {
        "parquet_count_rows_per_s": rows / ours_count,
        "parquet_count_baseline_rows_per_s": rows / base_count,
        "parquet_count_ratio": base_count / ours_count,
        "parquet_mean_rows_per_s": rows / ours_mean,
        "parquet_mean_baseline_rows_per_s": rows / base_mean,
        "parquet_mean_ratio": base_mean / ours_mean,
    }


def bench_postgres(tmp: Path, rows: int, repeats: int) -> dict:
    import pytest

    from tests import pg_server

    try:
        server = pg_server.start_postgres()
    except pytest.skip.Exception as e:
        return {"postgres_skipped": str(e)}
    try:
        from edge_agent.catalog.sources import add_source
        from edge_agent.catalog.store import Catalog

        table = _table(rows)
        server.execute("CREATE DATABASE bench")
        with server.connect("bench") as conn:
            conn.execute("CREATE TABLE rows (age bigint, value double precision, ward text)")
            with conn.cursor().copy("COPY rows (age, value, ward) FROM STDIN") as copy:
                for row in zip(*(table[c].to_pylist() for c in ("age", "value", "ward")), strict=True):
                    copy.write_row(row)
            conn.execute("ANALYZE rows")
        catalog = Catalog.open(tmp / "pg-catalog.db")
        add_source(catalog, "rows", server.url("bench"), table="rows")
        source = catalog.source("rows")

        def direct(sql: str):
            import psycopg

            with psycopg.connect(host=str(server.socket_dir), dbname="bench", user=pg_server.SUPERUSER) as conn:
                return conn.execute(sql, (50,)).fetchone()

        ours_count, base_count, got, want = _paired(
            lambda: _query_answer(source, "count", "age >= 50"),
            lambda: direct("SELECT count(*) FROM rows WHERE age >= %s"),
            repeats,
        )
        assert got[0] == want[0]
        ours_mean, base_mean, got, want = _paired(
            lambda: _query_answer(source, "mean value", "age >= 50"),
            lambda: direct("SELECT count(value), avg(value) FROM rows WHERE age >= %s AND value IS NOT NULL"),
            repeats,
        )
        assert got[0] == want[0]
        return {
            "postgres_count_rows_per_s": rows / ours_count,
            "postgres_count_baseline_rows_per_s": rows / base_count,
            "postgres_count_ratio": base_count / ours_count,
            "postgres_mean_rows_per_s": rows / ours_mean,
            "postgres_mean_baseline_rows_per_s": rows / base_mean,
            "postgres_mean_ratio": base_mean / ours_mean,
        }
    finally:
        pg_server.remove(server)


def bench_images(tmp: Path, count: int, repeats: int) -> dict:
    import pydicom
    from PIL import Image

    from edge_agent.catalog.reading import DatasetReader
    from edge_agent.catalog.sources import add_source
    from edge_agent.catalog.store import Catalog
    from silolink_demo.imaging_data import dicom_folder, digits, png_folder

    images, labels = digits(min(count, 1797))
    reps = -(-count // len(images))
    images, labels = np.concatenate([images] * reps)[:count], np.concatenate([labels] * reps)[:count]
    # 64x64 scans (the digits upscaled), closer to a real thumbnail than 8x8.
    images = np.kron(images, np.ones((8, 8), dtype=np.uint8))
    catalog = Catalog.open(tmp / "img-catalog.db")
    pngs = png_folder(tmp / "pngs", images, labels)
    dicoms = dicom_folder(tmp / "dicoms", images, labels)
    add_source(catalog, "pngs", str(pngs))
    add_source(catalog, "dicoms", str(dicoms))
    png_files = sorted(pngs.glob("*.png"))
    dcm_files = sorted(dicoms.glob("*.dcm"))

    def bare_pillow():
        out = np.empty((len(png_files), 64, 64), np.uint8)
        for i, path in enumerate(png_files):
            with Image.open(path) as image:
                out[i] = np.asarray(image)
        return out

    def bare_pydicom():
        out = np.empty((len(dcm_files), 64, 64), np.uint8)
        for i, path in enumerate(dcm_files):
            out[i] = pydicom.dcmread(path).pixel_array
        return out

    figures = {}
    for kind, bare in (("png", bare_pillow), ("dicom", bare_pydicom)):
        name = "pngs" if kind == "png" else "dicoms"
        ours, base, (X, _), want = _paired(
            lambda name=name: DatasetReader(catalog._path(), name).arrays(), bare, repeats
        )
        np.testing.assert_array_equal(X, want)
        figures[f"{kind}_images_per_s"] = count / ours
        figures[f"{kind}_baseline_images_per_s"] = count / base
        figures[f"{kind}_ratio"] = base / ours
    return figures


def bench_memory(tmp: Path, batch_rows: int) -> dict:
    import pyarrow.parquet as pq

    from edge_agent.catalog.sources import add_source
    from edge_agent.catalog.store import Catalog

    catalog = Catalog.open(tmp / "mem-catalog.db")
    peaks = {}
    for times in (10, 100):
        path = tmp / f"mem-{times}.parquet"
        pq.write_table(_table(batch_rows * times, seed=times), path, row_group_size=batch_rows)
        add_source(catalog, f"mem{times}", str(path))
        out = subprocess.run(
            [sys.executable, "-c", SCAN_CHILD, str(tmp / "mem-catalog.db"), f"mem{times}", str(batch_rows)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(out.stdout)
        assert result["rows"] == batch_rows * times
        peaks[times] = result["peak_mb"]
    return {
        "scan_batch_rows": batch_rows,
        "scan_peak_rss_mb_10x": peaks[10],
        "scan_peak_rss_mb_100x": peaks[100],
        "scan_peak_rss_growth_100x_over_10x": peaks[100] / peaks[10],
    }


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    rows = 1_000_000
    repeats, images, batch_rows = (5, 500, 16_384) if args.quick else (15, 2000, 65_536)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        figures = {"rows": rows, "repeats": repeats, "images": images}
        figures |= bench_parquet(tmp, rows, repeats)
        figures |= bench_postgres(tmp, rows, repeats)
        figures |= bench_images(tmp, images, repeats)
        figures |= bench_memory(tmp, batch_rows)
    f = figures
    table = []
    for key, label, against in (("parquet", "parquet", "pyarrow's own"), ("postgres", "postgres", "direct psycopg")):
        if f"{key}_count_ratio" not in f:
            table.append((label, "skipped", f.get(f"{key}_skipped", "")))
            continue
        for statistic in ("count", "mean"):
            rate, base = f[f"{key}_{statistic}_rows_per_s"], f[f"{key}_{statistic}_baseline_rows_per_s"]
            ratio = f[f"{key}_{statistic}_ratio"]
            table.append(
                (f"{label} {statistic}", f"{rate / 1e6:.1f} M rows/s", f"{ratio:.2f}x {against} ({base / 1e6:.1f} M/s)")
            )
    for key, against in (("png", "bare Pillow"), ("dicom", "bare pydicom")):
        rate, base, ratio = f[f"{key}_images_per_s"], f[f"{key}_baseline_images_per_s"], f[f"{key}_ratio"]
        table.append((f"{key} decode+load", f"{rate:,.0f} images/s", f"{ratio:.2f}x {against} ({base:,.0f}/s), 64x64"))
    growth = f["scan_peak_rss_growth_100x_over_10x"]
    table += [
        ("scan peak RSS, 10x batch", f"{f['scan_peak_rss_mb_10x']:.0f} MB", f"batches of {batch_rows:,} rows"),
        (
            "scan peak RSS, 100x batch",
            f"{f['scan_peak_rss_mb_100x']:.0f} MB",
            f"{growth:.2f}x the 10x scan (flat: 1.0)",
        ),
    ]
    report(f"bench.sources: {rows:,} rows, medians of {repeats}", table, figures)


if __name__ == "__main__":
    main()
