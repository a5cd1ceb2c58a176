"""ProbeResult: the per-layer table, the cosine histograms, the trend, and the run's manifest."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from condense.errors import CondenseError
from condense.results.atomic import atomic_folder

__all__ = ["ProbeResult", "load", "RESULT_FORMAT", "HIST_EDGES"]

RESULT_FORMAT = 1
HIST_EDGES = np.linspace(-1.0, 1.0, 129)
_FILES = ("layers.csv", "histograms.npz", "run.json")


@dataclass
class ProbeResult:
    """One probe run.

    layers: one row per selected hidden-state entry (columns: docs/concepts/metrics.md).
    histograms: [n_layers, 128] density of pairwise cosine similarity on [-1, 1] (HIST_EDGES).
    cross_histograms: [n_layers, 128] density of the cosine of sampled token pairs from different
    texts on the same bins (None when the run's ``corpus_sample`` was 0, or for older runs).
    trend: Spearman/Kendall of mean_cos vs layer, means over the last N layers, bootstrap CIs.
    run: the manifest written as run.json (model, settings, counts, token hash, versions).
    """

    layers: pd.DataFrame
    histograms: np.ndarray
    trend: dict[str, Any]
    run: dict[str, Any]
    label: str | None = None
    cross_histograms: np.ndarray | None = None

    @property
    def name(self) -> str:
        """The label of this run in figures.

        ``label`` when set (a user's override, shown verbatim; never saved); else run.json's
        ``label`` (the alias, the checkpoint's own name, or the hub id's last part; older runs:
        the model argument's last path part), plus the GGUF quantisation in brackets (4-bit
        weights are not the original weights) and ' (random init)' where they apply.
        """
        if self.label:
            return self.label
        name = str(self.run.get("label") or str(self.run.get("model", "model")).rstrip("/").split("/")[-1])
        if self.run.get("quantization") and self.run.get("init") != "random":
            name += f" [{self.run['quantization']}]"
        return name + (" (random init)" if self.run.get("init") == "random" else "")

    @property
    def bin_edges(self) -> np.ndarray:
        return HIST_EDGES

    def save(self, folder: str | Path, heatmap: bool = True) -> Path:
        """Write layers.csv, histograms.npz, run.json (and heatmap.png) atomically into ``folder``.

        The files go to a hidden temporary folder beside ``folder``, renamed into place when
        complete. A full disk, quota or read-only file system raises one-line
        :class:`~condense.results.atomic.StorageError` naming ``folder``; nothing is left behind.
        """
        with atomic_folder(Path(folder)) as tmp:
            self.layers.to_csv(tmp / "layers.csv", index=False, float_format="%.10g")
            extra = {} if self.cross_histograms is None else {"cross_density": self.cross_histograms}
            np.savez(tmp / "histograms.npz", bin_edges=HIST_EDGES, density=self.histograms,
                     layers=self.layers["layer"].to_numpy(), **extra)
            (tmp / "run.json").write_text(json.dumps(_jsonable(self.run), indent=2, sort_keys=False) + "\n")
            if heatmap:
                import matplotlib.pyplot as plt

                fig = self.plot()
                try:
                    fig.savefig(tmp / "heatmap.png", dpi=150, bbox_inches="tight")
                finally:
                    plt.close(fig)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "ProbeResult":
        """Read a run folder written by :meth:`save`; CondenseError if it is not one."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CondenseError(f"{str(folder)!r} is not a folder; give a run folder written by `condense probe`")
        missing = [f for f in _FILES if not (folder / f).exists()]
        if missing:
            raise CondenseError(f"{str(folder)!r} is not a condense run folder (missing {', '.join(missing)})")
        try:
            run = json.loads((folder / "run.json").read_text())
        except (ValueError, OSError) as err:
            raise CondenseError(f"run folder {str(folder)!r} has a corrupt run.json ({type(err).__name__})") from None
        if not isinstance(run, dict) or run.get("format") != RESULT_FORMAT:
            found = run.get("format") if isinstance(run, dict) else None
            raise CondenseError(
                f"run folder {str(folder)!r} has result format {found!r}; this condense reads "
                f"format {RESULT_FORMAT}: re-run the probe (condense rerun)"
            )
        try:
            layers = pd.read_csv(folder / "layers.csv", keep_default_na=False, na_values=["", "nan", "NaN"])
            with np.load(folder / "histograms.npz") as npz:
                density = npz["density"]
                cross = npz["cross_density"] if "cross_density" in npz.files else None
        except (ValueError, OSError, KeyError) as err:
            raise CondenseError(f"run folder {str(folder)!r} has a corrupt file ({type(err).__name__}: {_short(err)})") from None
        shape = (len(layers), len(HIST_EDGES) - 1)
        if density.shape != shape or "mean_cos" not in layers or (cross is not None and cross.shape != shape):
            raise CondenseError(f"run folder {str(folder)!r} is inconsistent (histograms do not match layers.csv)")
        if "massive_positions" in layers:
            positions = layers["massive_positions"].astype(object)
            layers["massive_positions"] = positions.where(positions.notna(), "").astype(str)
        trend = {k: (math.nan if v is None else v) for k, v in run.get("trend", {}).items()}
        return cls(layers, density, trend, run, cross_histograms=cross)

    def plot(self, **kwargs: Any):
        """The paper-style heatmap (x layer fraction, y cosine similarity, colour density)."""
        from condense.plotting import heatmap_figure

        return heatmap_figure(self, **kwargs)

    def summary(self) -> str:
        """The table's key columns and the trend, as text (what `condense show` prints)."""
        cols = ["layer", "layer_fraction", "mean_cos", "cross_mean_cos", "std_cos", "q50_cos",
                "cone_half_angle_mean_deg", "mean_pair_angle_deg", "n_tokens"]
        table = self.layers[[c for c in cols if c in self.layers]].to_string(index=False, float_format="%.4f")
        t = self.trend
        lines = [
            f"{self.run.get('model')}  ({self.run.get('settings', {}).get('aggregate', 'pooled')} aggregation, "
            f"{self.run.get('counts', {}).get('sequences')} sequences, {self.run.get('counts', {}).get('tokens')} tokens)",
            table,
            f"trend of mean_cos vs layer: Spearman {_fmt(t.get('spearman'))}, Kendall tau-b {_fmt(t.get('kendall'))}",
            "mean over last N layers: " + ", ".join(
                f"{k[4:] or k}={_fmt(v)}" for k, v in t.items() if k.startswith("last")
            ),
        ]
        corpus = self._corpus_table()
        if corpus:
            lines += corpus
        if "spearman_ci_low" in t:
            lines.append(f"bootstrap 95% CI: Spearman [{_fmt(t['spearman_ci_low'])}, {_fmt(t['spearman_ci_high'])}], "
                         f"Kendall [{_fmt(t['kendall_ci_low'])}, {_fmt(t['kendall_ci_high'])}]")
        return "\n".join(lines)


    def _corpus_table(self) -> list[str]:
        """Lines of the corpus-level columns (tokens of different texts) beside their isotropic baselines."""
        if "cross_mean_cos" not in self.layers:
            return []
        t = self.layers
        shown = {"layer": t["layer"], "cross_mean_cos": t["cross_mean_cos"],
                 "iso_sd": t["gauss_cross_mean_cos_sd"], "text_weighted": t["cross_mean_cos_text_weighted"],
                 "resultant": t["corpus_resultant_length"], "iso_resultant": t["gauss_corpus_resultant_length"],
                 "rogue_dim": t["rogue_dim_1"].map(lambda v: "" if v != v else str(int(v))),
                 "rogue_share": t["rogue_share_1"]}
        for key, base in (("isoscore", "gauss_isoscore"), ("twonn_id", "gauss_twonn_id"), ("mev_centred", "gauss_mev_centred"),
                          ("sample_cross_mean_cos", None)):
            if key in t:
                shown[key] = t[key]
                if base and base in t:
                    shown[f"iso_{key}"] = t[base]
        sample = self.run.get("corpus_sample") or {}
        about = (f"token sample: {sample.get('tokens')} tokens (K = {sample['k']}) from {sample.get('texts')} texts"
                 if sample.get("k") else "token sample: off (--corpus-sample 0)")
        return ["corpus level, tokens of different texts (iso_: isotropic Gaussian baseline; " + about + ")",
                pd.DataFrame(shown).to_string(index=False, float_format="%.4f")]


def load(folder: str | Path) -> ProbeResult:
    """Read a run folder back (``condense.load(DIR)``)."""
    return ProbeResult.load(folder)


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__


def _fmt(v: Any) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
