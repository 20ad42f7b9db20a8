"""difflc:downloadbackbone — install the pretrained ImageNet 64x64 ADM checkpoint into the user's cache.

Thin glue: parameters → :func:`engine.jobs.download.fetch_backbone` (progress, resume, cancel, strict
verification all live in the engine, where they are tested without QGIS).
"""
from __future__ import annotations

import json

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputBoolean,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterString,
)

from ..engine import paths
from ..engine.jobs.download import OFFICIAL_URL
from .base import DiffLcAlgorithm


def parse_config(text: str):
    """CONFIG parameter → UNetConfig (None when empty: the ImageNet ADM 64 layout is expected)."""
    text = (text or "").strip()
    if not text:
        return None
    from ..engine.networks.backbone import UNetConfig  # torch: only once the algorithm runs

    try:
        return UNetConfig.from_dict(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise QgsProcessingException(
            f"CONFIG is not a valid UNetConfig as JSON ({exc}). Leave it empty for the official ImageNet "
            "checkpoint; otherwise give e.g. {\"name\": \"mine\", \"model_channels\": 64, \"out_channels\": 3, "
            "\"num_res_blocks\": 2, \"attention_resolutions\": [4, 8], \"channel_mult\": [1, 2, 2], "
            "\"num_classes\": null, \"learn_sigma\": false}.") from exc


class DownloadBackbone(DiffLcAlgorithm):
    NAME = "downloadbackbone"
    DISPLAY_NAME = "Download pretrained backbone"
    NEEDS_TORCH = True
    HELP = f"""<p>Downloads the pretrained diffusion backbone that the classification algorithms adapt: OpenAI's
guided-diffusion <b>ImageNet 64&times;64</b> class-conditional ADM U-Net, <code>64x64_diffusion.pt</code>
(about 1.2 GB, 296 M parameters, published by OpenAI under the MIT licence with the guided-diffusion code).</p>
<p><b>Where it goes</b>: by default into the plugin's cache folder,
<code>$DIFFLC_CACHE_DIR/64x64_diffusion.pt</code> (without that variable
<code>~/.cache/diffusion_landcover/64x64_diffusion.pt</code>), where the other algorithms and
<i>Check environment</i> find it automatically. Another <b>Output file</b> can be chosen; then give that
path as the <b>BACKBONE</b> parameter of the training algorithms or set the environment variable
<code>$DIFFLC_BACKBONE</code> to it.</p>
<p><b>Resume and cancel</b>: the download is written to <code>&lt;output&gt;.part</code>; a cancelled or
interrupted download continues from there on the next run (HTTP range request). Short network
interruptions are resumed automatically.</p>
<p><b>Verification</b>: the file is kept only if it loads strictly as the expected network (every tensor
name and shape); a file that does not is deleted and the error says what does not match. An already
installed file that verifies is reused and not downloaded again unless <b>Overwrite</b> is checked; the
output <b>FINGERPRINT</b> (sha256 of the weights) identifies the weights a model was adapted from.</p>
<p><b>Manual download</b>: without internet access in QGIS, fetch <code>{OFFICIAL_URL}</code> with a browser
or <code>curl -C - -O</code>, and put it in the cache folder above or point <code>$DIFFLC_BACKBONE</code> /
the BACKBONE parameter to it.</p>
<p><b>Advanced</b>: <i>URL</i> selects a mirror; <i>CONFIG</i> (JSON of a UNetConfig) is for testing mirrors of
other ADM checkpoints; leave it empty for the official one.</p>"""

    OUTPUT_FOLDER_CREATED = ("OUTPUT",)  # the cache folder is made on first use

    def initAlgorithm(self, config=None):  # noqa: N802
        url = QgsProcessingParameterString("URL", "Download URL", defaultValue=OFFICIAL_URL)
        url.setFlags(url.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(url)
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Output file (default: the plugin's cache)", fileFilter="PyTorch checkpoint (*.pt)",
            defaultValue=str(paths.default_backbone_path()), optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "OVERWRITE", "Download again even when a verified file exists", defaultValue=False))
        unet = QgsProcessingParameterString(
            "CONFIG", "Expected network (UNetConfig JSON; empty = ImageNet ADM 64x64)", defaultValue="",
            optional=True)
        unet.setFlags(unet.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(unet)
        self.addOutput(QgsProcessingOutputString("FINGERPRINT", "Weights fingerprint (sha256)"))
        self.addOutput(QgsProcessingOutputBoolean("REUSED", "An installed file was reused"))

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine.jobs.download import fetch_backbone

        url = (self.parameterAsString(parameters, "URL", context) or "").strip() or OFFICIAL_URL
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context) if "OUTPUT" in parameters else ""
        dest = output or str(paths.default_backbone_path())
        overwrite = self.parameterAsBoolean(parameters, "OVERWRITE", context)
        config = parse_config(self.parameterAsString(parameters, "CONFIG", context))
        result = fetch_backbone(dest, url, self.progress_for(feedback), config=config, overwrite=overwrite)
        feedback.pushInfo(f"Backbone checkpoint: {result.path}"
                          + (" (already installed, reused)" if result.reused else
                             f" ({result.downloaded_bytes / 1e6:.1f} MB downloaded)"))
        if str(result.path) != str(paths.default_backbone_path()):
            feedback.pushInfo(f"This is not the cache location: give it as the BACKBONE parameter or set "
                              f"DIFFLC_BACKBONE={result.path}")
        return {"OUTPUT": str(result.path), "FINGERPRINT": result.fingerprint, "REUSED": result.reused}
