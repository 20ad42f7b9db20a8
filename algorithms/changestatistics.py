"""difflc:changestatistics — the from–to matrix (pixels and areas) between two classified maps of two dates."""
from __future__ import annotations

from qgis.core import (QgsProcessingOutputNumber, QgsProcessingOutputString, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterRasterLayer)

from .base import DiffLcAlgorithm
from .params import raster_path

HELP = """<p>Cross-tabulates two classified maps of the same area at two dates (post-classification comparison,
Singh 1989, "Digital change detection techniques using remotely-sensed data", Int. J. Remote Sensing 10(6):
989&ndash;1003): for every pair (class at date 1 &rarr; class at date 2) the number of pixels and its area, with
the class names of both legends; per class its area at both dates, loss, gain and net change; and the total
changed area.</p>
<p><b>Inputs</b>: two single-band integer maps (Byte/UInt16, e.g. the OUTPUT of <i>Classify</i>); an image or a
float raster is refused. Class names come from each map's category names, so the two legends may differ (e.g. a
class added at date 2); classes are matched <b>by value</b>: a pixel is unchanged when both maps give it the same
value (a value named differently in the two legends is logged). Pixels that are nodata in either map are left
out and counted. When the date-2 map lies on another grid (pixel size, extent or CRS) it is <b>resampled onto
the date-1 grid by nearest neighbour</b> on the fly (logged); pixels of date 1 outside it count as date-2 nodata;
maps that do not overlap are refused.</p>
<p><b>Areas</b>: in hectares for a projected CRS (pixel area from the geotransform and the CRS's unit), computed
row by row on the ellipsoid for a geographic CRS, in pixels when the map has no CRS &mdash; the same pixel areas
as <i>Accuracy assessment</i>. The maps are read block by block: memory does not grow with their size.</p>
<p><b>Outputs</b>: <b>TABLE</b> (CSV, one row per class pair present: from/to value and name, pixels, area,
changed 0/1; loads in QGIS as a table), <b>HTML</b> (summary, per-class areas, the matrix in pixels and in area,
heat map) and <b>JSON</b>. Pixel counts of a map are not unbiased area estimates: for areas with confidence
intervals assess the map with a reference sample (<i>Accuracy assessment</i>, Olofsson et al. 2014).</p>"""


class ChangeStatistics(DiffLcAlgorithm):
    NAME = "changestatistics"
    DISPLAY_NAME = "Change statistics (from-to matrix of two classified maps)"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("FIRST", "Classified map, date 1 (from)"))
        self.addParameter(QgsProcessingParameterRasterLayer("SECOND", "Classified map, date 2 (to)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            "TABLE", "From-to table (CSV)", fileFilter="CSV (*.csv)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "HTML", "Report (HTML)", fileFilter="HTML (*.html *.htm)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "JSON", "Report (JSON)", fileFilter="JSON (*.json)", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_PIXELS", "Changed pixels"))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_AREA", "Changed area (AREA_UNIT)"))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_FRACTION", "Changed share of the valid pixels (0-1)"))
        self.addOutput(QgsProcessingOutputNumber("VALID_PIXELS", "Pixels with a class in both maps"))
        self.addOutput(QgsProcessingOutputNumber("NODATA_PIXELS", "Pixels left out (nodata in either map)"))
        self.addOutput(QgsProcessingOutputString("AREA_UNIT", "Area unit (ha or pixels)"))

    def process(self, parameters, context, feedback):
        from ..engine import jobs

        first = raster_path(self, parameters, "FIRST", context)
        second = raster_path(self, parameters, "SECOND", context)
        table = self.parameterAsFileOutput(parameters, "TABLE", context) or None
        html = self.parameterAsFileOutput(parameters, "HTML", context) or None
        json_path = self.parameterAsFileOutput(parameters, "JSON", context) or None
        m = jobs.change_statistics(first, second, table, html, json_path, self.progress_for(feedback))
        digits = 2 if m.unit == "ha" else 0
        for c in m.class_summary():
            feedback.pushInfo(f"{c['name']} ({c['value']}): {c['area_date1']:,.{digits}f} → {c['area_date2']:,.{digits}f} "
                              f"{m.unit} (loss {c['loss']:,.{digits}f}, gain {c['gain']:,.{digits}f})")
        fraction = m.changed_pixels / m.valid_pixels
        feedback.pushInfo(f"Changed: {m.changed_pixels:,} pixels, {m.changed_area:,.{digits}f} {m.unit} "
                          f"({100 * fraction:.2f} % of {m.valid_pixels:,} pixels with a class in both maps)")
        return {"TABLE": table, "HTML": html, "JSON": json_path, "CHANGED_PIXELS": m.changed_pixels,
                "CHANGED_AREA": m.changed_area, "CHANGED_FRACTION": fraction, "VALID_PIXELS": m.valid_pixels,
                "NODATA_PIXELS": m.excluded_pixels, "AREA_UNIT": m.unit}
