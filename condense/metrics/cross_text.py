"""The exact cross-text cosine: how far the tokens of *different* texts share one direction.

Within-text statistics (``mean_cos``) cannot tell a cone that belongs to each text (the paper's
condensation) from one that the whole corpus shares (the anisotropy of Ethayarajh 2019). The
cross-text columns answer that, exactly and without sampling, from per-text sums of unit vectors.

Notation: for text s, r_s = Σ_i û_i is the sum of its counted tokens' unit vectors, n_s their count
and m_s = r_s / n_s their mean. Per layer the state is, in float64,

    R = Σ_s r_s,   P_d = Σ_s r_{s,d}²,   M = Σ_s m_s            (vectors of length D)
    A = Σ_s ‖r_s‖²,   N = Σ_s n_s,   Q = Σ_s n_s²,   B = Σ_s ‖m_s‖²,   S = #texts,
    H = Σ_s 1/n_s,   H₂ = Σ_s 1/n_s²                            (scalars)

and since Σ over ordered token pairs from different texts of ⟨û_i, û_j⟩ = ‖R‖² − A:

- ``cross_mean_cos`` = (‖R‖² − A) / (N² − Q): the mean cosine over all token pairs from different
  texts (the within-text ``mean_cos`` is (A − N) / (Q − N) in the pooled convention);
- ``cross_mean_cos_text_weighted`` = (‖M‖² − B) / (S (S − 1)): the same with every text weighted
  equally, i.e. the expected cosine of one token drawn from each of two different texts;
- ``corpus_resultant_length`` = ‖R‖ / N: the length of the corpus's mean unit vector, in [0, 1];
- rogue dimensions (Timkey & van Schijndel 2021): dimension d contributes
  (R_d² − P_d) / (N² − Q) to ``cross_mean_cos``, and the D contributions sum to it exactly.

Texts with at least one counted token count (a one-token text forms cross pairs but no within
pair). Every sum is additive over texts, so the result does not depend on batch size, order,
resume or sharding (up to float64 rounding), and ``merge`` adds two halves of a corpus.

Isotropic baseline: for independent isotropic directions each cross pair has mean 0 and standard
deviation 1/√D, and distinct pairs are uncorrelated, so ``cross_mean_cos`` has mean 0 and
standard deviation √(2 / (D (N² − Q))) (``gauss_cross_mean_cos_sd``); the text-weighted mean has
standard deviation √(2 (H² − H₂) / D) / (S (S − 1)); and E‖R‖² = N gives the resultant length
1/√N (``gauss_corpus_resultant_length``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["CrossTextAccumulator", "cross_text_sums", "ROGUE_TOP"]

ROGUE_TOP = 5  # rogue dimensions reported per layer
_VECTORS = ("R", "P", "M")
_SCALARS = ("A", "N", "Q", "B", "S", "H", "H2")


def cross_text_sums(unit: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's float64 sums (keys R, P, M, A, N, Q, B, S, H, H2; see the module docstring).

    unit: [B, T, D] rows of unit norm (or the paper's floored norm) where ``mask`` [B, T] is True,
    zero elsewhere; each row of the batch is one text. Rows without a counted token add nothing.
    """
    counts = mask.sum(dim=1).double()
    # float64 accumulation of the float32 rows: the per-text sums are exact to float64 rounding
    r = unit.sum(dim=1, dtype=torch.float64)
    present = counts > 0
    r, counts = r[present], counts[present]
    m = r / counts.unsqueeze(-1)
    return {"R": r.sum(dim=0), "P": r.square().sum(dim=0), "M": m.sum(dim=0), "A": r.square().sum(),
            "N": counts.sum(), "Q": counts.square().sum(), "B": m.square().sum(),
            "S": present.sum().double(), "H": counts.reciprocal().sum(), "H2": counts.reciprocal().square().sum()}


class CrossTextAccumulator:
    """Exact cross-text cosine columns of one layer, streamed batch by batch.

    ``update(unit, mask)`` is ``add(measure(unit, mask))``; ``measure`` leaves the state untouched,
    so a caller can drop a batch that failed half-way. State: three float64 vectors of length D and
    seven scalars (on the rows' device until :meth:`finalize`); it pickles for a checkpoint.
    """

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    measure = staticmethod(cross_text_sums)

    def update(self, unit: torch.Tensor, mask: torch.Tensor) -> None:
        self.add(self.measure(unit, mask))

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Fold one batch's sums from :meth:`measure` into the state."""
        for key, value in batch.items():
            old = self.state.get(key)  # .to(): a resumed state sits on the CPU
            self.state[key] = value if old is None else old.to(value.device) + value

    def merge(self, other: "CrossTextAccumulator") -> "CrossTextAccumulator":
        """Add ``other``'s texts (another shard of the corpus) to this state; returns self."""
        self.add(dict(other.state))
        return self

    def finalize(self, within_mean_cos: float = math.nan) -> dict[str, float]:
        """The layer's columns; ``within_mean_cos`` (the layer's ``mean_cos``) gives ``within_minus_cross``.

        Rogue dimensions are ranked by their signed contribution, largest first (ties by index):
        ``rogue_dim_k`` is the k-th dimension's index, ``rogue_share_k`` its contribution divided by
        ``cross_mean_cos``. Contributions can be negative (a dimension whose values have opposite
        signs in different texts), so shares can exceed 1; when ``cross_mean_cos`` <= 0 no common
        direction exists to attribute and the shares are NaN (the dimensions are still listed).
        """
        st = {k: v.detach().cpu().double().numpy() for k, v in self.state.items()}
        zero = np.zeros(0)
        R, P, M = (st.get(k, zero) for k in _VECTORS)
        A, N, Q, B, S, H, H2 = (float(st.get(k, 0.0)) for k in _SCALARS)
        dim = len(R)
        cross_pairs = N * N - Q  # ordered pairs of tokens from different texts
        cross = float(R @ R - A) / cross_pairs if cross_pairs > 0 else math.nan
        text_pairs = S * (S - 1)
        cols = {
            "cross_mean_cos": cross,
            "within_minus_cross": within_mean_cos - cross,
            "cross_mean_cos_text_weighted": float(M @ M - B) / text_pairs if text_pairs > 0 else math.nan,
            "corpus_resultant_length": math.sqrt(float(R @ R)) / N if N > 0 else math.nan,
            "cross_n_pairs": cross_pairs / 2,
            "gauss_cross_mean_cos_sd": math.sqrt(2.0 / (dim * cross_pairs)) if cross_pairs > 0 and dim else math.nan,
            "gauss_cross_mean_cos_text_weighted_sd": (math.sqrt(max(2.0 * (H * H - H2) / dim, 0.0)) / text_pairs
                                                      if text_pairs > 0 and dim else math.nan),
            "gauss_corpus_resultant_length": 1.0 / math.sqrt(N) if N > 0 else math.nan,
        }
        contribution = (R * R - P) / cross_pairs if cross_pairs > 0 else np.full(dim, math.nan)
        order = np.lexsort((np.arange(dim), -contribution))[:ROGUE_TOP] if cross_pairs > 0 else []
        for k in range(ROGUE_TOP):
            found = k < len(order)
            cols[f"rogue_dim_{k + 1}"] = float(order[k]) if found else math.nan
            cols[f"rogue_share_{k + 1}"] = (float(contribution[order[k]]) / cross
                                            if found and cross > 0 else math.nan)
        return cols

    def contributions(self) -> np.ndarray:
        """Every dimension's contribution (R_d² − P_d) / (N² − Q) [D]; they sum to ``cross_mean_cos``."""
        R, P = (self.state[k].detach().cpu().double().numpy() for k in ("R", "P"))
        cross_pairs = float(self.state["N"]) ** 2 - float(self.state["Q"])
        return (R * R - P) / cross_pairs
