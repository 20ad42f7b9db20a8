"""difflc:segmentobjects — a raster (+ SAR) → a GeoPackage of homogeneous regions (SLIC, streamed without seams)."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber

from .base import DiffLcAlgorithm
from .objectparams import (COMPACTNESS, OBJECT_SIZE, OUTPUT, SIZE_UNIT, SIZE_UNITS, add_output,
                           add_segment_parameters, gpkg_output_path)
from .params import (add_input_parameters, add_mask_parameter, add_method_parameters, mask_from_parameters, raster_path,
                     settings_from_parameters)

HELP = """<p>Segments a scene into homogeneous regions (objects) for object-based image analysis: the polygons
can then be classified with <i>Train object classifier</i> / <i>Classify objects</i>.</p>
<p><b>Method</b>: SLIC superpixels (Achanta et al. 2012, IEEE TPAMI 34(11); scikit-image) on the product's
representations &mdash; pseudo-RGB and PCA of the bands, and the Pauli image of the SAR when given, each
stretched to [&minus;1, 1]. SLIC rather than a graph-based segmentation (Felzenszwalb &amp; Huttenlocher 2004):
its parameters are the user's (a target object size and a compactness), it takes a mask, and its objects stay
near the target size, so the scene can be streamed. <b>OBJECT_SIZE</b> in <b>SIZE_UNIT</b> (hectares, m² or pixels)
sets how many objects SLIC aims for; <b>COMPACTNESS</b> trades regular shapes (large) for boundaries that follow
the image (small).</p>
<p><b>Streamed without seams</b>: the scene is segmented in full-width row windows; objects touching a window's
bottom row are not kept but segmented again, whole, with the next window's rows, so no object boundary follows a
window edge and memory does not grow with the scene height. Nodata (of any band, and outside <b>MASK</b>) is never
inside an object.</p>
<p><b>Output</b>: a GeoPackage of valid polygons (GDAL's polygonize of the streamed id raster; one polygon per
object) with <code>object_id</code> (stable: the same inputs and settings give the same ids),
<code>pixels</code>, <code>area_m2</code> and <code>area_ha</code> (pixel areas; on the ellipsoid in a
geographic CRS).</p>"""


class SegmentObjects(DiffLcAlgorithm):
    NAME = "segmentobjects"
    DISPLAY_NAME = "Segment objects (SLIC)"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        add_input_parameters(self, labels=False)
        add_mask_parameter(self, "objects only inside")
        add_segment_parameters(self)
        add_method_parameters(self, adaptation=False, features=False)
        add_output(self, "Objects (GeoPackage)")
        self.addOutput(QgsProcessingOutputNumber("OBJECTS", "Number of objects"))

    def process(self, parameters, context, feedback):
        from ..engine.jobs.objects import SegmentRequest, segment_objects

        hsi = raster_path(self, parameters, "HSI", context)
        sar = raster_path(self, parameters, "SAR", context, optional=True)
        size = self.parameterAsDouble(parameters, OBJECT_SIZE, context)
        unit = SIZE_UNITS[self.parameterAsEnum(parameters, SIZE_UNIT, context)]
        output = gpkg_output_path(self, parameters, context)
        request = SegmentRequest(hsi, sar, output, settings_from_parameters(self, parameters, context),
                                 object_area_m2={"ha": size * 1e4, "m²": size}.get(unit),
                                 object_pixels=size if unit == "pixels" else None,
                                 compactness=self.parameterAsDouble(parameters, COMPACTNESS, context),
                                 mask=mask_from_parameters(self, parameters, context, feedback, hsi))
        outcome = segment_objects(request, self.progress_for(feedback))
        return {OUTPUT: outcome.output, "OBJECTS": outcome.objects}
