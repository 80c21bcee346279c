"""Multi-host start and per-host data: each host loads only its rows, JAX assembles the global batch.

On a TPU pod slice every host runs the same command; ``jax.distributed.initialize()``
finds the coordinator from the TPU metadata (on GPU clusters pass the address,
process count and id, or let SLURM/Open MPI environments be auto-detected).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np


def initialize_multihost(coordinator_address: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None) -> bool:
    """Join the multi-host job when there is one; returns True if ``jax.distributed`` was initialised.

    A single process with no coordinator given does nothing, so the same entry point
    runs on a laptop and on a pod. Must run before anything touches a device.
    """
    if num_processes == 1 or (coordinator_address is None and num_processes is None and process_id is None
                              and not _looks_multihost()):
        return False
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    return True


def _looks_multihost() -> bool:
    """Environment variables a TPU pod or SLURM/MPI launcher sets for multi-process jobs."""
    markers = ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "MEGASCALE_COORDINATOR_ADDRESS")
    return any(m in os.environ and os.environ[m] not in ("", "1", "localhost") for m in markers)


def host_rows(global_rows: int, process_index: int | None = None, process_count: int | None = None) -> slice:
    """The rows of a global batch this host loads (contiguous, equal shares)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if global_rows % count:
        raise ValueError(
            f"global batch of {global_rows} rows does not split over {count} hosts: make data.rows a multiple of {count}"
        )
    per_host = global_rows // count
    return slice(index * per_host, (index + 1) * per_host)


def global_batch(local: Any, shardings: Any) -> Any:
    """Assemble a global sharded batch (any pytree) from each host's rows (``jax.make_array_from_process_local_data``).

    Every host passes only the rows it built, an equal share of the leading axis; single-host this is
    ``jax.device_put`` with the shardings.
    """

    def one(x: Any, sharding: Any) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * jax.process_count(), *x.shape[1:]))

    return jax.tree.map(one, local, shardings)
