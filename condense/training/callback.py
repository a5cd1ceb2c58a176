"""``CondensationCallback``: condensation curves in the dashboards of a ``transformers.Trainer`` run.

The callback probes held-out texts (a :class:`CondensationMonitor`) at the start of training,
every ``every`` optimizer steps (and at the last step), and/or after each evaluation, and hands
the scalars to ``Trainer.log``. That is the one door to the Trainer's reporting: ``log`` adds
the epoch, appends to ``state.log_history`` and calls ``on_log`` of every callback, among them
the integrations that ``report_to`` named (TensorBoard, W&B, MLflow, ...), exactly as for the
Trainer's own losses. A callback is not handed the trainer by the events, so it is bound once
with :meth:`CondensationCallback.attach`, which also adds it to the trainer.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from condense.errors import CondenseError
from condense.training.monitor import CondensationMonitor

__all__ = ["CondensationCallback"]


class CondensationCallback(TrainerCallback):
    """Probe ``texts`` while a Trainer trains, and log the results through the Trainer.

    ``every``: probe every N optimizer steps and at the last step (None: not by steps; 0 or a
    negative number is an error). ``at_start``: probe before the first step. ``at_evaluate``:
    probe after every evaluation (at most once per step). ``prefix``: put before each key of
    :func:`condensation_scalars`; the default ``eval_`` makes the Trainer's integrations file
    them with the evaluation metrics (TensorBoard tag ``eval/condense/mean_cos/layer_03``).
    Other keyword arguments go to :class:`CondensationMonitor` (``tokenizer``, ``layers``,
    ``max_length``, ``num_seqs``, ``batch_size``, ``save_dir``, ``per_layer``, ``lm_loss``, ...);
    the tokenizer defaults to the Trainer's ``processing_class``. With ``save_dir`` each probe is
    a run folder there and ``steps.png`` is drawn when training ends.

    Between probes the callback does nothing but compare the step number. Each probe runs the
    model in eval mode with forked random generators, so training continues exactly as without
    it. In distributed training every process probes (sharded models need all of them for a
    forward pass); the integrations log on the main process only, and only it saves folders.

    >>> callback = CondensationCallback(heldout_texts, every=100, max_length=128).attach(trainer)
    >>> trainer.train(); callback.history.probes
    """

    def __init__(self, texts: Any, *, every: int | None = None, at_start: bool = True, at_evaluate: bool = False,
                 prefix: str = "eval_", **monitor_options: Any) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise CondenseError(f"bad every={every!r}: probe every N >= 1 optimizer steps, or None for no step schedule")
        if every is None and not at_start and not at_evaluate:
            raise CondenseError("the callback would never probe: set every=N, at_start=True or at_evaluate=True")
        self.every = every
        self.at_start = at_start
        self.at_evaluate = at_evaluate
        self.prefix = prefix
        self.monitor = CondensationMonitor(texts, **monitor_options)
        self._trainer = None
        self._probed: set[int] = set()

    @property
    def history(self):
        """The :class:`ProbeHistory` so far (probes table and ProbeResults by step)."""
        return self.monitor.history

    def attach(self, trainer) -> "CondensationCallback":
        """Bind to ``trainer`` (whose ``log`` reaches its integrations) and add to its callbacks."""
        self._trainer = trainer
        trainer.add_callback(self)
        return self

    def on_train_begin(self, args, state, control, **kwargs):
        """Check the binding; probe the starting point (``at_start``)."""
        if self._trainer is None:
            raise CondenseError("CondensationCallback needs the trainer to log through: use "
                                "CondensationCallback(...).attach(trainer) instead of callbacks=[...]")
        if self.at_start:
            self._probe(state, kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        """Probe every ``every`` optimizer steps and at the last one."""
        step = state.global_step
        if self.every is not None and (step % self.every == 0 or step == state.max_steps):
            self._probe(state, kwargs)

    def on_evaluate(self, args, state, control, **kwargs):
        """Probe after an evaluation (``at_evaluate``), unless this step was probed already."""
        if self.at_evaluate:
            self._probe(state, kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        """Draw ``save_dir/steps.png`` (main process)."""
        if state.is_world_process_zero:
            self.monitor.finish()

    def _probe(self, state, kwargs: dict[str, Any]) -> None:
        step = state.global_step
        if step in self._probed:
            return
        self._probed.add(step)
        processing = kwargs.get("processing_class")  # a tokenizer, or a processor holding one
        tokenizer = self.monitor.tokenizer if self.monitor.tokenizer is not None else getattr(
            processing, "tokenizer", processing)
        scalars = self.monitor(kwargs["model"], step, tokenizer=tokenizer, save=state.is_world_process_zero)
        # Trainer.log clears control.should_log, which would swallow the loss log due at this step
        pending = self._trainer.control.should_log
        self._trainer.log({f"{self.prefix}{key}": value for key, value in scalars.items()})
        self._trainer.control.should_log = pending
