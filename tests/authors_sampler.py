"""The authors' text sampler, transcribed for the tests that compare condense's with it.

``get_random_long_text`` is the function of the authors' ``key_observations/utils/text_data.py``,
with the dataset handed in (their code loads it by name: ``load_dataset("wikitext",
"wikitext-103-v1")``, ``("pubmed_qa", "pqa_labeled")`` with key ``long_answer``, ``("imdb")``,
``("squad")`` with key ``context``) and the paper's word counts as defaults (1024 and 1280). Their
``word_tokenize`` needs NLTK's ``punkt_tab`` data, a download: :func:`nltk_word_tokenize` is NLTK's
own ``word_tokenize`` pipeline (Punkt sentences, then NLTK's Treebank word tokenizer) with Punkt's
untrained parameters instead of that English model.
"""

import numpy as np
from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktSentenceTokenizer

_SENTENCES, _WORDS = PunktSentenceTokenizer(), NLTKWordTokenizer()


def nltk_word_tokenize(text):
    """NLTK's ``word_tokenize`` with an untrained Punkt model (the English one is a download)."""
    return [token for sentence in _SENTENCES.tokenize(text) for token in _WORDS.tokenize(sentence)]


def get_random_long_text(dataset, key, min_word_count=1024, max_word_count=1280, split="train", random_seed=0,
                         word_tokenize=nltk_word_tokenize):
    """The authors' sampler, as they wrote it (their dataset-by-name loading left to the caller)."""
    text = ''
    rng = np.random.default_rng(seed=random_seed)
    idx = rng.integers(0, int(len(dataset['train']) * 0.95)).item()
    while len(word_tokenize(text)) < min_word_count:
        text += dataset[split][idx][key]
        idx += 1
        if len(word_tokenize(text)) > max_word_count:
            break
    return text
