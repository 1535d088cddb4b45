"""The notebook side: %chimera magics and the live widgets (ClusterPanel, FrameView, LiveChart, LogView)."""


def load_ipython_extension(ipython: object) -> None:
    """Register the %chimera magics (``%load_ext chimera_lab``)."""
    from .magics import load_ipython_extension as load

    load(ipython)
