"""condense.probe on a model object and texts already in memory: same numbers as by path, model untouched."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

import condense
from condense.errors import CondenseError
from condense.models import probing_mode
from condense.probing.corpus import texts_hash

SMALL = {"num_seqs": 4, "max_length": 32, "batch_size": 2, "quiet": True}


def _texts(docs_jsonl) -> list[str]:
    return [json.loads(line)["text"] for line in docs_jsonl.read_text().splitlines()]


def _assert_same_numbers(a, b):
    pd.testing.assert_frame_equal(a.layers, b.layers, check_exact=True)
    np.testing.assert_array_equal(a.histograms, b.histograms)
    assert a.run["token_hash"] == b.run["token_hash"]


@pytest.mark.parametrize("loader", [transformers.AutoModelForCausalLM, transformers.AutoModel])
def test_model_object_gives_the_numbers_of_its_checkpoint_path(tiny_gpt2, tokenizer, docs_jsonl, loader):
    by_path = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL)
    model = loader.from_pretrained(tiny_gpt2)
    model.train()  # dropout 0.1 is on in train mode: equal numbers mean the probe ran in eval mode
    in_memory = condense.probe(model, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)
    _assert_same_numbers(in_memory, by_path)
    run = in_memory.run
    assert run["source"] == "memory" and run["model_class"] == type(model).__name__
    assert run["probed_class"] == "GPT2Model" and run["training_mode"] is True
    assert run["parameters"] == sum(p.numel() for p in model.parameters())
    assert run["config"]["n_layer"] == 3 and run["device"] == "cpu" and run["dtype"] == "float32"
    assert run["model"] == str(tiny_gpt2)  # the config's _name_or_path
    assert "load_options" not in run


def test_classification_head_and_encoder(tiny_models, tokenizer, docs_jsonl):
    folder = tiny_models["bert"]
    by_path = condense.probe(str(folder), corpus=str(docs_jsonl), **SMALL)
    model = transformers.BertForSequenceClassification.from_pretrained(folder, num_labels=3)
    _assert_same_numbers(condense.probe(model, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL), by_path)


def _fingerprint(model: torch.nn.Module) -> dict:
    """Everything the probe must leave as it was."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode())  # disk-offloaded weights sit on "meta": nothing to read there
        h.update(str(tensor.shape).encode() if tensor.is_meta else tensor.detach().cpu().numpy().tobytes())
    return {
        "state": h.hexdigest(),
        "training": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grads": [(n, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()],
        "hooks": [(n, list(m._forward_hooks), list(m._forward_pre_hooks), list(m._backward_hooks),
                   getattr(m, "_hf_hook", None)) for n, m in model.named_modules()],
        "devices": [(n, p.device) for n, p in model.named_parameters()],
        "output_hidden_states": model.config.output_hidden_states,
    }


def test_model_is_left_exactly_as_it_was(tiny_gpt2, tokenizer, docs_jsonl):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    model.train()
    model.transformer.h[1].eval()  # a mixed state must come back mixed
    model.transformer.wte.weight.requires_grad_(False)
    calls = []
    model.transformer.h[0].register_forward_hook(lambda *_: calls.append(1))
    ids = torch.tensor([[5, 6, 7, 8]])
    model(input_ids=ids, labels=ids).loss.backward()
    before = _fingerprint(model)
    rng = torch.get_rng_state()
    condense.probe(model, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)
    after = _fingerprint(model)
    for key in ("state", "training", "requires_grad", "hooks", "devices", "output_hidden_states"):
        assert after[key] == before[key], key
    for (name, g0), (_, g1) in zip(before["grads"], after["grads"]):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1), name
    assert torch.equal(torch.get_rng_state(), rng)
    assert calls  # the user's hook is still there and saw the probe's forward passes


def test_probing_mode_restores_flags_and_random_state():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5), torch.nn.Linear(2, 2))
    model.train()
    model[2].eval()
    state = torch.get_rng_state()
    with probing_mode(model):
        assert not any(m.training for m in model.modules())
        torch.rand(10)  # draws inside must not shift the caller's stream
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert torch.equal(torch.get_rng_state(), state)


def test_peft_lora_is_probed_with_its_adapter(tiny_gpt2, tokenizer, docs_jsonl):
    peft = pytest.importorskip("peft")
    base = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL)
    model = peft.get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2),
                                peft.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["c_attn", "c_fc"],
                                                fan_in_fan_out=True))
    fresh = condense.probe(model, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)
    _assert_same_numbers(fresh, base)  # LoRA starts with B = 0: the model is unchanged
    assert fresh.run["model_class"] == "PeftModelForCausalLM" and fresh.run["peft"]["default"]["r"] == 4
    assert fresh.run["trainable_parameters"] < fresh.run["parameters"]
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    adapted = condense.probe(model, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)
    assert not np.allclose(adapted.layers["mean_cos"].iloc[1:], base.layers["mean_cos"].iloc[1:], atol=1e-4)
    merged = model.merge_and_unload()  # the adapter folded into the weights: the same function
    again = condense.probe(merged, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)
    np.testing.assert_allclose(adapted.layers["mean_cos"], again.layers["mean_cos"], atol=1e-5)


def test_device_map_with_disk_offload_in_memory(tiny_models, tokenizer, docs_jsonl, tmp_path):
    pytest.importorskip("accelerate")
    folder = tiny_models["llama"]
    plain = condense.probe(str(folder), corpus=str(docs_jsonl), **SMALL)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, device_map="auto", max_memory={"cpu": "200KB"}, offload_folder=str(tmp_path / "offload"))
    before = _fingerprint(model)
    split = condense.probe(model, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)
    assert "disk" in split.run["placement"]
    numeric = [c for c in plain.layers.columns if plain.layers[c].dtype.kind == "f"]
    np.testing.assert_allclose(split.layers[numeric], plain.layers[numeric], rtol=1e-5, atol=1e-6)
    assert _fingerprint(model)["hooks"] == before["hooks"]


def test_texts_in_memory_equal_the_same_texts_from_a_file(tiny_gpt2, tokenizer, docs_jsonl, tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = _texts(docs_jsonl)
    from_file = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL)
    from_list = condense.probe(str(tiny_gpt2), corpus=texts, **SMALL)
    _assert_same_numbers(from_list, from_file)
    digest = texts_hash(texts)
    assert from_list.run["settings"]["corpus"] == f"texts:{len(texts)}:sha256={digest[:16]}"
    assert from_list.run["corpus_texts"] == {"kind": "list", "count": 13, "non_empty": 13, "sha256": digest}
    assert from_list.run["first_documents"][0] == "texts[0]"
    dataset = datasets.Dataset.from_dict({"body": texts, "id": list(range(len(texts)))})
    from_dataset = condense.probe(str(tiny_gpt2), corpus=dataset, text_field="body", **SMALL)
    _assert_same_numbers(from_dataset, from_file)
    assert from_dataset.run["corpus_texts"]["kind"] == "datasets.Dataset"
    assert from_dataset.run["corpus_texts"]["column"] == "body" and from_dataset.run["corpus_texts"]["sha256"] == digest
    from_column = condense.probe(str(tiny_gpt2), corpus=dataset["body"], **SMALL)
    _assert_same_numbers(from_column, from_file)
    shuffled = condense.probe(str(tiny_gpt2), corpus=texts, shuffle=True, seed=3, **SMALL)
    _assert_same_numbers(shuffled, condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), shuffle=True, seed=3, **SMALL))
    assert shuffled.run["token_hash"] != from_file.run["token_hash"]


def test_texts_hash_is_sha256_of_length_prefixed_utf8():
    texts = ["ab", "c", "é"]
    h = hashlib.sha256()
    for t in texts:
        h.update(len(t.encode()).to_bytes(8, "little") + t.encode())
    assert texts_hash(texts) == h.hexdigest()
    assert texts_hash(["ab", "c"]) != texts_hash(["a", "bc"])
    assert texts_hash(["a", "b"]) != texts_hash(["b", "a"])


def test_result_saves_loads_plots_and_compares(tiny_gpt2, tokenizer, docs_jsonl, tmp_path):
    from condense.plotting import compare_figure

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    result = condense.probe(model, tokenizer=tokenizer, name="my-gpt2", corpus=_texts(docs_jsonl), **SMALL)
    back = condense.load(result.save(tmp_path / "run"))
    pd.testing.assert_frame_equal(back.layers, result.layers, check_exact=False, check_dtype=False, rtol=1e-9)
    assert back.run["model"] == "my-gpt2" and back.run["corpus_texts"]["count"] == 13
    assert back.name == "my-gpt2"
    assert compare_figure([back, condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL)]) is not None
    with pytest.raises(CondenseError, match="does not record its load options"):
        from condense.api import rerun

        rerun(tmp_path / "run")


class _NoHiddenStates(torch.nn.Module):
    """Has a Transformer-like config and blocks, but its forward returns a bare tensor."""

    def __init__(self, vocab: int):
        super().__init__()
        self.config = transformers.GPT2Config(vocab_size=vocab, n_layer=2, n_embd=8, n_head=2)
        self.wte = torch.nn.Embedding(vocab, 8)
        self.h = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(2)])

    def get_input_embeddings(self):
        return self.wte

    def forward(self, input_ids, attention_mask=None, **kwargs):
        x = self.wte(input_ids)
        for block in self.h:
            x = block(x)
        return x


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_inputs_are_one_clear_error(tiny_gpt2, tokenizer, docs_jsonl):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    corpus = str(docs_jsonl)
    cases = [
        (dict(model=torch.nn.Linear(3, 3), tokenizer=tokenizer), "has no config.num_hidden_layers"),
        (dict(model=_NoHiddenStates(tokenizer.vocab_size), tokenizer=tokenizer), "returns no usable hidden states"),
        (dict(model={"weights": 1}, tokenizer=tokenizer), "neither a model name nor a torch.nn.Module"),
        (dict(model=model), "needs its tokenizer"),
        (dict(model=model, tokenizer=tokenizer, dtype="bfloat16"), "dtype= applies to a model loaded by name"),
        (dict(model=str(tiny_gpt2), tokenizer=tokenizer), "tokenizer= and name= go with a model object"),
        (dict(model=model, tokenizer=tokenizer, corpus=[]), "empty collection of texts"),
        (dict(model=model, tokenizer=tokenizer, corpus=["fine", 3]), "text 1 of the corpus is a int"),
        (dict(model=model, tokenizer=tokenizer, corpus=["  ", ""]), "are all empty"),
        (dict(model=model, tokenizer=tokenizer, corpus=42), "neither a corpus name nor a collection"),
    ]
    for kwargs, message in cases:
        with pytest.raises(CondenseError) as err:
            condense.probe(**{"corpus": corpus, **kwargs}, **SMALL)
        assert message in _one_line(err), (kwargs, str(err.value))


def test_tokenizer_that_does_not_fit_the_vocabulary(tokenizer, docs_jsonl):
    small = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=1000, n_layer=2, n_embd=16, n_head=2))
    with pytest.raises(CondenseError) as err:
        condense.probe(small, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)
    assert f"the tokenizer has {len(tokenizer)} tokens but the model's input embeddings have 1000 rows" in _one_line(err)
    big = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=100_000, n_layer=2, n_embd=16, n_head=2))
    with pytest.warns(UserWarning, match="is it the model's own tokenizer"):
        condense.probe(big, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)


def test_prompt_learning_adapter_is_refused(tiny_gpt2, tokenizer, docs_jsonl):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2),
                                peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with pytest.raises(CondenseError, match="prompt-learning adapter"):
        condense.probe(model, tokenizer=tokenizer, corpus=str(docs_jsonl), **SMALL)
