"""Diffusion Land Cover engine: the science, importable without QGIS.

Folders follow the flow (docs/ARCHITECTURE.md): ``data`` (rasters, labels, representations) → ``networks`` (the
diffusion U-Net and its features; torch only) → ``heads`` (pixel classifiers) → ``tasks`` (land cover, change
detection) → ``jobs`` (files in, files out; many scenes on Dask), with ``assessment`` (accuracy, areas, change
statistics) beside them. Only ``data.raster_io`` and ``data.labels`` import GDAL; nothing here imports torch at
package import time.
"""

ENGINE_VERSION = "0.1.0"
