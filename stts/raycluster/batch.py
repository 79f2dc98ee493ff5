"""``stts batch --ray``: the batch's files transcribed on a Ray cluster through Ray Data.

The file list becomes a dataset of one file per block, mapped onto an actor pool in
which each actor holds one :class:`~stts.service.EngineManager` with the engine loaded
once. Ray restarts an actor whose process dies and runs its block again (Ray Data's
actor pools retry by default), so a killed worker costs a file's work, not the batch.
The driver iterates the results as they stream out and hands each to
:meth:`stts.batch.Batch.finish`, which writes the output files and the results line:
nothing is collected in the driver's memory but the plan, and an input that came back
twice (a retried block) is written once.

Workers read the inputs by the driver's paths: every node must mount the same storage
at the same place, with the same stts version and models installed. This module and
:mod:`stts.raycluster.serve` are the only ones that import Ray (``stts[ray]``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stts.batch import Batch, BatchRequest, Summary, WorkItem, transcribe_item
from stts.errors import EngineUnavailable

if TYPE_CHECKING:
    import numpy as np

    from stts.config import Settings

import ray
import ray.data

from stts.raycluster import connect

_COLUMNS = ("path", "duration", "engine", "model", "language", "text", "error", "error_type")
_SHARED_STORAGE = "every Ray node must read the inputs at the same path (shared storage)"


class Transcriber:
    """One Ray Data actor: an engine manager with the batch's engine loaded once."""

    def __init__(self, settings: Settings, request: BatchRequest) -> None:
        from stts.service import EngineManager

        self.settings = settings
        self.request = request
        self.manager = EngineManager(settings)
        key = self.manager.resolve(request.engine, request.model)
        availability = self.manager.probe(key[0])
        if not availability.available:
            raise EngineUnavailable(f"engine {key[0]!r} cannot run here: {availability.reason}")
        self.manager.slot(key).ensure_loaded()
        self.options = self.manager.check_options(key, request.options())
        node = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.worker = f"{node}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        """Transcribe the block's files; one output row per file, errors included."""
        rows: dict[str, list[Any]] = {name: [] for name in (*_COLUMNS, "seconds", "rendered")}
        rows["worker"] = []
        for path in batch["path"]:
            result = transcribe_item(
                self.manager, self.settings, self.request, self.options, str(path)
            )
            if result["error_type"] == "unreadable":
                result["error"] = (
                    f"{result['error']} on Ray worker {self.worker}; {_SHARED_STORAGE}"
                )
            result["path"] = str(path)
            result["rendered"] = json.dumps(result.get("rendered") or {})
            result["worker"] = self.worker
            for name, column in rows.items():
                column.append(result.get(name))
        return rows


def run_on_ray(
    address: str,
    batch: Batch,
    items: Sequence[WorkItem],
    settings: Settings,
    actors: int,
    cpus_per_actor: float,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    gpus_per_actor: float = 0.0,
) -> Summary:
    """Transcribe ``items`` on the cluster, ``actors`` engine actors of ``cpus_per_actor``
    CPUs (and ``gpus_per_actor`` GPUs) each; every result goes through ``batch.finish``
    as soon as it arrives."""
    import time

    if not items:
        return batch.summary
    connect(address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own
    context.enable_operator_progress_bars = False
    started = time.perf_counter()
    by_path = {item.path: item for item in items}
    files = ray.data.from_items(
        [{"path": item.path} for item in items], override_num_blocks=len(items)
    )
    results = files.map_batches(
        Transcriber,
        fn_constructor_kwargs={"settings": settings, "request": batch.request},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    for row in results.iter_rows():
        path = str(row["path"])
        if path not in by_path or batch.finished(path):
            continue  # a block that ran twice (its actor died after answering)
        result = {name: _plain(row.get(name)) for name in (*_COLUMNS, "seconds")}
        result["rendered"] = json.loads(row["rendered"])
        record = batch.finish(by_path[path], result, worker=str(row["worker"]))
        if on_record is not None:
            on_record(record)
    batch.summary.wall_seconds = time.perf_counter() - started
    return batch.summary


def _plain(value: Any) -> Any:
    """numpy scalars and NaN-for-null (Arrow to numpy) as plain JSON values."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
