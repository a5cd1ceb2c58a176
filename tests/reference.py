"""Independent float64 numpy references for probe-level tests.

Hidden states come from ``transformers`` directly (``output_hidden_states``), one unpadded
sequence at a time, so no code of the probe (batching, masks, hooks, accumulators) is involved.
The statistics are written out in numpy from the definitions in the README and PAPER.md.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

from condense.probing.corpus import build_sequences, read_documents

__all__ = ["SequenceStates", "hidden_states", "pooled_pairs", "paper_average", "unit", "cone_angles_deg",
           "cross_text_reference"]


class SequenceStates:
    """One sequence: ``layers[i]`` is its [S, D] float64 hidden state at entry i; ``special`` [S] bool."""

    def __init__(self, layers: list[np.ndarray], special: np.ndarray) -> None:
        self.layers = layers
        self.special = special


def hidden_states(folder, corpus: str, max_length: int, num_seqs: int) -> list[SequenceStates]:
    """Every hidden-state entry of every sequence the probe would build from ``corpus``."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    out = []
    for s in build_sequences(read_documents(corpus), tok, max_length, num_seqs):
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([s.input_ids]), output_hidden_states=True).hidden_states
        out.append(SequenceStates([h[0].double().numpy() for h in hs], np.array(s.special)))
    return out


def unit(x: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """Rows divided by max(norm, floor)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), floor)


def pooled_pairs(xs: list[np.ndarray]) -> np.ndarray:
    """Cosine of every unordered pair i < j within each [S, D] matrix, concatenated."""
    out = []
    for x in xs:
        c = np.clip(unit(x) @ unit(x).T, -1, 1)
        out.append(c[np.triu_indices(len(x), 1)])
    return np.concatenate(out)


def paper_average(xs: list[np.ndarray], floor: float = 1e-3) -> np.ndarray:
    """The paper's convention: per text the S_k x S_k cosine matrix (norms floored, clipped, diagonal
    kept), each entry (i, j) averaged over the texts that have it. NaN where no text has it."""
    size = max(len(x) for x in xs)
    total, count = np.zeros((size, size)), np.zeros((size, size))
    for x in xs:
        n = len(x)
        total[:n, :n] += np.clip(unit(x, floor) @ unit(x, floor).T, -1, 1)
        count[:n, :n] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)


def cone_angles_deg(x: np.ndarray) -> np.ndarray:
    """Angle of each row to the normalised mean of the unit rows, degrees."""
    u = unit(x)
    axis = u.mean(axis=0)
    axis /= np.linalg.norm(axis)
    return np.degrees(np.arccos(np.clip(u @ axis, -1, 1)))


def cross_text_reference(xs: list[np.ndarray], floor: float = 1e-8) -> dict:
    """The exact cross-text columns by their definitions, from every text's counted rows [n_s, D].

    All tokens' unit vectors U (norms floored at ``floor``) and the indicator W of ordered pairs from
    different texts: cross_mean_cos is the mean of (U U^T) over W, dimension d's contribution the mean
    of u_id u_jd over W; the text-weighted mean averages the cosine of every token pair over the texts'
    pair counts, i.e. the mean over ordered text pairs s != t of the mean cosine between s and t.
    """
    us = [unit(x, floor) for x in xs if len(x)]
    everything = np.concatenate(us)
    owner = np.concatenate([np.full(len(u), s) for s, u in enumerate(us)])
    cross = owner[:, None] != owner[None, :]
    cos = everything @ everything.T
    contribution = np.einsum("id,ij,jd->d", everything, cross.astype(float), everything) / cross.sum()
    between = [(us[s] @ us[t].T).mean() for s in range(len(us)) for t in range(len(us)) if s != t]
    return {"cross_mean_cos": cos[cross].mean(), "cross_n_pairs": cross.sum() / 2,
            "cross_mean_cos_text_weighted": float(np.mean(between)) if between else np.nan,
            "corpus_resultant_length": np.linalg.norm(everything.sum(axis=0)) / len(everything),
            "contribution": contribution}
