"""difflc:buildrepresentations — the three 3-channel images the network sees, for inspection."""
from __future__ import annotations

from qgis.core import QgsProcessingException, QgsProcessingParameterRasterDestination

from .base import DiffLcAlgorithm
from .params import add_input_parameters, add_method_parameters, raster_path, settings_from_parameters

HELP = """<p>Writes the representations the diffusion backbone sees, as 3-band Float32 GeoTIFFs in [&minus;1, 1]
on the HSI grid: <b>pseudo-RGB</b> (HSI bands nearest 640/550/460 nm from the wavelength metadata, else by
position, or the bands you give), <b>PCA</b> (first three principal components fitted on a random sample of
valid pixels, no whitening) and <b>SAR</b> (dB converted to linear; dual-pol pseudo-Pauli
|VV&minus;VH|, 2&radic;VH, |VV+VH|; quad-pol Pauli from HH/HV/VV; single-pol intensity/amplitude/dB), each
channel stretched between its 2nd and 98th percentiles. Nodata stays nodata (NaN).</p>"""


class BuildRepresentations(DiffLcAlgorithm):
    NAME = "buildrepresentations"
    DISPLAY_NAME = "Build representations (pRGB, PCA, SAR)"
    HELP = HELP
    NEEDS_TORCH = False

    def initAlgorithm(self, config=None):  # noqa: N802
        add_input_parameters(self, labels=False)
        self.addParameter(QgsProcessingParameterRasterDestination("PRGB", "Pseudo-RGB image", optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination("PCA", "PCA image", optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination("SAR_IMAGE", "SAR (Pauli) image", optional=True,
                                                                  createByDefault=False))
        add_method_parameters(self, adaptation=False, features=False)

    def process(self, parameters, context, feedback):
        from ..engine import jobs

        settings = settings_from_parameters(self, parameters, context)
        hsi = raster_path(self, parameters, "HSI", context)
        sar = raster_path(self, parameters, "SAR", context, optional=True)
        outputs = {"prgb": self.parameterAsOutputLayer(parameters, "PRGB", context),
                   "pca": self.parameterAsOutputLayer(parameters, "PCA", context),
                   "sar": self.parameterAsOutputLayer(parameters, "SAR_IMAGE", context)}
        if outputs["sar"] and not sar:
            feedback.pushWarning("No SAR raster given: the SAR image is not written.")
        if not any(outputs.values()):
            raise QgsProcessingException("Choose at least one output image (PRGB, PCA or SAR_IMAGE).")
        written = jobs.build_representations(hsi, sar, settings, outputs, self.progress_for(feedback))
        return {"PRGB": written.get("prgb"), "PCA": written.get("pca"), "SAR_IMAGE": written.get("sar")}
