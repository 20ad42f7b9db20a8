"""The QGIS plugin object: puts the installed dependencies on the path, registers the provider, and adds the
menu entries (*Train and classify…* also as a toolbar button, *Install dependencies…*).

qgis_process calls only :meth:`initProcessing` (with ``iface=None``); the desktop calls :meth:`initGui`.
"""
from __future__ import annotations

from qgis.core import QgsApplication, Qgis
from qgis.PyQt.QtWidgets import QAction

from .provider import PROVIDER_ID, PROVIDER_NAME, DiffusionLandCoverProvider

MAIN_ALGORITHM = f"{PROVIDER_ID}:trainandclassify"
INSTALL_ALGORITHM = f"{PROVIDER_ID}:installdependencies"
MENU = PROVIDER_NAME


class DiffusionLandCoverPlugin:
    def __init__(self, iface):
        from ..algorithms.install import add_dependency_folder

        # what Install dependencies installed, appended after QGIS's own site-packages (its numpy/GDAL win)
        add_dependency_folder()
        self.iface = iface
        self.provider = None  # kept referenced: the registry loses the algorithms otherwise
        self.action = None
        self.install_action = None

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
        self.install_action = QAction(self.provider.icon(), "Install dependencies…", self.iface.mainWindow())
        self.install_action.setObjectName("difflcInstallDependencies")
        self.install_action.setToolTip("Diffusion Land Cover: install PyTorch and the other packages into a "
                                       "folder of the plugin (QGIS's own Python is not changed)")
        self.install_action.triggered.connect(self.open_install_dialog)
        self.iface.addPluginToMenu(MENU, self.install_action)

    def open_main_dialog(self) -> None:
        self.open_dialog(MAIN_ALGORITHM)

    def open_install_dialog(self) -> None:
        """The menu entry is the Processing algorithm's own dialog: one implementation."""
        self.open_dialog(INSTALL_ALGORITHM)

    def open_dialog(self, algorithm_id: str) -> None:
        """Open an algorithm's dialog, or say clearly why it cannot be opened."""
        if QgsApplication.processingRegistry().algorithmById(algorithm_id) is None:
            self.iface.messageBar().pushMessage(
                PROVIDER_NAME,
                f"Algorithm {algorithm_id} is not available. Open the Processing Toolbox and run "
                f"'{PROVIDER_NAME} › Check environment' to see what is missing.",
                level=Qgis.Warning, duration=10)
            return
        import processing  # QGIS's bundled plugin; only importable once QGIS runs

        processing.execAlgorithmDialog(algorithm_id, {})

    def unload(self) -> None:
        if self.action is not None:
            if self.iface is not None:
                self.iface.removePluginMenu(MENU, self.action)
                self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.install_action is not None:
            if self.iface is not None:
                self.iface.removePluginMenu(MENU, self.install_action)
            self.install_action.deleteLater()
            self.install_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
