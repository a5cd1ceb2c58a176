"""Tests of condense.dispersion.losses against naive float64 references."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import condense.dispersion
from condense.dispersion import VARIANTS, DispersionLoss, dispersion_loss


def naive_loss(h, mask, variant, tau=1.0, t=0.1, w=0.1):
    """Per-pair python loops over the formulas of PAPER.md; one value per sequence, then mean."""
    batch, length, feat = h.shape
    per_seq = []
    for b in range(batch):
        idx = [i for i in range(length) if mask is None or bool(mask[b, i])]
        if len(idx) < 2:
            continue
        vals = []
        for i in idx:
            for j in idx:
                if i == j:
                    continue
                zi, zj = h[b, i], h[b, j]
                if variant in ("angular_spread", "orthogonalization"):
                    c = torch.dot(zi, zj) / (zi.norm() * zj.norm())
                    c = c + (c.clamp(-1 + t, 1 - t) - c).detach()  # straight-through clamp
                    d = torch.arccos(c) / math.pi
                    angular = variant == "angular_spread"
                    vals.append(-d / tau if angular else torch.relu(0.5 - d) ** 2)
                elif variant == "decorrelation":
                    si = (zi - zi.mean()) / torch.sqrt(zi.var(unbiased=False) + 1e-6)
                    sj = (zj - zj.mean()) / torch.sqrt(zj.var(unbiased=False) + 1e-6)
                    vals.append((torch.dot(si, sj) / feat) ** 2)
                else:
                    vals.append(-((zi - zj) ** 2).sum() / tau)
        vals = torch.stack(vals)
        if variant in ("angular_spread", "l2_repel"):
            loss_b = torch.log(torch.exp(vals).mean())
        else:
            loss_b = vals.mean()
        if variant == "l2_repel":
            loss_b = loss_b + w * torch.stack([(h[b, i] ** 2).mean() for i in idx]).mean()
        per_seq.append(loss_b)
    return torch.stack(per_seq).mean()


def value_and_grad(fn, h):
    h = h.detach().clone().requires_grad_(True)
    value = fn(h)
    (grad,) = torch.autograd.grad(value, h)
    return value.detach(), grad


def random_hidden(batch=3, length=6, feat=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, length, feat, generator=g, dtype=dtype)
    # a near-duplicate token, so that the clamp is active for some pairs
    h[0, 1] = h[0, 0] + 0.01 * torch.randn(feat, generator=g, dtype=dtype)
    return h


MASK = torch.tensor(
    [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0]], dtype=torch.bool
)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mask", [None, MASK], ids=["nomask", "mask"])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_matches_naive_reference_value_and_grad(variant, mask, tau):
    h = random_hidden()
    kw = dict(tau=tau, clamp_margin=0.1, l2_activation_weight=0.1)
    module = DispersionLoss(variant, max_tokens=None, **kw)
    got, got_grad = value_and_grad(lambda x: module(x, mask), h)
    want, want_grad = value_and_grad(
        lambda x: naive_loss(x, mask, variant, tau=tau, t=0.1, w=0.1), h
    )
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-7, atol=1e-10)


def test_clamp_is_active_in_reference_case_and_straight_through():
    """Two tokens with cosine above 1 - t: a plain clamp would give no gradient; straight-through
    gives d/dc [-arccos(1 - t) / pi] = 1 / (pi sqrt(1 - (1 - t)^2)) times dc/dh."""
    t = 0.1
    h0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    h1 = torch.tensor([1.0, 0.05, 0.0], dtype=torch.float64)
    h = torch.stack([h0, h1]).unsqueeze(0)
    value, grad = value_and_grad(lambda x: DispersionLoss(clamp_margin=t)(x), h)
    assert value.item() == pytest.approx(-math.acos(1 - t) / math.pi, rel=1e-12)
    c = torch.dot(h0, h1) / h1.norm()
    assert c > 1 - t
    dc_dh0 = h1 / h1.norm() - c * h0  # |h0| = 1
    expected = dc_dh0 / (math.pi * math.sqrt(1 - (1 - t) ** 2))
    torch.testing.assert_close(grad[0, 0], expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_float64(variant):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 4, 16, generator=g, dtype=torch.float64)
    z = torch.nn.functional.normalize(h, dim=-1)
    cos = (z @ z.transpose(1, 2)).masked_fill(torch.eye(4, dtype=torch.bool), 0.0)
    assert cos.abs().max() < 0.85  # off-diagonal pairs away from the clamp boundary 0.9
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    module = DispersionLoss(variant, tau=0.7)
    assert torch.autograd.gradcheck(lambda x: module(x, mask), (h.requires_grad_(True),))


@pytest.mark.parametrize("variant", VARIANTS)
def test_masked_garbage_changes_nothing_and_gets_zero_grad(variant):
    h = random_hidden()
    loss = DispersionLoss(variant, max_tokens=None)
    clean, clean_grad = value_and_grad(lambda x: loss(x, MASK), h)
    garbage = h.clone()
    noise = 1e4 * torch.randn(h.shape, dtype=h.dtype, generator=torch.Generator().manual_seed(5))
    garbage[~MASK] = noise[~MASK]
    garbage[2, 0, 0] = float("nan")  # position (2, 0) is masked
    dirty, dirty_grad = value_and_grad(lambda x: loss(x, MASK), garbage)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    torch.testing.assert_close(dirty_grad, clean_grad, rtol=0, atol=0)
    assert (dirty_grad[~MASK] == 0).all()
    assert (dirty_grad[MASK].abs().sum(-1) > 0).all()


@settings(max_examples=30, deadline=None)
@given(
    bits=st.lists(st.booleans(), min_size=10, max_size=10),
    variant=st.sampled_from(VARIANTS),
)
def test_mask_equals_dropping_the_masked_tokens(bits, variant):
    """One sequence with a mask = the same sequence with masked tokens removed."""
    h = random_hidden(batch=1, length=10, seed=3)
    mask = torch.tensor(bits).unsqueeze(0)
    loss = DispersionLoss(variant, max_tokens=None)
    got = loss(h, mask)
    if mask.sum() < 2:
        assert got.item() == 0.0
    else:
        torch.testing.assert_close(got, loss(h[:, mask[0]]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_valid_sequence_gives_connected_zero(variant):
    h = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[1, 0, 0], [0, 0, 0]])
    out = DispersionLoss(variant)(h, mask)
    assert out.item() == 0.0 and out.grad_fn is not None
    out.backward()
    assert (h.grad == 0).all()


def test_sequences_with_fewer_than_two_tokens_do_not_dilute_the_mean():
    h = random_hidden(batch=2)
    mask = torch.tensor([[1] * 6, [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    loss = DispersionLoss(max_tokens=None)
    torch.testing.assert_close(loss(h, mask), loss(h[:1]))


def test_list_of_layers_is_mean_over_layers():
    a, b = random_hidden(seed=1), random_hidden(seed=2)
    loss = DispersionLoss("decorrelation")
    torch.testing.assert_close(loss([a, b], MASK), (loss(a, MASK) + loss(b, MASK)) / 2)
    assert dispersion_loss((a, b), MASK, "decorrelation") == loss([a, b], MASK)


def chosen_positions(loss, h, mask):
    """Positions that received gradient, i.e. the subsampled ones."""
    value, grad = value_and_grad(lambda x: loss(x, mask), h)
    return value, grad.abs().sum(-1) > 0


def test_subsampling_is_seeded_and_picks_valid_positions():
    h = random_hidden(batch=3, length=12, feat=6, seed=4)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 7:] = False  # 7 valid
    mask[1, ::2] = False  # 6 valid
    mask[2, 3:] = False  # 3 valid: fewer than max_tokens, all kept
    v0, chosen0 = chosen_positions(DispersionLoss(max_tokens=4, seed=0), h, mask)
    v0b, chosen0b = chosen_positions(DispersionLoss(max_tokens=4, seed=0), h, mask)
    v1, chosen1 = chosen_positions(DispersionLoss(max_tokens=4, seed=1), h, mask)
    assert v0 == v0b and torch.equal(chosen0, chosen0b)
    assert v0 != v1 and not torch.equal(chosen0, chosen1)
    for chosen in (chosen0, chosen1):
        assert not (chosen & ~mask).any()
        assert chosen.sum(1).tolist() == [4, 4, 3]
    # the value is the full loss restricted to the chosen positions
    torch.testing.assert_close(v0, DispersionLoss(max_tokens=None)(h, chosen0))


def test_subsampling_draws_anew_each_call_and_not_below_max_tokens():
    h = random_hidden(batch=2, length=12, seed=6)
    loss = DispersionLoss(max_tokens=5, seed=0)
    assert loss(h) != loss(h)  # the generator advances
    full = DispersionLoss(max_tokens=None)(h)
    assert DispersionLoss(max_tokens=12)(h) == full


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["identical", "opposite", "zero"])
def test_no_nan_for_degenerate_tokens(variant, kind):
    v = torch.randn(8)
    if kind == "identical":
        h = v.repeat(2, 5, 1)
    elif kind == "opposite":
        h = torch.stack([v, -v, v, -v]).unsqueeze(0)
    else:
        h = torch.zeros(1, 4, 8)
    h.requires_grad_(True)
    out = DispersionLoss(variant)(h)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(h.grad).all()


def test_zero_clamp_margin_is_finite_for_generic_tokens():
    """t = 0 must not turn the (excluded) diagonal cos = 1 into NaN gradients."""
    h = torch.randn(2, 5, 8, requires_grad=True)
    out = DispersionLoss(clamp_margin=0.0)(h)
    out.backward()
    assert torch.isfinite(h.grad).all() and (h.grad != 0).any()


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_is_close_to_fp32(variant):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 10, 16, generator=g)
    layer = torch.nn.Linear(16, 16)
    loss = DispersionLoss(variant)
    with torch.no_grad():
        ref = loss(layer(x))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        hidden = layer(x)
        assert hidden.dtype == torch.bfloat16
        out = loss(hidden)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.02)
    out.backward()
    assert all(torch.isfinite(p.grad).all() and (p.grad != 0).any() for p in layer.parameters())


def test_fp32_autocast_exact_against_no_autocast():
    x = torch.randn(2, 10, 16)
    loss = DispersionLoss()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = loss(x)
    assert inside == loss(x)


def test_l2_repel_float32_survives_a_large_shared_feature():
    """A huge feature shared by all tokens (an "outlier dimension") leaves distances unchanged."""
    h = random_hidden(batch=2, length=6, feat=8, seed=8)
    shifted = h.clone()
    shifted[..., 0] += 3e3
    loss = DispersionLoss("l2_repel", l2_activation_weight=0.0)
    torch.testing.assert_close(loss(shifted.float()).double(), loss(h), rtol=1e-4, atol=1e-4)


def test_functional_equals_module():
    h = random_hidden()
    for variant in VARIANTS:
        want = DispersionLoss(variant, tau=0.5, clamp_margin=0.2)(h, MASK)
        got = dispersion_loss(h, MASK, variant, tau=0.5, clamp_margin=0.2)
        assert got == want


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variant": "cosine"},
        {"tau": 0.0},
        {"clamp_margin": 1.0},
        {"clamp_margin": -0.1},
        {"max_tokens": 1},
        {"l2_activation_weight": -1.0},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        DispersionLoss(**kwargs)


def test_invalid_shapes():
    loss = DispersionLoss()
    with pytest.raises(ValueError):
        loss(torch.randn(4, 8))
    with pytest.raises(ValueError):
        loss(torch.randn(2, 4, 8), torch.ones(2, 5))
    with pytest.raises(ValueError):
        loss([torch.randn(2, 4, 8), torch.randn(2, 3, 8)])
    with pytest.raises(ValueError):
        loss([])


def test_loss_and_hooks_do_not_import_transformers():
    """condense.dispersion (minus the lazy DispersionTrainer) works with transformers unimportable.

    The parent package is stubbed so that whatever condense/__init__.py imports does not count.
    """
    package_dir = Path(condense.dispersion.__file__).parent.parent
    code = (
        "import sys, types, torch\n"
        "sys.modules['transformers'] = None  # any import of transformers now fails\n"
        f"stub = types.ModuleType('condense'); stub.__path__ = [{str(package_dir)!r}]\n"
        "sys.modules['condense'] = stub\n"
        "import condense.dispersion as d\n"
        "d.dispersion_loss(torch.randn(1, 3, 4)); d.attach_dispersion\n"
        "try:\n"
        "    d.DispersionTrainer\n"
        "except ImportError:\n"
        "    sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def mean_offdiag_cos(h):
    z = torch.nn.functional.normalize(h, dim=-1)
    c = z @ z.transpose(1, 2)
    n = c.shape[-1]
    return ((c.sum((1, 2)) - c.diagonal(dim1=1, dim2=2).sum(-1)) / (n * (n - 1))).mean()


def test_adam_on_angular_spread_lowers_cosine_of_gpt2_hidden_states():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # a direction shared by all token embeddings: a condensed start
        model.transformer.wte.weight.add_(0.5 * torch.randn(32))
    ids = torch.randint(0, 100, (4, 24), generator=torch.Generator().manual_seed(0))
    loss_fn = DispersionLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def hidden_states():
        return model(ids, output_hidden_states=True).hidden_states[1:]

    with torch.no_grad():
        before = torch.stack([mean_offdiag_cos(h) for h in hidden_states()])
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(list(hidden_states()))
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = torch.stack([mean_offdiag_cos(h) for h in hidden_states()])
    assert (before > 0.9).all() and (after < 0.3).all(), (before, after)
