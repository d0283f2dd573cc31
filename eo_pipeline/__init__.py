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
* :func:`forest_area_by_year` - tree cover and loss (ha) per region and year (GFW definitions)
* :func:`compute_forest`, :func:`carbon_table`, :func:`carbon_maps`, :func:`load_removal_factors`,
  :func:`removals_tco2`, :func:`run_forest` - forest removals, loss emissions and net flux
* :func:`write_cog`, :func:`write_netcdf`, :func:`quicklook` - outputs
* :func:`open_radiance` - hyperspectral radiance cubes (AVIRIS-NG ENVI, EMIT L1B) -> lazy cube
* :func:`ch4_matched_filter` - radiance cube -> CH4 enhancement (ppm m) and its uncertainty
* :func:`find_plumes` - plume masks, IME and emission rates (GeoDataFrame)
* :func:`run_plumes` - a cube to enhancement COGs, plume mask, plume table and quicklook
* :func:`load_config`, :func:`run` - YAML jobs
* :class:`EOPipelineError` - root of every error raised on bad input
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import EOPipelineError

#: public name -> module that defines it; imported on first use (PEP 562), so that
#: ``import eo_pipeline`` and the command line load only what a task needs.
_LAZY = {
    "regional_anomaly": "anomaly", "composite": "composites", "load_config": "config",
    "compute_forest": "forest", "forest_area_by_year": "forest", "run_forest": "forest_stage",
    "GridSpec": "grid", "named_grid": "grid", "grid_soundings": "gridding", "find_hotspots": "hotspots",
    "write_cog": "io.geotiff", "write_netcdf": "io.netcdf", "quicklook": "io.quicklook", "run": "pipeline",
    "list_readers": "readers", "open_product": "readers", "register_reader": "readers",
    "load_regions": "regions", "region_table": "regions", "carbon_maps": "sinks", "carbon_table": "sinks",
    "load_removal_factors": "sinks", "removals_tco2": "sinks", "summarize": "summary",
    "open_radiance": "readers.radiance", "ch4_matched_filter": "matched_filter", "find_plumes": "plumes",
    "run_plumes": "plume_stage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eo_pipeline' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .anomaly import regional_anomaly
    from .composites import composite
    from .config import load_config
    from .forest import compute_forest, forest_area_by_year
    from .forest_stage import run_forest
    from .grid import GridSpec, named_grid
    from .gridding import grid_soundings
    from .hotspots import find_hotspots
    from .io.geotiff import write_cog
    from .io.netcdf import write_netcdf
    from .io.quicklook import quicklook
    from .matched_filter import ch4_matched_filter
    from .pipeline import run
    from .plume_stage import run_plumes
    from .plumes import find_plumes
    from .readers import list_readers, open_product, register_reader
    from .readers.radiance import open_radiance
    from .regions import load_regions, region_table
    from .sinks import carbon_maps, carbon_table, load_removal_factors, removals_tco2
    from .summary import summarize

__all__ = [
    "open_radiance",
    "ch4_matched_filter",
    "find_plumes",
    "run_plumes",
    "forest_area_by_year",
    "compute_forest",
    "carbon_table",
    "carbon_maps",
    "load_removal_factors",
    "removals_tco2",
    "run_forest",
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
