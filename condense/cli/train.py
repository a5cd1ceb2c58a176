"""``condense finetune``: train a causal LM with an optional dispersion loss, probing as it goes."""

from __future__ import annotations

from pathlib import Path

import click

from condense.cli.app import cli, heavy_imports
from condense.training.settings import DEFAULT_CHECKPOINT_SECONDS, DISPERSIONS, WHERE_HELP


@cli.command()
@click.argument("model")
@click.option("--corpus", default="builtin", show_default=True,
              help="builtin | FILE.txt | FILE.jsonl | FOLDER of .txt | wikipedia | pubmed | imdb | squad")
@click.option("--text-field", default="text", show_default=True, help="JSONL field holding the text.")
@click.option("--heldout", type=float, default=0.1, show_default=True,
              help="Fraction of the documents (the last ones) held out for the probes and the held-out loss.")
@click.option("--init", type=click.Choice(["pretrained", "random"]), default="pretrained", show_default=True,
              help="random: pre-train the architecture from weights seeded by --seed.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of a hub model.")
@click.option("--dispersion", type=click.Choice(DISPERSIONS), default="none", show_default=True,
              help="Dispersion loss added to the LM loss.")
@click.option("--coeff", type=float, default=0.1, show_default=True, help="Weight of the dispersion loss.")
@click.option("--where", default="all", show_default=True, help=f"Blocks the dispersion loss reads: {WHERE_HELP}.")
@click.option("--steps", type=int, default=100, show_default=True, help="Optimizer steps.")
@click.option("--lr", type=float, default=None,
              help="Peak AdamW learning rate (default 5e-5 pretrained, 5e-4 random); 10% linear warm-up.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Sequences per step.")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Tokens per sequence (training and probes).")
@click.option("--seed", type=int, default=0, show_default=True, help="Weights (random init), data order, dropout.")
@click.option("--probe-every", type=int, default=None, help="Probe every N steps (default: a quarter of --steps).")
@click.option("--probe-seqs", type=int, default=16, show_default=True, help="Held-out sequences per probe.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default results/finetune/<model>__<corpus>__<dispersion>).")
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="A previous finetune folder, drawn beside this run in compare.png.")
@click.option("--report-to", default="none", show_default=True,
              help="none | tensorboard (event files in OUT/tensorboard) | another transformers integration "
                   "(wandb, mlflow, ...); several separated by commas.")
@click.option("--checkpoint-every", type=float, default=DEFAULT_CHECKPOINT_SECONDS, show_default=True,
              help="Seconds between checkpoints in .<OUT>.resume/ beside --out (0: only on Ctrl-C/SIGTERM).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint (.<OUT>.resume/).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps")
@click.option("--trust-remote-code", is_flag=True, help="Allow the checkpoint's own modelling code.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def finetune(model: str, out: Path | None, baseline: Path | None, report_to: str, checkpoint_every: float,
             resume: bool, device: str, trust_remote_code: bool, quiet: bool, **settings) -> None:
    """Fine-tune MODEL (or pre-train it with --init random) and probe condensation on held-out text."""
    with heavy_imports():
        from condense.api import default_run_folder
        from condense.training import finetune as run_finetune

    if out is None:
        folder = default_run_folder(model, settings["corpus"], settings["init"], root="results/finetune")
        out = folder.with_name(f"{folder.name}__{settings['dispersion']}")
    run = run_finetune(model, out, baseline=baseline, device=device, trust_remote_code=trust_remote_code,
                       quiet=quiet, report_to=report_to, checkpoint_every=checkpoint_every, resume=resume,
                       **settings)
    click.echo(run.probes.to_string(index=False, float_format="%.4f"))
    extra = (", compare.png" if baseline is not None else "") + (", tensorboard/" if (out / "tensorboard").exists() else "")
    click.echo(f"wrote {out}/ (checkpoint/, loss_log.csv, probes/, probes.csv, steps.png{extra}, finetune.json)")
