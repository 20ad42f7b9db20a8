"""QGIS glue: the plugin object (menus, toolbar) and the Processing provider."""
