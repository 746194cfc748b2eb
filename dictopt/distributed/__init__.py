"""Scale-out on Dask: check activation sets larger than one machine (``pip install .[dask]``).

- :class:`DaskExecutor`: the executor of :mod:`dictopt.check`'s streamed passes on Dask
  (``check(..., executor=DaskExecutor(workers=4))``; also ``certify`` and the wide bound).

- :func:`partition_source`: a shard folder, ``.npy`` file, Zarr array or Dask array as named
  partitions that workers open themselves (:mod:`dictopt.distributed.sources`).
- :func:`check_distributed` / :func:`certify_distributed`: the checker's two passes and the
  certificate measurement as map-and-merge over partitions; the same per-chunk maths as
  :func:`dictopt.check.check` (:mod:`dictopt.distributed.check`).
- :func:`wide_limit_bound_distributed`: the wide-limit bound with distributed sums.
- :func:`dask_client`: a client from an existing one, a scheduler address or a local cluster;
  :class:`PartitionError`: a partition that failed on every try, by name.
"""

from dictopt.distributed.bound import wide_limit_bound_distributed
from dictopt.distributed.check import certify_distributed, check_distributed
from dictopt.distributed.cluster import PartitionError, dask_client, map_reduce
from dictopt.distributed.executor import DaskExecutor
from dictopt.distributed.sources import Partition, PartitionedSource, partition_source

__all__ = [
    "DaskExecutor",
    "Partition",
    "PartitionError",
    "PartitionedSource",
    "certify_distributed",
    "check_distributed",
    "dask_client",
    "map_reduce",
    "partition_source",
    "wide_limit_bound_distributed",
]
