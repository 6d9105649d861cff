"""kfcpo: safe reinforcement learning on Lightning (KFCPO and its baselines)."""

from kfcpo.version import __version__

__all__ = ["__version__"]
