"""Tests of condense.dispersion hooks and DispersionTrainer on a tiny random GPT-2."""

from __future__ import annotations

import pytest
import torch

from condense.dispersion import DispersionLoss, attach_dispersion, select_blocks

transformers = pytest.importorskip("transformers")

N_LAYER = 4


def tiny_gpt2(n_layer=N_LAYER, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=n_layer, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def batch():
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    return ids, mask


@pytest.mark.parametrize(
    ("where", "indices"),
    [
        ("all", [0, 1, 2, 3]),
        ("last", [3]),
        ("early_half", [0, 1]),
        ("late_half", [2, 3]),
        ([1], [1]),
        ([0, -1], [0, 3]),
    ],
)
def test_where_hooks_the_right_blocks(where, indices, batch):
    ids, mask = batch
    model = tiny_gpt2()
    model.train()
    loss_fn = DispersionLoss(max_tokens=None)
    with attach_dispersion(model, where, loss_fn) as hook:
        assert hook.indices == indices
        model(ids, attention_mask=mask)
        assert hook.num_collected == len(indices)
        loss = hook.loss(mask)
    loss.backward()
    blocks = model.transformer.h
    for i, block in enumerate(blocks):
        has_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
        # a block's output depends on that block and the earlier ones only
        assert has_grad == (i <= max(indices)), i
    assert model.transformer.wte.weight.grad.abs().sum() > 0
    # the value is the loss of those blocks' outputs, read independently via hidden_states
    # (entry i + 1 is block i's output; the last entry has ln_f applied, so compare others)
    if max(indices) < N_LAYER - 1:
        with torch.no_grad():
            states = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        want = loss_fn([states[i + 1] for i in indices], mask)
        torch.testing.assert_close(loss.detach(), want)


def test_select_blocks_rounds_halves_and_validates():
    assert select_blocks(5, "early_half") == [0, 1]
    assert select_blocks(5, "late_half") == [2, 3, 4]
    for bad in ("first", [4], [-5], [0, 0], [], [1.0], [True]):
        with pytest.raises(ValueError):
            select_blocks(4, bad)
    with pytest.raises(ValueError):
        select_blocks(1, "early_half")


def test_model_without_blocks_raises_naming_the_class():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = transformers.GPT2Config(n_layer=3)
            self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 2)

    with pytest.raises(ValueError, match="Tiny"):
        attach_dispersion(Tiny())
    with pytest.raises(ValueError, match="Linear"):
        attach_dispersion(torch.nn.Linear(2, 2))


def test_inactive_in_eval_unless_asked(batch):
    ids, mask = batch
    model = tiny_gpt2().eval()
    with attach_dispersion(model) as hook:
        model(ids)
        assert hook.num_collected == 0
        with pytest.raises(RuntimeError):
            hook.loss()
    with attach_dispersion(model, only_in_training=False) as hook:
        with torch.no_grad():
            model(ids)
        assert hook.num_collected == N_LAYER
        assert torch.isfinite(hook.loss(mask))


def test_loss_uses_latest_forward_and_clears(batch):
    ids, mask = batch
    model = tiny_gpt2().train()
    other = torch.randint(0, 100, ids.shape, generator=torch.Generator().manual_seed(9))
    loss_fn = DispersionLoss(max_tokens=None)
    with attach_dispersion(model, "early_half", loss_fn) as hook:
        model(other)
        model(ids, attention_mask=mask)
        assert hook.num_collected == 2
        latest = hook.loss(mask)
        assert hook.num_collected == 0
        with pytest.raises(RuntimeError):
            hook.loss(mask)
        model(ids, attention_mask=mask)
        torch.testing.assert_close(hook.loss(mask), latest)


def test_remove_and_context_exit_remove_every_hook(batch):
    ids, _ = batch
    model = tiny_gpt2().train()

    def n_hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    assert n_hooks() == 0
    hook = attach_dispersion(model, "all")
    assert n_hooks() == N_LAYER + 1
    hook.remove()
    assert n_hooks() == 0
    model(ids)
    assert hook.num_collected == 0
    with attach_dispersion(model, "last"):
        assert n_hooks() == 2
    assert n_hooks() == 0


def make_trainer(tmp_path, coeff=0.1, grad_accum=1, max_steps=2, logging_steps=1, where="all"):
    from condense.dispersion import DispersionTrainer

    ids = list(range(1, 13))
    example = {
        "input_ids": ids,
        "attention_mask": [1] * 10 + [0] * 2,
        "labels": ids[:10] + [-100] * 2,
    }
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=grad_accum,
        learning_rate=1e-3,
        logging_steps=logging_steps,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    model = tiny_gpt2(n_layer=2)
    # GPT2LMHeadModel's class name maps to no loss type, so the Trainer would count the items of
    # unshifted labels (num_items_in_batch) and rescale the LM loss; name the causal-LM loss.
    model.loss_type = "ForCausalLM"
    return DispersionTrainer(
        model=model,
        args=args,
        train_dataset=[example] * 8,  # identical examples: every batch is the same
        dispersion=DispersionLoss(max_tokens=None),
        dispersion_coeff=coeff,
        dispersion_where=where,
    ), example


def train_logs(trainer):
    trainer.train()
    return [log for log in trainer.state.log_history if "loss" in log]


def test_trainer_logs_lm_and_dispersion_losses(tmp_path):
    trainer, example = make_trainer(tmp_path)
    batch = {k: torch.tensor([v, v]) for k, v in example.items()}
    model = trainer.model
    with attach_dispersion(model, "all", DispersionLoss(max_tokens=None)) as hook:
        model.train()
        lm0 = model(**batch).loss.item()
        disp0 = hook.loss(batch["attention_mask"]).item()
    logs = train_logs(trainer)
    assert len(logs) == 2
    for log in logs:
        assert {"lm_loss", "dispersion_loss"} <= log.keys()
        assert log["loss"] == pytest.approx(log["lm_loss"] + 0.1 * log["dispersion_loss"], rel=1e-4)
    assert logs[0]["lm_loss"] == pytest.approx(lm0, rel=1e-5)
    assert logs[0]["dispersion_loss"] == pytest.approx(disp0, rel=1e-5)
    # evaluation reports the LM loss only
    trainer.model.eval()
    eval_loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        assert eval_loss.item() == pytest.approx(trainer.model(**batch).loss.item(), rel=1e-6)


def test_trainer_with_gradient_accumulation_keeps_the_decomposition(tmp_path):
    trainer, example = make_trainer(tmp_path, grad_accum=2, max_steps=2, logging_steps=2)
    batch = {k: torch.tensor([v, v]) for k, v in example.items()}
    with torch.no_grad():
        lm0 = trainer.model(**batch).loss.item()
    (log,) = train_logs(trainer)
    assert log["loss"] == pytest.approx(log["lm_loss"] + 0.1 * log["dispersion_loss"], rel=1e-4)
    # per optimizer step, not summed over the 2 micro-batches (lr is small: close to the start)
    assert log["lm_loss"] == pytest.approx(lm0, rel=0.1)
    # the dispersion of one micro-batch is an angular-spread value, in [-1, 0]
    assert -1 <= log["dispersion_loss"] <= 0


def test_trainer_rejects_bad_where_at_construction(tmp_path):
    with pytest.raises(ValueError):
        make_trainer(tmp_path, where="middle")
