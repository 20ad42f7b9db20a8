"""difflc:adaptbackbone — Stage A alone: FiLM adaptation (or compact training) → adapted backbone file."""
from __future__ import annotations

from qgis.core import QgsProcessingParameterFileDestination

from .base import DiffLcAlgorithm
from .params import (
    add_backbone_parameters,
    add_input_parameters,
    add_method_parameters,
    raster_path,
    settings_from_parameters,
)

HELP = """<p>Stage A of UniDiff, unsupervised (no labels): the frozen ImageNet ADM network learns the scene's
modalities (pseudo-RGB, PCA, SAR) through its own FiLM path only: the modality enters as the class label
(rows 1&ndash;4 of <i>label_emb</i>) and only <i>label_emb</i> + the decoder's <i>emb_layers</i> (~5 % of the
weights) are trained with the denoising objective on random 64&times;64 patches, pRGB in every batch.
Paper defaults: lr 3e-3, batch 32, 2000 steps (the public code used lr 1e-4: preset "public").</p>
<p>Without a checkpoint a compact ADM network is trained on the scene instead (offline backbone).</p>
<p>The output (<code>.difflcbb</code>) holds only what was trained plus the fingerprint of the base weights;
give it to <i>Train classifier</i> as <b>ADAPTED</b>.</p>"""


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
        return {"OUTPUT": output, "FINGERPRINT": info["fingerprint"], "KIND": info["kind"]}
