"""The floor of a one-sequence probe: the fastest load transformers offers, then one forward pass.

``FOLDER`` is a checkpoint folder; for a GGUF alias ``bench_startup.py`` passes its conversion in
condense's cache (float32 safetensors, memory-mapped by transformers), so this script pays no GGUF
parsing either. ``AutoTokenizer`` and ``AutoModel.from_pretrained(FOLDER, dtype=float32)``, the
probe's own sequence builder for the same tokens (a few milliseconds, torch-free), then
``model(..., output_hidden_states=True)`` under ``torch.inference_mode``. Prints one JSON line.

    python benchmarks/bare_load.py ~/.cache/condense/converted/smollm2-135m/float32-... --max-length 512
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--num-seqs", type=int, default=1)
    p.add_argument("--max-length", type=int, default=512)
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModel, AutoTokenizer

    from condense.probing.corpus import build_sequences, read_documents

    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    model = AutoModel.from_pretrained(args.folder, dtype=torch.float32)
    sequences = build_sequences(read_documents("builtin"), tokenizer, args.max_length, args.num_seqs)
    with torch.inference_mode():
        for s in sequences:
            ids = torch.tensor([s.input_ids])
            model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    print(json.dumps({"tokens": sum(len(s.input_ids) for s in sequences)}))


if __name__ == "__main__":
    main()
