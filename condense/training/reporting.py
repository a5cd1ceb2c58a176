"""Report scalars from a hand-written training loop through transformers' reporting integrations.

``Trainer(report_to=...)`` sends its logs to TensorBoard, W&B, MLflow, ... through integration
callbacks driven by ``on_train_begin`` / ``on_log`` / ``on_train_end``. :class:`TrainingReporter`
drives the same callbacks from a loop without a Trainer (``condense finetune`` uses it), so the
tags, folders and backends are those a Trainer run would have: keys starting ``eval_`` appear
under ``eval/``, all others under ``train/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from condense.errors import CondenseError
from condense.models import first_line

__all__ = ["TrainingReporter", "report_to_names"]


def report_to_names(report_to: str | list[str] | None) -> list[str]:
    """``report_to`` as a list of integration names (``none``, empty or None: no reporting).

    A string may hold several names separated by commas. CondenseError for a name transformers
    does not know, listing those it does.
    """
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    if report_to is None:
        return []
    names = [n.strip() for n in (report_to.split(",") if isinstance(report_to, str) else report_to) if n.strip()]
    names = [n for n in names if n != "none"]
    unknown = [n for n in names if n not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise CondenseError(f"bad --report-to {unknown[0]!r}: use none or {', '.join(INTEGRATION_TO_CALLBACK)}")
    return names


class TrainingReporter:
    """Send ``{key: number}`` logs to the integrations named by ``report_to``, step by step.

    ``logging_dir``: where TensorBoard writes its event files (also the ``output_dir`` the other
    integrations see). ``purge_step``: when resuming, TensorBoard hides events at this step and
    later that an interrupted run already wrote, so each step appears once. ``model`` and
    ``tokenizer`` are what the integrations receive (TensorBoard records the model's config).
    CondenseError when an integration is not installed.
    """

    def __init__(self, report_to: str | list[str] | None, logging_dir: str | Path, model: Any = None,
                 tokenizer: Any = None, purge_step: int | None = None) -> None:
        from transformers import TrainerControl, TrainerState, TrainingArguments
        from transformers.integrations import INTEGRATION_TO_CALLBACK, TensorBoardCallback

        self.names = report_to_names(report_to)
        self.logging_dir = Path(logging_dir)
        self.callbacks: list[Any] = []
        try:
            for name in self.names:
                if name == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter

                    writer = SummaryWriter(log_dir=str(self.logging_dir), purge_step=purge_step)
                    self.callbacks.append(TensorBoardCallback(tb_writer=writer))
                else:
                    self.callbacks.append(INTEGRATION_TO_CALLBACK[name]())
        except (ImportError, RuntimeError) as err:
            raise CondenseError(f"--report-to {name} is not available here ({first_line(err)}); "
                                f"pip install {name}, or use --report-to none") from None
        self.args = TrainingArguments(output_dir=str(self.logging_dir), report_to=self.names,
                                      logging_steps=1) if self.callbacks else None
        self.state = TrainerState()
        self.control = TrainerControl()
        self._objects = {"model": model, "processing_class": tokenizer}
        self._event("on_train_begin")

    def _event(self, event: str, **kwargs: Any) -> None:
        # what the Trainer's callback handler does for each event
        for callback in self.callbacks:
            getattr(callback, event)(self.args, self.state, self.control, **self._objects, **kwargs)

    def log(self, logs: dict[str, float], step: int) -> None:
        """Report ``logs`` as the values at optimizer step ``step``."""
        self.state.global_step = step
        self._event("on_log", logs=dict(logs))

    def close(self) -> None:
        """Flush and close every integration (``on_train_end``); later logs go nowhere."""
        self._event("on_train_end")
        self.callbacks.clear()
