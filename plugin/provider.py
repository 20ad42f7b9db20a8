"""The Processing provider: one object that owns every ``difflc:*`` algorithm."""
from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..algorithms import algorithm_classes
from ..algorithms.base import ICON_PATH

PROVIDER_ID = "difflc"
PROVIDER_NAME = "Diffusion Land Cover"


class DiffusionLandCoverProvider(QgsProcessingProvider):
    """Lists the algorithms of :func:`algorithms.algorithm_classes`; importing it never imports torch."""

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return PROVIDER_NAME

    def longName(self) -> str:  # noqa: N802
        return PROVIDER_NAME

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:  # noqa: N802
        return ICON_PATH

    def loadAlgorithms(self) -> None:  # noqa: N802
        for cls in algorithm_classes():
            self.addAlgorithm(cls())
