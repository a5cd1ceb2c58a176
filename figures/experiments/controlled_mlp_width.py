"""Experiment (b): GPT-2-style models identical but for MLP width, at random init and after training.

The paper's controlled experiment (finding 2) at CPU scale: n_embd 128, 8 layers, 4 heads,
n_inner 16 / 64 / 256 / 1024 (the paper's n_inner / n_embd ratios 1/12 .. 16/3 become 1/8 .. 8),
a 4096-token byte-level BPE trained on the training documents only, and for each width and seed
the same pre-training run (same data order, seed, steps, learning rate). The probe (pooled
convention, all hidden-state entries including the embedding output, held-out documents) gives
the Spearman / Kendall trend of mean pairwise cosine against depth at step 0 (random init) and
after training. Run from the repository root:

    python figures/experiments/controlled_mlp_width.py [--steps 150] [--seeds 0 1] [--device cpu] [--tag ""]

Writes figures/experiments/controlled_mlp_width{tag}.{csv,json,png} and ..._layers.csv (run folders
go to results/experiments/controlled_mlp_width{tag}/) and prints its run time. ``--plot-only``
redraws the figure from those run folders and the CSV.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from condense.plotting.heatmap import draw_heatmap  # noqa: E402
from condense.training import finetune, load_finetune  # noqa: E402
from condense.training.data import split_corpus  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent.parent / "results" / "experiments"
WIDTHS = [16, 64, 256, 1024]
ARCH = {"n_embd": 128, "n_layer": 8, "n_head": 4}
VOCAB = 4096
TRAIN = {"corpus": "builtin", "heldout": 0.2, "init": "random", "lr": 1e-3, "batch_size": 8, "seq_len": 128,
         "probe_seqs": 16}
EOT = "<|endoftext|>"
PAPER_SPEARMAN = {64: 0.97, 256: 0.91, 1024: 0.69, 4096: 0.43}  # n_embd 768, trained


def build_tokenizer(folder: Path) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE trained on the training documents (the held-out ones stay unseen)."""
    split = split_corpus(TRAIN["corpus"], heldout=TRAIN["heldout"])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([d.text for d in split.train], trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOT, bos_token=EOT,
                                                     unk_token=EOT, pad_token=EOT)
    tokenizer.save_pretrained(folder)
    return tokenizer


def architecture(width: int, tokenizer, folder: Path) -> Path:
    """A checkpoint folder holding only the config and tokenizer (finetune draws the weights)."""
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=TRAIN["seq_len"], n_inner=width,
                                      bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      architectures=["GPT2LMHeadModel"], **ARCH)
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per model (probes every steps/3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tag", default="", help="suffix of the output names, e.g. _gpu")
    parser.add_argument("--plot-only", action="store_true", help="redraw from the saved runs")
    args = parser.parse_args()
    name = f"controlled_mlp_width{args.tag}"
    runs_dir = RUNS / name
    train = {**TRAIN, "steps": args.steps, "probe_every": -(-args.steps // 3)}
    if args.plot_only:
        runs = {(w, s): load_finetune(runs_dir / f"mlp{w}_seed{s}") for s in args.seeds for w in WIDTHS}
        draw(runs, pd.read_csv(HERE / f"{name}.csv"), args.seeds, args.steps, HERE / f"{name}.png")
        return
    started = time.perf_counter()
    shutil.rmtree(runs_dir, ignore_errors=True)
    tokenizer = build_tokenizer(runs_dir / "tokenizer")
    rows, layer_rows, runs, seconds = [], [], {}, {}
    for seed in args.seeds:
        for width in WIDTHS:
            arch = architecture(width, tokenizer, runs_dir / f"gpt2-mlp{width}")
            key = f"mlp{width}_seed{seed}"
            t0 = time.perf_counter()
            run = finetune(str(arch), runs_dir / key, seed=seed, device=args.device, quiet=True, **train)
            seconds[key] = round(time.perf_counter() - t0, 1)
            runs[width, seed] = run
            for stage, step in (("random init", 0), ("trained", args.steps)):
                res = run.results[step]
                rows.append({"n_inner": width, "seed": seed, "stage": stage, "step": step,
                             "parameters": run.manifest["info"]["parameters"], **{k: res.trend[k] for k in
                             ("spearman", "kendall", "last_half")},
                             "heldout_lm_loss": float(run.probes.set_index("step").loc[step, "heldout_lm_loss"])})
                layer_rows += [{"n_inner": width, "seed": seed, "stage": stage, "layer": int(r.layer),
                                "layer_fraction": r.layer_fraction, "mean_cos": r.mean_cos}
                               for r in res.layers.itertuples()]
            print(f"n_inner {width}, seed {seed}: {seconds[key]:.0f} s; "
                  + ", ".join(f"{r['stage']} rho {r['spearman']:+.2f}" for r in rows[-2:]))

    table = pd.DataFrame(rows).rename(columns={"last_half": "mean_cos_last_half"})
    table.to_csv(HERE / f"{name}.csv", index=False, float_format="%.6f")
    pd.DataFrame(layer_rows).to_csv(HERE / f"{name}_layers.csv", index=False, float_format="%.6f")
    means = table.groupby(["stage", "n_inner"])[["spearman", "kendall", "mean_cos_last_half", "heldout_lm_loss"]]
    summary = {stage: {int(w): v for w, v in group.droplevel(0).round(4).to_dict("index").items()}
               for stage, group in means.mean().groupby(level=0)}
    total = round(time.perf_counter() - started, 1)
    (HERE / f"{name}.json").write_text(json.dumps({
        "architecture": {**ARCH, "n_inner": WIDTHS, "vocab_size": len(tokenizer), "n_positions": TRAIN["seq_len"]},
        "training": train, "seeds": args.seeds, "device": args.device, "mean_over_seeds": summary,
        "paper_spearman_trained_n_embd_768": PAPER_SPEARMAN, "data": runs[WIDTHS[0], args.seeds[0]].manifest["data"],
        "run_seconds": seconds, "total_seconds": total,
        "versions": runs[WIDTHS[0], args.seeds[0]].manifest["versions"]}, indent=2) + "\n")
    draw(runs, table, args.seeds, args.steps, HERE / f"{name}.png")
    print(table.to_string(index=False, float_format="%.3f"))
    print(f"total run time: {total:.0f} s ({total / 60:.1f} min)")


def draw(runs, table: pd.DataFrame, seeds: list[int], steps: int, path: Path) -> None:
    """Heatmaps (rows: random init, trained; columns: widths; first seed) and the statistics vs width."""
    with plt.rc_context({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10}):
        fig = plt.figure(figsize=(2.4 * len(WIDTHS) + 5.2, 6.4), layout="constrained")
        left, right = fig.subfigures(1, 2, width_ratios=[2.4 * len(WIDTHS) + 0.8, 4.4], wspace=0.02)
        for row, (stage, step) in zip(left.subfigures(2, 1), (("random init (step 0)", 0),
                                                              (f"after {steps} training steps", steps))):
            axes = row.subplots(1, len(WIDTHS), sharey=True)
            for ax, width in zip(axes, WIDTHS):
                run = runs[width, seeds[0]]
                res = run.results[step]
                mesh = draw_heatmap(res, ax, ylim=(-0.25, 1.0), title=(
                    f"n_inner {width} ({run.manifest['info']['parameters'] / 1e6:.2f} M)\n"
                    f"Spearman {res.trend['spearman']:+.2f}"))
                if ax is not axes[0]:
                    ax.set_ylabel("")
            row.colorbar(mesh, ax=list(axes), label="density", fraction=0.04, pad=0.02)
            row.suptitle(f"{stage}, seed {seeds[0]}", x=0.01, ha="left", fontsize=11, fontweight="bold")
        rho_ax, cos_ax = right.subplots(2, 1, sharex=True)
        x = np.log2(WIDTHS)
        # Random init drawn last, hollow and dashed: it often sits exactly on the trained line.
        for stage, colour, style in (("trained", "#c0392b", {"ls": "-", "mfc": "#c0392b"}),
                                     ("random init", "#7f8c8d", {"ls": "--", "mfc": "white"})):
            part = table[table.stage == stage]
            for ax, column in ((rho_ax, "spearman"), (cos_ax, "mean_cos_last_half")):
                ax.scatter(np.log2(part.n_inner), part[column], color=colour, s=14, alpha=0.5)
                mean = part.groupby("n_inner")[column].mean()
                ax.plot(np.log2(mean.index), mean.values, color=colour, marker="o", lw=1.8, ms=6,
                        label=f"{stage} (mean of {len(seeds)} seeds)", **style)
        rho_ax.plot(x, [PAPER_SPEARMAN[w * 4] for w in WIDTHS], color="#1f4e99", ls="--", marker="s", ms=4,
                    label="paper, trained (n_inner x4, n_embd 768)")
        rho_ax.set(ylabel="Spearman ρ (mean cos vs layer)", ylim=(-1.05, 1.1), title="depth trend of condensation")
        rho_ax.axhline(0, color="black", lw=0.6)
        cos_ax.set(xlabel=f"MLP width n_inner (n_embd {ARCH['n_embd']})", ylabel="mean cosine",
                   ylim=(0, None), title="mean cosine, last half of layers")
        cos_ax.set_xticks(x, [str(w) for w in WIDTHS])
        for ax in (rho_ax, cos_ax):
            ax.grid(alpha=0.3)
        rho_ax.legend(fontsize=8, loc="lower left")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
