"""Geometry of token vectors: pure per-sequence functions, streaming accumulators, trends.

Nothing here imports transformers or the CLI.
"""

from condense.metrics.geometry import (
    cone_half_angles_deg,
    cone_log10_sphere_fraction,
    dimension_rms_scaled,
    effective_rank,
    high_low_frequency_ratio,
    massive_token_mask,
    max_explainable_variance,
    mean_pairwise_angle_deg,
    mean_pairwise_cosine,
    pairwise_cosine,
    singular_value_entropy,
    singular_values,
    token_norm_stats,
)
from condense.metrics.streaming import (
    PaperCosineAccumulator,
    PooledCosineAccumulator,
    TokenGeometryAccumulator,
    quantiles_from_counts,
)
from condense.metrics.trend import bootstrap_mean_cos, depth_trend, gaussian_baseline, last_layers_means

__all__ = [
    "pairwise_cosine",
    "mean_pairwise_cosine",
    "mean_pairwise_angle_deg",
    "cone_half_angles_deg",
    "cone_log10_sphere_fraction",
    "dimension_rms_scaled",
    "singular_values",
    "max_explainable_variance",
    "singular_value_entropy",
    "effective_rank",
    "high_low_frequency_ratio",
    "token_norm_stats",
    "massive_token_mask",
    "PooledCosineAccumulator",
    "PaperCosineAccumulator",
    "TokenGeometryAccumulator",
    "quantiles_from_counts",
    "depth_trend",
    "last_layers_means",
    "bootstrap_mean_cos",
    "gaussian_baseline",
]
