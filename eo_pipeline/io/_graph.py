# SPDX-License-Identifier: Apache-2.0
"""Writer graphs built as one layer: a task per block of each array, then one last task.

Building a writer from ``dask.delayed`` calls, one per block, merges the whole input
graph into each call: the cost grows with the number of blocks times the size of the
graph, which for a month of daily maps meant 20 s of graph building. Here all the
block tasks and the final task go into one dict and one ``HighLevelGraph`` layer, so
building a writer costs a few microseconds per block whatever the size of the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask._task_spec import List, Task, TaskRef
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

__all__ = ["BlockJob", "blocks_then"]

#: ``(array, task function, extra arguments of a block given its index and region)``;
#: each task is called as ``func(first, block, *extra(index, region))``.
BlockJob = tuple[da.Array, Callable[..., Any], Callable[[tuple[int, ...], tuple[slice, ...]], tuple[Any, ...]]]


def blocks_then(first: Delayed, jobs: Sequence[BlockJob], last: Callable[..., Any], last_args: Sequence[Any],
                *, token: Any) -> Delayed:
    """A Delayed running ``first``, then one task per block of every job's array, then ``last``.

    ``last`` is called as ``last([result of first, *results of the block tasks], *last_args)``
    (so it runs after ``first`` even without blocks); its key is
    ``"{last.__name__}-{token}"`` (the progress line counts finished outputs by it).
    """
    tok = tokenize(token)
    dsk: dict[Any, Task] = {}
    keys: list[Any] = []
    for arr, func, extra in jobs:
        name = f"{func.__name__}-{tok}"
        starts = [np.concatenate(([0], np.cumsum(c[:-1]))).astype(int) for c in arr.chunks]
        for index in np.ndindex(*arr.numblocks):
            region = tuple(slice(int(starts[d][i]), int(starts[d][i]) + arr.chunks[d][i]) for d, i in enumerate(index))
            key = (name, len(keys))
            dsk[key] = Task(key, func, TaskRef(first.key), TaskRef((arr.name, *index)), *extra(index, region))
            keys.append(key)
    last_key = f"{last.__name__}-{tok}"
    dsk[last_key] = Task(last_key, last, List(TaskRef(first.key), *[TaskRef(k) for k in keys]), *last_args)
    graph = HighLevelGraph.from_collections(last_key, dsk, dependencies=[first, *[arr for arr, _, _ in jobs]])
    return Delayed(last_key, graph)
