"""difflc:installdependencies — PyTorch and the other runtime packages, installed without touching QGIS's Python.

Thin glue: parameters → :func:`engine.installer.install` (the folder, the constraints from QGIS's own Python,
the PyTorch build, pip as a child process with progress and cancel, the import check all live in the engine,
where they are tested without QGIS). The plugin menu's *Install dependencies…* opens this algorithm's dialog.
"""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputBoolean,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ..engine import installer
from .base import DiffLcAlgorithm
from .install import dependency_folder, qgis_python_executable, runtime_requirements

TORCH_BUILD_LABELS = ["Auto: a CUDA build matching the NVIDIA driver (nvidia-smi), else the CPU build",
                      "CPU build"] + [f"CUDA {b[5:]} build" for b in installer.TORCH_BUILDS[2:]]


class InstallDependencies(DiffLcAlgorithm):
    NAME = "installdependencies"
    DISPLAY_NAME = "Install dependencies"
    HELP = """<p>Installs what the classification algorithms need (PyTorch, scikit-learn, safetensors, at the
versions of the plugin's <code>requirements/runtime.txt</code>) into a folder of the plugin,
<code>&lt;QGIS profile&gt;/python/difflc-deps/&lt;Python version&gt;</code>, which the plugin adds to the
<i>end</i> of Python's path when it loads. QGIS's own Python is never changed: pip runs with
<code>--target</code> into that folder, and numpy, scipy and GDAL are pinned to the versions QGIS already has (a
constraints file made from the running Python), so pip can never bring numpy 2 that would break GDAL.</p>
<p><b>TORCH_BUILD</b>: <i>auto</i> asks <code>nvidia-smi</code> for the NVIDIA driver and installs the newest PyTorch
CUDA build that driver runs (the log says which and why); without an NVIDIA driver the CPU build (about 1 GB;
CUDA builds need about 5 GB). Choose a build to override.</p>
<p><b>WHEELS_FOLDER</b> (offline install): a folder of wheel files downloaded on a connected computer with
<code>pip download</code> (the refusal without network prints the exact command); nothing is then fetched.</p>
<p>The install happens in a temporary folder beside the final one and is moved into place only once every
package imports in a fresh Python; Cancel stops pip and removes it. A second run with nothing changed says
<i>already installed</i> within seconds; <b>REINSTALL</b> forces a new install. Afterwards the versions and the
device PyTorch sees are reported. Restart QGIS if an algorithm still says PyTorch is missing.</p>
<p>Advanced: <b>FOLDER</b> another install folder (then add it to <code>PYTHONPATH</code> yourself),
<b>INDEX_URL</b> another package index, <b>REQUIREMENTS</b> other packages (<code>name==version</code>, comma
separated) instead of the plugin's.</p>"""

    TORCH_BUILD = "TORCH_BUILD"
    WHEELS_FOLDER = "WHEELS_FOLDER"
    REINSTALL = "REINSTALL"
    FOLDER = "FOLDER"
    INDEX_URL = "INDEX_URL"
    REQUIREMENTS = "REQUIREMENTS"

    def initAlgorithm(self, config=None):  # noqa: N802
        build = QgsProcessingParameterEnum(self.TORCH_BUILD, "PyTorch build", TORCH_BUILD_LABELS, defaultValue=0)
        build.setHelp("auto = CUDA when nvidia-smi reports an NVIDIA driver (the newest build it runs), else CPU.")
        self.addParameter(build)
        wheels = QgsProcessingParameterFile(self.WHEELS_FOLDER, "Offline: folder of downloaded wheel files "
                                            "(optional)", behavior=QgsProcessingParameterFile.Folder, optional=True)
        wheels.setHelp("Install from these .whl files only (pip --no-index --find-links); nothing is downloaded.")
        self.addParameter(wheels)
        again = QgsProcessingParameterBoolean(self.REINSTALL, "Install again even when already installed",
                                              defaultValue=False)
        again.setHelp("A new install replaces the folder once it is complete.")
        self.addParameter(again)
        folder = QgsProcessingParameterFile(self.FOLDER, "Install folder (empty = the plugin's, in the QGIS "
                                            "profile)", behavior=QgsProcessingParameterFile.Folder, optional=True)
        folder.setHelp("Only the plugin's own folder is added to Python's path automatically.")
        index = QgsProcessingParameterString(self.INDEX_URL, "Package index URL (empty = pip's own, PyPI)",
                                             optional=True)
        index.setHelp("pip --index-url; the PyTorch build's own index is added to it.")
        reqs = QgsProcessingParameterString(self.REQUIREMENTS, "Packages (name==version, comma separated; empty = "
                                            "the plugin's requirements)", optional=True)
        reqs.setHelp("Replaces requirements/runtime.txt for this run.")
        for param in (folder, index, reqs):
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputString("FOLDER", "Install folder"))
        self.addOutput(QgsProcessingOutputBoolean("ALREADY_INSTALLED", "Already installed (nothing done)"))
        self.addOutput(QgsProcessingOutputString("VERSIONS", "Installed versions"))
        self.addOutput(QgsProcessingOutputString("DEVICE", "Device PyTorch sees"))
        self.addOutput(QgsProcessingOutputString("TORCH_BUILD", "PyTorch build (cpu, cu124, …; empty without torch)"))

    def _inputs(self, parameters, context):
        folder = (self.parameterAsFile(parameters, self.FOLDER, context) or "").strip() or dependency_folder()
        wheels = (self.parameterAsFile(parameters, self.WHEELS_FOLDER, context) or "").strip()
        text = self.parameterAsString(parameters, self.REQUIREMENTS, context) or ""
        try:
            requirements = installer.parse_requirements_text(text) if text.strip() else runtime_requirements()
        except installer.InstallError as exc:
            raise QgsProcessingException(f"REQUIREMENTS: {exc}.") from None
        build = installer.TORCH_BUILDS[self.parameterAsEnum(parameters, self.TORCH_BUILD, context)]
        index = (self.parameterAsString(parameters, self.INDEX_URL, context) or "").strip()
        return folder, wheels, requirements, build, index

    def check_settings(self, parameters, context) -> None:
        """Before any work: the packages are readable, the wheels folder holds wheels, the folder takes files."""
        folder, wheels, _, _, index = self._inputs(parameters, context)
        try:
            if wheels:
                installer.check_wheels_folder(wheels)
            installer.check_writable(folder)
        except installer.InstallError as exc:
            raise QgsProcessingException(f"{exc}.") from None
        if index and not index.startswith(("http://", "https://", "file:")):
            raise QgsProcessingException(f"INDEX_URL: {index!r} is not an http(s):// or file: address.")

    def process(self, parameters, context, feedback):
        folder, wheels, requirements, build, index = self._inputs(parameters, context)
        progress = self.progress_for(feedback)
        python = qgis_python_executable()
        plan = installer.make_plan(folder, requirements, python, torch_build=build, wheels_folder=wheels,
                                   index_url=index, reinstall=self.parameterAsBoolean(parameters, self.REINSTALL,
                                                                                      context))
        result = installer.install(plan, progress)
        versions = ", ".join(f"{k} {v}" for k, v in result.versions.items())
        if result.already_installed:
            feedback.pushInfo(f"Already installed in {result.folder} ({versions}); nothing to do "
                              f"({result.seconds:.1f} s). Check REINSTALL to install again.")
        else:
            feedback.pushInfo(f"Installed into {result.folder} in {result.seconds:.0f} s "
                              f"({installer.size_text(result.size_bytes)}): {versions}")
        if result.device:
            feedback.pushInfo(f"PyTorch sees: {result.device}")
        if os.path.abspath(folder) == os.path.abspath(dependency_folder()) and installer.append_to_sys_path(folder):
            feedback.pushInfo(f"{folder} added to the end of Python's path: the algorithms can use it now")
        build_text = ""
        if result.torch_build is not None:
            build_text = result.torch_build.tag or result.torch_build.kind  # "cpu", "cu124", or PyPI's "default"
        return {"FOLDER": result.folder, "ALREADY_INSTALLED": result.already_installed, "VERSIONS": versions,
                "DEVICE": result.device, "TORCH_BUILD": build_text}
