"""The diffusion U-Net and what runs it (torch only: no QGIS, no GDAL): backbone, noise schedule,
FiLM adaptation, pretraining, per-pixel features."""
