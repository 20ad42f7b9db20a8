"""QGIS entry point of the Diffusion Land Cover plugin (installed as package ``diffusion_landcover``)."""


def classFactory(iface):  # noqa: N802 (QGIS naming)
    """Called by QGIS (and by qgis_process with iface=None) to create the plugin object."""
    from .plugin.plugin import DiffusionLandCoverPlugin

    return DiffusionLandCoverPlugin(iface)
