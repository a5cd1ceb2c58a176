"""Read the hub corpus presets the ways condense reads them, in a fresh process (run by
tests/test_hub_corpora.py with ``HF_ENDPOINT`` and an empty ``HF_HOME``).

``python -m tests.hub_reads OUT.json N FOLDER`` writes, per preset, the documents of the streaming
reader (name, row, text) and every row of the whole-split reader; the texts the authors'
``get_random_long_text`` gives for repetitions 0..N-1 on WikiText-103 loaded with ``datasets``
the way their script loads it; and the result of ``condense probe openai-community/gpt2 --corpus
wikipedia --sampler paper --aggregate paper --num-seqs N --out FOLDER`` (through the CLI entry
point). ``python -m tests.hub_reads OUT.json --offline`` writes the documents only (run offline:
from the datasets cache).
"""

import json
import sys

from condense.probing.corpus import HUB_PRESETS, read_documents, read_rows
from tests.cli_driver import run_one
from tests.authors_sampler import get_random_long_text


def main() -> None:
    out = sys.argv[1]
    if sys.argv[2] == "--offline":
        found = {preset: [(d.name, d.row, d.text) for d in read_documents(preset)] for preset in HUB_PRESETS}
        with open(out, "w") as f:
            json.dump(found, f)
        return
    n, folder = int(sys.argv[2]), sys.argv[3]
    found = {}
    for preset in HUB_PRESETS:
        rows, label = read_rows(preset)
        found[preset] = {"documents": [(d.name, d.row, d.text) for d in read_documents(preset)],
                         "rows": list(rows), "label": label}
    import datasets

    wikitext = datasets.load_dataset("Salesforce/wikitext", "wikitext-103-v1")  # as the authors load "wikitext"
    found["authors"] = [get_random_long_text(wikitext, "text", random_seed=r) for r in range(n)]
    found["probe"] = run_one(["probe", "openai-community/gpt2", "--corpus", "wikipedia", "--sampler", "paper",
                              "--aggregate", "paper", "--num-seqs", str(n), "--layers", "last", "--spectrum-seqs", "0",
                              "--out", folder, "-q"])
    with open(out, "w") as f:
        json.dump(found, f)


if __name__ == "__main__":
    main()
