"""Serving installed models: load sessions, check inputs, run (batched where possible).

Several models and versions stay loaded at once (least recently used unloaded first). A
request that names no version gets the model's active version, looked up again whenever
the model store changed, so installing or activating a version switches new requests over
while requests already running finish on the version they started with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from silolink import errors
from silolink.config import InferenceConfig
from silolink.onnx_models import Signature, TensorSpec, error_summary, load_session

from ..models.store import ModelRecord, ModelStore
from .batcher import Batcher, Inputs, Outputs

log = logging.getLogger(__name__)
# How soon a version installed or activated (by the CLI or the registry) reaches new requests.
CHANGE_CHECK_INTERVAL_S = 0.05


@dataclass
class LoadedModel:
    record: ModelRecord
    session: object
    batcher: Batcher | None = None
    output_names: list[str] = field(default_factory=list)
    # Each input's spec and numpy dtype by name, looked up on every request.
    input_specs: dict[str, tuple[TensorSpec, np.dtype]] = field(default_factory=dict)
    # For metrics: requests served and onnxruntime runs (fewer when requests were batched).
    requests: int = 0
    runs: int = 0

    def run(self, inputs: Inputs) -> Outputs:
        self.runs += 1
        try:
            return self.session.run(self.output_names, inputs)  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
            raise errors.InvalidArgument(
                f"model {self.record.ref} could not score this input: {error_summary(e)}"
            ) from None


def batchable(signature: Signature) -> bool:
    """Batch when every input and output has a free first (rows) dimension."""
    return all(s.shape and s.shape[0] < 0 for s in (*signature.inputs, *signature.outputs))


def check_inputs(model: LoadedModel, inputs: Inputs, max_rows: int) -> int:
    """InvalidArgument naming what the model expects and what came; returns the rows."""
    record, specs = model.record, model.input_specs
    if inputs.keys() != specs.keys():
        expected = "; ".join(s.describe() for s in record.signature.inputs)
        raise errors.InvalidArgument(
            f"model {record.ref} expects inputs ({expected}); got {', '.join(repr(n) for n in inputs)}"
        )
    rows = None
    for name, array in inputs.items():
        spec, dtype = specs[name]
        if array.dtype != dtype:
            raise errors.InvalidArgument(
                f"input {name!r} of model {record.ref} expects dtype {spec.dtype}, got {array.dtype.name}"
            )
        if len(array.shape) != len(spec.shape) or any(
            want >= 0 and want != got for want, got in zip(spec.shape, array.shape, strict=False)
        ):
            raise errors.InvalidArgument(
                f"input {name!r} of model {record.ref} expects shape {_dims(spec.shape)}, got {list(array.shape)}"
            )
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows and spec.shape[0] < 0:
            raise errors.InvalidArgument(
                f"inputs of model {record.ref} disagree on the number of rows ({rows} and {array.shape[0]})"
            )
    rows = rows or 1
    if rows > max_rows:
        raise errors.ResourceExhausted(
            f"the request has {rows} rows; the limit is {max_rows} (inference.max_request_rows): "
            "send fewer rows per request, for example over InferStream"
        )
    return rows


def _dims(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


class InferenceEngine:
    def __init__(self, store: ModelStore, config: InferenceConfig) -> None:
        self._store = store
        self._config = config
        self._lock = threading.Lock()
        self._loaded: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
        self._loading: dict[tuple[str, str, str], threading.Lock] = {}
        self._records: dict[tuple[str, str | None], ModelRecord] = {}
        self._seen_changes = -1
        self._next_check = 0.0

    def infer(self, name: str, version: str | None, inputs: Inputs) -> tuple[ModelRecord, Outputs]:
        model = self.model(name, version)
        rows = check_inputs(model, inputs, self._config.max_request_rows)
        model.requests += 1
        if model.batcher is not None:
            return model.record, model.batcher.submit(inputs, rows)
        return model.record, model.run(inputs)

    def record(self, name: str, version: str | None) -> ModelRecord:
        """The installed version (active one if None), cached until the store changes."""
        if not name:
            raise errors.InvalidArgument("name the model to run")
        now = time.monotonic()
        if now >= self._next_check:  # a store query per request would cost more than the model
            self._next_check = now + CHANGE_CHECK_INTERVAL_S
            changes = self._store.changes()
            with self._lock:
                if changes != self._seen_changes:
                    self._records.clear()
                    self._seen_changes = changes
        with self._lock:
            cached = self._records.get((name, version))
        if cached is not None:
            return cached
        record = self._store.get(name, version)
        with self._lock:
            self._records[(name, version)] = record
        return record

    def model(self, name: str, version: str | None) -> LoadedModel:
        record = self.record(name, version)
        key = (record.name, record.version, record.sha256)
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is not None:
                self._loaded.move_to_end(key)
                return loaded
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:  # one load per version, however many requests wait for it
            with self._lock:
                loaded = self._loaded.get(key)
            if loaded is None:
                loaded = self._load(record)
                with self._lock:
                    self._loaded[key] = loaded
                    self._loading.pop(key, None)
                    while len(self._loaded) > max(1, self._config.max_loaded_versions):
                        evicted, _ = self._loaded.popitem(last=False)
                        log.info("unloaded model %s:%s (least recently used)", evicted[0], evicted[1])
        return loaded

    def loaded(self) -> list[str]:
        with self._lock:
            return [f"{n}:{v}" for n, v, _ in self._loaded]

    def counts(self) -> dict[str, tuple[int, int]]:
        """(requests, onnxruntime runs) of each loaded version, by ``name:version``."""
        with self._lock:
            return {f"{n}:{v}": (m.requests, m.runs) for (n, v, _), m in self._loaded.items()}

    def _load(self, record: ModelRecord) -> LoadedModel:
        path = self._store.blob_path(record.sha256)
        try:
            session = load_session(path, self._config.intra_op_threads, self._config.spin_wait)
        except Exception as e:  # noqa: BLE001 - any load failure means the same to the caller
            log.error("model %s failed to load from %s: %s", record.ref, path, e)
            raise errors.FailedPrecondition(
                f"model {record.ref} is installed but its file failed to load; reinstall it"
            ) from None
        model = LoadedModel(
            record,
            session,
            output_names=[s.name for s in record.signature.outputs],
            input_specs={s.name: (s, np.dtype(s.dtype)) for s in record.signature.inputs},
        )
        if self._config.batching and batchable(record.signature):
            model.batcher = Batcher(model.run, self._config.max_batch_rows, self._config.max_batch_wait_ms / 1000.0)
        log.info("loaded model %s (sha256 %s)", record.ref, record.sha256[:12])
        return model
