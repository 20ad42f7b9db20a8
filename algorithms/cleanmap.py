"""difflc:cleanmap — majority filter and minimum mapping unit on a classified raster, style carried over."""
from __future__ import annotations

from qgis.core import QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer

from .base import DiffLcAlgorithm
from .params import add_cleanup_parameters, cleanup_from_parameters, raster_path

HELP = """<p>Cleans a classified raster the usual way before it is used: a <b>majority (modal) filter</b> removes
salt-and-pepper noise, then a <b>minimum mapping unit</b> (sieve) merges every patch smaller than it into its
largest neighbouring patch, so no patch of the result is smaller than the unit.</p>
<ul>
<li><b>MAJORITY_RADIUS</b> r: each pixel takes the most frequent class in the (2r+1)&times;(2r+1) square around
it; on a tie it keeps its own class (else the smallest tied value). Streamed by row blocks with an r-row halo:
memory does not grow with the map.</li>
<li><b>SIEVE_PIXELS</b> or <b>SIEVE_AREA</b> (hectares, converted with the map's pixel area; in a geographic CRS
the mean pixel area): patches of fewer pixels merge (GDAL's sieve filter, <code>gdal.SieveFilter</code>).
<b>CONNECTIVITY</b>: 4 (edges) or 8 (edges and corners) connect a patch. GDAL's sieve works on the whole band,
so its memory grows with the map's size (about a few bytes per pixel).</li>
</ul>
<p>Nodata pixels never change and never vote, and no patch merges into nodata. The output keeps the input's
class names, colours, category names and gets a <code>.qml</code> style; its nodata is 0 (255 when 0 is a class),
at the same pixels as the input's. It is written to a temporary file and moved into place when complete. The
same clean-up is an optional step of <i>Classify</i> and <i>Train and classify</i>.</p>"""


class CleanMap(DiffLcAlgorithm):
    NAME = "cleanmap"
    DISPLAY_NAME = "Clean up a classified map (majority filter, minimum mapping unit)"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Classified raster"))
        add_cleanup_parameters(self, advanced=False)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Cleaned classified raster"))

    def process(self, parameters, context, feedback):
        from ..engine import jobs

        source = raster_path(self, parameters, "INPUT", context)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        settings = cleanup_from_parameters(self, parameters, context)
        result = jobs.clean_map(source, output, settings, self.progress_for(feedback))
        for name, count in result.class_pixels.items():
            feedback.pushInfo(f"{name}: {count} pixels")
        return {"OUTPUT": result.output}
