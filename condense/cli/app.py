"""The ``condense`` group, options shared by commands, and the error boundary of ``main``."""

from __future__ import annotations

import gc
import sys
import warnings
from contextlib import AbstractContextManager

import click

from condense.collector import collector_paused, frozen_for_exit
from condense.errors import CondenseError, CondenseWarning
from condense.probing.layers import LAYER_SPEC_HELP
from condense.results.atomic import storage_error

__all__ = ["main", "cli", "probe_options", "heavy_imports"]

_python_show_warning = warnings.showwarning
_OWNS_PROCESS = "owns_process"  # set by main(): a CliRunner in someone else's process does not own it


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="condense")
def cli() -> None:
    """Measure embedding condensation: how token vectors crowd into a cone, layer by layer."""


class IntOrAuto(click.ParamType):
    """An integer or ``auto`` (the setting's validation checks the range)."""

    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not an integer or auto", param, ctx)


def probe_options(f):
    """Options shared by every command that may run a probe."""
    options = [
        click.option("--layers", default="all", show_default=True, help=LAYER_SPEC_HELP),
        click.option("--corpus", default="builtin", show_default=True,
                     help="builtin | FILE.txt | FILE.jsonl | FOLDER of .txt | wikipedia | pubmed | imdb | squad"),
        click.option("--text-field", default="text", show_default=True, help="JSONL field holding the text."),
        click.option("--num-seqs", type=int, default=100, show_default=True, help="Sequences to probe."),
        click.option("--max-length", type=int, default=512, show_default=True, help="Tokens per sequence."),
        click.option("--batch-size", type=IntOrAuto(), default="auto", show_default=True,
                     help="Sequences per forward pass, or auto (CPU: ~512 tokens a batch; accelerators: 64, "
                          "halved on out-of-memory)."),
        click.option("--shuffle/--no-shuffle", default=False, help="Random document order (by --seed)."),
        click.option("--sampler", type=click.Choice(["sequential", "paper"]), default="sequential", show_default=True,
                     help="sequential: the corpus's first texts, short documents joined; paper: the authors' random "
                          "stretches (text r starts at a row drawn with seed r, rows joined to 1024 words)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Shuffle, bootstrap and baseline seed."),
        click.option("--aggregate", type=click.Choice(["pooled", "paper"]), default="pooled", show_default=True,
                     help="pooled: every within-sequence pair; paper: the authors' averaged S x S matrix."),
        click.option("--paper-ragged", is_flag=True, help="Paper mode: allow unequal lengths (average the pairs present)."),
        click.option("--keep-special-tokens", is_flag=True, help="Count BOS/CLS/SEP... tokens (paper mode always does)."),
        click.option("--exclude-first-token", is_flag=True, help="Drop position 0 (BOS / attention sink)."),
        click.option("--center", type=click.Choice(["none", "sequence", "corpus"]), default="none", show_default=True,
                     help="Subtract the sequence's or the corpus's mean token first."),
        click.option("--spectrum-seqs", type=int, default=8, show_default=True,
                     help="Sequences used for MEV/entropy/effective rank/HF-LF (0 = skip)."),
        click.option("--bootstrap", type=int, default=0, show_default=True,
                     help="Bootstrap resamples over sequences for CIs (0 = none)."),
        click.option("--corpus-sample", type=IntOrAuto(), default="auto", show_default=True,
                     help="Tokens in the seeded sample shared by all layers, for IsoScore, TwoNN, centred MEV and "
                          "the cross-text cosine histogram (auto: a 256 MB budget, at most 1024; 0 = off)."),
        click.option("--nonfinite", type=click.Choice(["error", "exclude"]), default="error", show_default=True,
                     help="NaN/inf hidden states: stop with a message, or drop those tokens."),
        click.option("--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
                     help="dtype of the geometry (never the model's half precision)."),
        click.option("--revision", default=None, help="Hub revision (branch, tag or commit)."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                     show_default=True, help="Model weights dtype (auto: float32 on CPU, checkpoint's elsewhere)."),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps"),
        click.option("--trust-remote-code", is_flag=True, help="Allow the checkpoint's own modelling code."),
        click.option("--device-map", default=None,
                     help="auto: spread a model too large for one device with accelerate (geometry stays float32)."),
        click.option("--max-memory", default=None, help="With --device-map: per-device budget, e.g. 0=20GiB,cpu=60GiB."),
        click.option("--offload-folder", default=None, help="With --device-map: folder for weights offloaded to disk."),
        click.option("--init", type=click.Choice(["pretrained", "random"]), default="pretrained", show_default=True,
                     help="random: the architecture with fresh seeded weights (configs ship for gpt2*, qwen3-*)."),
        click.option("--init-seed", type=int, default=0, show_default=True, help="Seed of random weights."),
        click.option("--resume", is_flag=True,
                     help="Continue an interrupted run from its checkpoint (.<out>.resume.pt beside --out)."),
        click.option("--checkpoint-every", type=click.FloatRange(min=0), default=300, show_default=True,
                     help="Seconds between checkpoints of a running probe (0: only when interrupted)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def heavy_imports() -> AbstractContextManager[None]:
    """Wrap a command's imports of the model and plotting libraries: the collector waits until they
    are done, and when ``main`` runs the process, what they made is frozen out of later collections."""
    ctx = click.get_current_context(silent=True)
    owns_process = bool(ctx and isinstance(ctx.obj, dict) and ctx.obj.get(_OWNS_PROCESS))
    # once per process: a later command run by the same process (tests' driver) would freeze the
    # garbage of the one before
    return collector_paused(freeze=owns_process and gc.get_freeze_count() == 0)


def main() -> None:
    """Entry point: turn user errors into one line on stderr and exit code 2.

    CondenseError (bad input, and StorageError: full disk, quota, read-only file system) and
    click's usage errors exit 2; an interrupt exits 130; a storage OSError raised by any other
    writer is reported like StorageError. Anything else is a bug and keeps its traceback. However
    it ends, what the command made is frozen for the exit (:func:`condense.collector.frozen_for_exit`).
    """
    from condense.cli import commands  # noqa: F401  (registers the subcommands)

    warnings.showwarning = _show_warning
    with frozen_for_exit():
        _run()


def _run() -> None:
    try:
        cli.main(standalone_mode=False, obj={_OWNS_PROCESS: True})
    except CondenseError as err:
        _fail(str(err), getattr(err, "exit_code", 2))
    except click.UsageError as err:
        hint = f" (see `{err.ctx.command_path} --help`)" if err.ctx else ""
        _fail(err.format_message().replace("\n", " ") + hint)
    except click.Abort:
        _fail("interrupted", code=130)
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except Exception as err:
        # a writer outside the atomic helpers hit a full disk, quota or read-only file system
        problem = storage_error(err)
        if problem is None:
            raise
        _fail(str(problem))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """condense's own warnings as one line on stderr; others as Python shows them."""
    if issubclass(category, CondenseWarning):
        click.echo(f"condense: warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"condense: error: {message}", err=True)
    sys.exit(code)
