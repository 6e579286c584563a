""" matplotlib on demand: drawing needs it, computing the maps does not

Copyright 2026, the timm-camc authors. Apache-2.0.
"""

_MATPLOTLIB_HINT = 'pip install "timm-camc[viz]" (or pip install matplotlib)'


def _import_matplotlib():
    """matplotlib (Agg, no pyplot: no global backend state), or an ImportError that says how to install it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f'Drawing CAM overlays and plots needs matplotlib: {_MATPLOTLIB_HINT}') from e
    return matplotlib, Figure
