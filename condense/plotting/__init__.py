"""Figures drawn from ProbeResult objects (or run folders read into them).

Names are imported on first use (:mod:`condense.lazy`): a probe's heatmap needs matplotlib, not seaborn.
"""

from typing import TYPE_CHECKING

from condense.lazy import lazy_exports

if TYPE_CHECKING:
    from condense.plotting.compare import compare_figure, distinct_labels, family_figure, order_by_size, with_labels
    from condense.plotting.heatmap import draw_heatmap, heatmap_figure

__all__ = ["draw_heatmap", "heatmap_figure", "compare_figure", "family_figure", "order_by_size", "distinct_labels",
           "with_labels"]

lazy_exports(__name__, {
    "condense.plotting.compare": ("compare_figure", "distinct_labels", "family_figure", "order_by_size", "with_labels"),
    "condense.plotting.heatmap": ("draw_heatmap", "heatmap_figure"),
})
