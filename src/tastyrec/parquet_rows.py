"""Training rows read from Parquet chunk by chunk, each with its (customer, snapshot) group.

At full scale a training set has tens of millions of rows, and every row carries its customer's
history lists: read whole, one epoch's data took 23 GB. `ParquetRows` chooses the rows from three
small key columns (a seeded sample, buyers only), then yields only the chosen rows, a chunk at a
time, so memory follows the chunk, not the file. The rows of one group share one history bag:
the preprocessing stores it once per group (`Preprocessor.transform_rows`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tastyrec.columns import CUSTOMER_ID, LABEL, TIMESTAMP
from tastyrec.config import Progress

CHUNK_ROWS = 262_144  # rows per chunk: about one Parquet row group of a training set
GROUP_KEYS = [CUSTOMER_ID, TIMESTAMP]  # the rows of a group share their customer-level features


def release_memory() -> None:
    """Give freed memory back to the system: Arrow's allocator keeps what earlier chunks used and
    glibc keeps freed heap pages, so memory one stage freed would still count against the next
    (at N = 20,000, 0.5 GB after the preprocessing)."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _groups(customers: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's (customer, timestamp) group, numbered 0.. in order of first appearance, and the
    number of groups. Both keys are int64 (a timestamp as its microseconds): one hash pass."""
    days, at = np.unique(timestamps, return_inverse=True)  # a handful of snapshot timestamps
    group, uniques = pd.factorize(customers * len(days) + at)
    return group.astype(np.int64), len(uniques)


@dataclass
class ParquetRows:
    """The chosen rows of one Parquet file, in file order.

    keep: bool per row of the file; group: int64 per chosen row (see `_groups`).
    """

    path: Path
    keep: np.ndarray
    group: np.ndarray
    n_groups: int
    chunk_rows: int = CHUNK_ROWS

    @classmethod
    def open(cls, path: str | Path, max_samples: int | None = None, seed: int = 0,
             buyers_only: bool = False, chunk_rows: int = CHUNK_ROWS) -> ParquetRows:
        """Choose rows: at most `max_samples` drawn with `seed` (kept in file order), then, with
        buyers_only, those of the groups with at least one purchase among the drawn rows."""
        keys = pq.read_table(path, columns=[*GROUP_KEYS, LABEL])
        customers = keys.column(CUSTOMER_ID).to_numpy().astype(np.int64)
        timestamps = keys.column(TIMESTAMP).cast(pa.int64()).to_numpy()
        label = keys.column(LABEL).to_numpy()
        keep = np.ones(len(keys), dtype=bool)
        if max_samples and max_samples < len(keys):
            keep[:] = False
            keep[np.random.RandomState(seed).choice(len(keys), size=max_samples, replace=False)] = True
        if buyers_only:
            group, n = _groups(customers[keep], timestamps[keep])
            bought = np.bincount(group, weights=label[keep] > 0, minlength=n) > 0
            keep[np.flatnonzero(keep)[~bought[group]]] = False
        group, n = _groups(customers[keep], timestamps[keep])
        return cls(Path(path), keep, group, n, chunk_rows)

    def __len__(self) -> int:
        return len(self.group)

    def chunks(self, columns: list[str] | None = None, progress: Progress | None = None,
               what: str = "rows") -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        """(group of each row, the rows) per chunk of chosen rows, Arrow-backed like
        `pd.read_parquet(dtype_backend="pyarrow")`: the history bags stay Arrow lists.
        `progress(what, chunks read, chunks)` after each chunk."""
        start = done = 0
        total = -(-len(self.keep) // self.chunk_rows)
        for i, batch in enumerate(pq.ParquetFile(self.path).iter_batches(batch_size=self.chunk_rows,
                                                                         columns=columns)):
            mask = self.keep[start:start + batch.num_rows]
            start += batch.num_rows
            if progress:
                progress(what, i + 1, total)
            if not mask.any():
                continue
            frame = pa.Table.from_batches([batch.filter(pa.array(mask))]).to_pandas(types_mapper=pd.ArrowDtype)
            yield self.group[done:done + len(frame)], frame
            done += len(frame)
            del frame
            release_memory()
