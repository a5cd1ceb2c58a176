"""Reading corpora, selecting layers, reading hidden states, and running the probe."""
