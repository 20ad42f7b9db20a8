"""Diffusion Land Cover engine: the science, importable without QGIS.

Only the raster/label I/O modules (``raster_io``, ``labels``) import GDAL; the backbone, diffusion,
adaptation, features, classifier and tiling modules need numpy and torch only, so they run on a GPU
machine that has no QGIS or GDAL. Nothing here imports torch at package import time.
"""

ENGINE_VERSION = "0.1.0"
