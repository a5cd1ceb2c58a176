"""Figures drawn from ProbeResult objects (or run folders read into them)."""

from condense.plotting.compare import compare_figure, distinct_labels, family_figure, order_by_size, with_labels
from condense.plotting.heatmap import draw_heatmap, heatmap_figure

__all__ = ["draw_heatmap", "heatmap_figure", "compare_figure", "family_figure", "order_by_size", "distinct_labels",
           "with_labels"]
