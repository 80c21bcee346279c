"""Checkpointable iterators over the random-access batch datasets (video, pixel and packed batches).

Every dataset here maps a batch index to a batch, so a grain iterator's state is a position: the
checkpoint stores it and a resumed run reads exactly the batches it would have read.
"""

from __future__ import annotations

import grain


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
