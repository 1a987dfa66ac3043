"""q2-aam: the QIIME 2 plugin of Attention All Microbes (AAM).

Kept light on purpose: every `qiime` command imports all plugins, so torch and the `aam` engine are imported
inside the actions, never here.
"""
from aam import __version__

__all__ = ["__version__"]
