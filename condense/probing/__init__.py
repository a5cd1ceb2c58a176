"""Loading models, reading corpora, selecting layers, and running the probe."""
