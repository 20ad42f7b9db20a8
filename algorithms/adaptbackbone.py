"""difflc:adaptbackbone — Stage A alone: FiLM adaptation (or compact training) → adapted backbone file."""
from __future__ import annotations

from qgis.core import QgsProcessingParameterFileDestination

from .base import DiffLcAlgorithm
from .params import (
    STAGE_A_HELP,
    add_backbone_parameters,
    add_input_parameters,
    add_method_parameters,
    raster_path,
    settings_from_parameters,
)

HELP = """<p>Stage A of UniDiff alone, unsupervised (no labels): writes the adapted network for <i>Train
classifier</i> (<b>ADAPTED</b>), so Stage A can be run once and reused.</p>""" + STAGE_A_HELP + """
<p>Adaptation presets: paper lr 3e-3 (default), public code lr 1e-4 ("public"). The output
(<code>.difflcbb</code>) holds only what was trained plus the fingerprint of the base weights.</p>"""


class AdaptBackbone(DiffLcAlgorithm):
    NAME = "adaptbackbone"
    DISPLAY_NAME = "Adapt backbone (Stage A)"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        add_input_parameters(self, labels=False)
        add_backbone_parameters(self)
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Adapted backbone", fileFilter="Adapted backbone (*.difflcbb)"))
        add_method_parameters(self, features=False)

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine import jobs

        settings = settings_from_parameters(self, parameters, context)
        hsi = raster_path(self, parameters, "HSI", context)
        sar = raster_path(self, parameters, "SAR", context, optional=True)
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        info = jobs.adapt_backbone(hsi, sar, settings, output, self.progress_for(feedback))
        return {"OUTPUT": output, "FINGERPRINT": info.fingerprint, "KIND": info.kind}
