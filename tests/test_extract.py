"""HiddenStateReader: the one-off hook check, in place on the first batch or on a prefix, and its fallback."""

import pytest
import torch
import transformers

import condense
from condense.probing import extract
from condense.probing.extract import HiddenStateReader


@pytest.fixture
def llama(tiny_models):
    model = transformers.AutoModel.from_pretrained(tiny_models["llama"]).eval()
    forwards, last_block_runs = [], []
    model.register_forward_pre_hook(lambda m, args: forwards.append(1))
    model.layers[-1].register_forward_pre_hook(lambda m, args: last_block_runs.append(1))
    return model, forwards, last_block_runs


def _batch(seed: int = 0, rows: int = 2, length: int = 24):
    ids = torch.randint(3, 200, (rows, length), generator=torch.Generator().manual_seed(seed))
    attention = torch.ones(rows, length, dtype=torch.bool)
    attention[1, length - 5:] = False  # a padded row
    return ids, attention


def _reference(model, ids, attention):
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=attention.long(), output_hidden_states=True, use_cache=False)
    return [h.clone() for h in out.hidden_states]


def _read(reader, ids, attention, layers):
    got = {}
    reader.read(ids, attention, layers, lambda i, hidden: got.__setitem__(i, hidden.clone()))
    return got


def test_the_first_batch_is_checked_in_place_without_a_forward_pass_of_its_own(llama):
    model, forwards, _ = llama
    reader = HiddenStateReader(model)
    layers = list(range(reader.n_entries))
    for seed in (0, 1):  # the checked batch, then one read with the hooks
        ids, attention = _batch(seed)
        expected = _reference(model, ids, attention)
        forwards.clear()
        got = _read(reader, ids, attention, layers)
        assert len(forwards) == 1 and reader.method == "hooks" and reader.last_entry_after_final_norm is True
        assert sorted(got) == layers
        for i in layers:
            assert torch.equal(got[i], expected[i]), i


def test_a_first_batch_too_large_to_hold_is_checked_on_a_prefix(llama, monkeypatch):
    model, forwards, _ = llama
    monkeypatch.setattr(extract, "VERIFY_HOLD_BYTES", 0)
    reader = HiddenStateReader(model)
    ids, attention = _batch()
    expected = _reference(model, ids, attention)
    forwards.clear()
    got = _read(reader, ids, attention, [0, 2, reader.n_entries - 1])
    assert len(forwards) == 2 and reader.method == "hooks"
    for i in got:
        assert torch.equal(got[i], expected[i]), i


def test_a_read_that_stops_early_is_checked_on_a_prefix_and_then_stops_early(llama):
    model, forwards, last_block_runs = llama
    reader = HiddenStateReader(model)
    ids, attention = _batch()
    expected = _reference(model, ids, attention)
    forwards.clear(), last_block_runs.clear()
    got = _read(reader, ids, attention, [1, 0])
    assert len(forwards) == 2 and len(last_block_runs) == 1  # the prefix ran every block, the batch did not
    assert sorted(got) == [0, 1] and all(torch.equal(got[i], expected[i]) for i in got)


class _MisreadingReader(HiddenStateReader):
    """A reader whose hook for entry 1 hands over something else, as a model whose blocks do not map to
    its hidden states would."""

    def _capture_entry(self, i, take):
        return super()._capture_entry(i, (lambda hidden: take(hidden + 1.0)) if i == 1 else take)


def test_hooks_that_disagree_with_hidden_states_fall_back_and_give_the_models_own_states(llama):
    model, forwards, _ = llama
    reader = _MisreadingReader(model)
    layers = list(range(reader.n_entries))
    for seed in (0, 1):  # the checked batch, then one read with output_hidden_states
        ids, attention = _batch(seed)
        expected = _reference(model, ids, attention)
        forwards.clear()
        got = _read(reader, ids, attention, layers)
        assert reader.method == "hidden_states" and len(forwards) == 1
        for i in layers:
            assert torch.equal(got[i], expected[i]), i


def test_a_probe_checked_in_place_writes_the_same_folder_as_one_checked_on_a_prefix(tiny_models, docs_jsonl,
                                                                                     tmp_path, monkeypatch):
    opts = dict(corpus=str(docs_jsonl), num_seqs=5, max_length=40, batch_size=2, quiet=True)
    folder = str(tiny_models["qwen3"])
    in_place = condense.probe(folder, **opts)
    monkeypatch.setattr(extract, "VERIFY_HOLD_BYTES", 0)
    prefix = condense.probe(folder, **opts)
    assert in_place.run["extraction"] == prefix.run["extraction"] == "hooks"
    a, b = in_place.save(tmp_path / "a"), prefix.save(tmp_path / "b")
    assert (a / "layers.csv").read_bytes() == (b / "layers.csv").read_bytes()


@pytest.mark.parametrize("spare", [0, -1])
def test_the_in_place_bound_counts_every_entry_of_the_batch_in_float32(llama, monkeypatch, spare):
    model, forwards, _ = llama
    ids, attention = _batch(rows=3, length=20)
    reader = HiddenStateReader(model)
    monkeypatch.setattr(extract, "VERIFY_HOLD_BYTES", 3 * 20 * model.config.hidden_size * 4 * reader.n_entries + spare)
    forwards.clear()
    _read(reader, ids, attention, list(range(reader.n_entries)))
    assert len(forwards) == (1 if spare == 0 else 2)
