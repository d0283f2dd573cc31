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

#: ``(arrays, task function, extra arguments of a block given its index)``: ``arrays`` is one
#: array, or a sequence of arrays with the same chunks whose blocks go to one task together;
#: each task is called as ``func(first, block, *extra)`` or ``func(first, *blocks, **extra)``
#: (without ``first`` when it is None); ``extra`` returns a tuple (positional) or a dict (keywords).
BlockJob = tuple[da.Array | Sequence[da.Array], Callable[..., Any], Callable[..., Any]]


def blocks_then(first: Delayed | None, jobs: Sequence[BlockJob], last: Callable[..., Any], last_args: Sequence[Any],
                *, token: Any) -> Delayed:
    """A Delayed running ``first``, then one task per block of every job's arrays, then ``last``.

    ``last`` is called as ``last([result of first, *results of the block tasks], *last_args)``
    (so it runs after ``first`` even without blocks; without ``first``:
    ``last([*results of the block tasks], *last_args)``); its key is
    ``"{last.__name__}-{token}"`` (the progress line counts finished outputs by it).
    For a single array, ``extra`` is called as ``extra(index, region)`` and returns a tuple;
    for a sequence of arrays, as ``extra(index)`` and returns a dict of keywords.
    """
    tok = tokenize(token)
    head = [TaskRef(first.key)] if first is not None else []
    dsk: dict[Any, Task] = {}
    keys: list[Any] = []
    collections: list[Any] = [first] if first is not None else []
    for arrays, func, extra in jobs:
        name = f"{func.__name__}-{tok}"
        if isinstance(arrays, da.Array):
            arr = arrays
            starts = [np.concatenate(([0], np.cumsum(c[:-1]))).astype(int) for c in arr.chunks]
            for index in np.ndindex(*arr.numblocks):
                region = tuple(slice(int(starts[d][i]), int(starts[d][i]) + arr.chunks[d][i])
                               for d, i in enumerate(index))
                key = (name, len(keys))
                dsk[key] = Task(key, func, *head, TaskRef((arr.name, *index)), *extra(index, region))
                keys.append(key)
            collections.append(arr)
            continue
        if any(a.chunks != arrays[0].chunks for a in arrays):
            raise ValueError("the arrays of one block job must have the same chunks")
        for index in np.ndindex(*arrays[0].numblocks):
            key = (name, len(keys))
            dsk[key] = Task(key, func, *head, *[TaskRef((a.name, *index)) for a in arrays], **extra(index))
            keys.append(key)
        collections += list(arrays)
    last_key = f"{last.__name__}-{tok}"
    dsk[last_key] = Task(last_key, last, List(*head, *[TaskRef(k) for k in keys]), *last_args)
    graph = HighLevelGraph.from_collections(last_key, dsk, dependencies=collections)
    return Delayed(last_key, graph)
