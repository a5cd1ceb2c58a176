"""Training with the dispersion loss: ``condense finetune`` and its Python form.

- :func:`finetune`: fine-tune or pre-train a causal LM on a corpus, with an optional dispersion
  loss, probing condensation on held-out text every few steps; writes one output folder.
- :func:`load_finetune` / :class:`FinetuneRun`: read such a folder back.
- :class:`FinetuneSettings`: the settings, their defaults and validation.
"""

from condense.training.finetune import finetune, heldout_lm_loss
from condense.training.run import FinetuneRun, load_finetune
from condense.training.settings import DISPERSIONS, FinetuneSettings

__all__ = ["finetune", "heldout_lm_loss", "load_finetune", "FinetuneRun", "FinetuneSettings", "DISPERSIONS"]
