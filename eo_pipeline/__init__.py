# SPDX-License-Identifier: Apache-2.0
"""eo_pipeline: satellite greenhouse-gas products to maps people act on.

The public API:

* :func:`open_product` - any supported Level-2 file -> lazy canonical soundings
* :func:`list_readers` / :func:`register_reader` - the reader registry
* :func:`summarize` - counts, mean, time span and bounding box of soundings
* :class:`GridSpec`, :func:`named_grid` - target grids in any CRS
* :func:`grid_soundings` - soundings -> a lazy Level-3 map (area or point binning)
* :func:`composite` - many files -> daily or monthly maps with a time axis
* :func:`regional_anomaly` - backgrounds, anomalies and z-scores
* :func:`find_hotspots` - enhancement regions (GeoDataFrame)
* :func:`region_table` - per-region statistics (DataFrame)
* :func:`write_cog`, :func:`write_netcdf`, :func:`quicklook` - outputs
* :func:`load_config`, :func:`run` - YAML jobs
* :class:`EOPipelineError` - root of every error raised on bad input
"""

from ._version import __version__
from .anomaly import regional_anomaly
from .composite import composite
from .config import load_config
from .errors import EOPipelineError
from .grid import GridSpec, named_grid
from .gridding import grid_soundings
from .hotspots import find_hotspots
from .io.geotiff import write_cog
from .io.netcdf import write_netcdf
from .io.quicklook import quicklook
from .pipeline import run
from .readers import list_readers, open_product, register_reader
from .regions import load_regions, region_table
from .summary import summarize

__all__ = [
    "__version__",
    "EOPipelineError",
    "open_product",
    "list_readers",
    "register_reader",
    "summarize",
    "GridSpec",
    "named_grid",
    "grid_soundings",
    "composite",
    "regional_anomaly",
    "find_hotspots",
    "region_table",
    "load_regions",
    "write_cog",
    "write_netcdf",
    "quicklook",
    "load_config",
    "run",
]
