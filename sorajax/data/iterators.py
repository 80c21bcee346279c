"""Batch datasets and their checkpointable iterators (video, pixel and packed batches alike).

Every batch maker maps a batch index to a batch, so a dataset is `range(n).map(maker)` and a grain
iterator's state is a position: the checkpoint stores it and a resumed run reads exactly the
batches it would have read.
"""

from __future__ import annotations

from typing import Any, Callable

import grain

# The largest index grain's samplers handle as a plain int32: "endless" for any training run.
ENDLESS = 2**31 - 1


def batch_dataset(maker: Callable[[int], Any], num_batches: int = ENDLESS) -> grain.MapDataset:
    """Batch j of the returned dataset is `maker(j)`."""
    return grain.MapDataset.range(num_batches).map(maker)


def batch_iterator(dataset: grain.MapDataset, worker_count: int = 0, prefetch_threads: int | None = None,
                   buffer_size: int = 2) -> grain.DatasetIterator:
    """An iterator over `dataset`; batches are made in `worker_count` processes (0: in this one).

    `prefetch_threads`: host threads that make the next batches while a step runs (None: grain's
    default; 0: none, each batch is made when it is asked for).
    """
    options = grain.ReadOptions() if prefetch_threads is None else grain.ReadOptions(
        num_threads=prefetch_threads, prefetch_buffer_size=prefetch_threads)
    iter_ds = dataset.to_iter_dataset(options)
    if worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; scripts without app.run have none
            flags.FLAGS.mark_as_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                                   per_worker_buffer_size=buffer_size))
    return iter(iter_ds)
