"""Rasters, labels and representations: GDAL/OGR in, numpy arrays out."""
