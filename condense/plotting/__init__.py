"""Figures drawn from ProbeResult objects (or run folders read into them)."""

from condense.plotting.compare import compare_figure, family_figure, order_by_size
from condense.plotting.heatmap import draw_heatmap, heatmap_figure

__all__ = ["draw_heatmap", "heatmap_figure", "compare_figure", "family_figure", "order_by_size"]
