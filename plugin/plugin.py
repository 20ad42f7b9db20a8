"""The QGIS plugin object: registers the provider and adds a menu entry + toolbar button.

qgis_process calls only :meth:`initProcessing` (with ``iface=None``); the desktop calls :meth:`initGui`.
"""
from __future__ import annotations

from qgis.core import QgsApplication, Qgis
from qgis.PyQt.QtWidgets import QAction

from .provider import PROVIDER_ID, PROVIDER_NAME, DiffusionLandCoverProvider

MAIN_ALGORITHM = f"{PROVIDER_ID}:trainandclassify"
MENU = PROVIDER_NAME


class DiffusionLandCoverPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None  # kept referenced: the registry loses the algorithms otherwise
        self.action = None

    def initProcessing(self) -> None:  # noqa: N802
        if self.provider is None:
            self.provider = DiffusionLandCoverProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        self.action = QAction(self.provider.icon(), "Train and classify…", self.iface.mainWindow())
        self.action.setObjectName("difflcTrainAndClassify")
        self.action.setToolTip("Diffusion Land Cover: train on labelled points and classify the scene in one step")
        self.action.triggered.connect(self.open_main_dialog)
        self.iface.addPluginToMenu(MENU, self.action)
        self.iface.addToolBarIcon(self.action)

    def open_main_dialog(self) -> None:
        """Open the one-step algorithm's dialog, or say clearly why it cannot be opened."""
        if QgsApplication.processingRegistry().algorithmById(MAIN_ALGORITHM) is None:
            self.iface.messageBar().pushMessage(
                PROVIDER_NAME,
                f"Algorithm {MAIN_ALGORITHM} is not available. Open the Processing Toolbox and run "
                f"'{PROVIDER_NAME} › Check environment' to see what is missing.",
                level=Qgis.Warning, duration=10)
            return
        import processing  # QGIS's bundled plugin; only importable once QGIS runs

        processing.execAlgorithmDialog(MAIN_ALGORITHM, {})

    def unload(self) -> None:
        if self.action is not None:
            if self.iface is not None:
                self.iface.removePluginMenu(MENU, self.action)
                self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
