# SPDX-License-Identifier: Apache-2.0
"""eo_pipeline: satellite greenhouse-gas products to maps people act on.

The public API:

* :func:`open_product` - any supported Level-2 file -> lazy canonical soundings
* :func:`list_readers` / :func:`register_reader` - the reader registry
* :func:`summarize` - counts, mean, time span and bounding box of soundings
* :class:`EOPipelineError` - root of every error raised on bad input
"""

from ._version import __version__
from .errors import EOPipelineError
from .readers import list_readers, open_product, register_reader
from .summary import summarize

__all__ = [
    "__version__",
    "EOPipelineError",
    "open_product",
    "list_readers",
    "register_reader",
    "summarize",
]
