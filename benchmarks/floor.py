"""The floor: load a model as ``condense probe`` does and run the bare forward pass over the same tokens.

One process, measured whole by ``bench_probe.py`` (model load included): ``condense.models.load_model``
with the same options, the probe's own sequence builder (so the tokens are identical), then
``model(..., output_hidden_states=True)`` under ``torch.inference_mode`` in batches of
``--batch-size`` (default 1: no padding, the least memory). Prints one JSON line: tokens, and the
GPU's peak allocation when on an accelerator.

    python benchmarks/floor.py smollm2-135m --corpus docs.jsonl --num-seqs 30 --max-length 512
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--corpus", required=True)
    p.add_argument("--num-seqs", type=int, default=30)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--init", default="pretrained")
    args = p.parse_args(argv)

    import torch

    from condense.models import load_model
    from condense.probing.corpus import build_sequences, read_documents

    loaded = load_model(args.model, dtype=args.dtype, device=args.device, init=args.init)
    tok = loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)  # the probe's choice
    sequences = build_sequences(read_documents(args.corpus), tok, args.max_length, args.num_seqs)
    device = loaded.model.get_input_embeddings().weight.device
    with torch.inference_mode():
        for lo in range(0, len(sequences), args.batch_size):
            chunk = sequences[lo: lo + args.batch_size]
            width = max(len(s.input_ids) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, s in enumerate(chunk):  # right padding, as the probe
                ids[r, : len(s.input_ids)] = torch.tensor(s.input_ids)
                attention[r, : len(s.input_ids)] = 1
            loaded.model(input_ids=ids.to(device), attention_mask=attention.to(device), output_hidden_states=True)
    facts = {"tokens": sum(len(s.input_ids) for s in sequences)}
    if device.type == "cuda":
        torch.cuda.synchronize()
        facts["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
