"""The vocabularies of the tasks: T5's SentencePiece model, and the quickstart's own.

- T5's model (cc_all.32000.100extra, 32,000 pieces + 100 sentinels): from
  $SAMTONE_T5_VOCABULARY, a local copy of `sentencepiece.model` (nothing is downloaded at
  run time); the default is its public location, readable where GCS is.
- The quickstart's model (tasks/vocab/quickstart_spm.model, 2,000 pieces), trained on the
  embedded code-search set by tasks/vocab/make_quickstart_vocab.py, with T5's special ids
  (pad 0, EOS 1, UNK 2, no BOS) so that the two are interchangeable.
Both load lazily, when first used.
"""

import importlib.resources
import os

import seqio

T5_VOCABULARY_VARIABLE = "SAMTONE_T5_VOCABULARY"
T5_PUBLIC_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
QUICKSTART_PATH = str(importlib.resources.files("samtone_jax.tasks") / "vocab"
                      / "quickstart_spm.model")


def t5_vocabulary() -> seqio.SentencePieceVocabulary:
  """T5's vocabulary, from $SAMTONE_T5_VOCABULARY (default: its public location)."""
  return seqio.SentencePieceVocabulary(os.environ.get(T5_VOCABULARY_VARIABLE, T5_PUBLIC_PATH))


def quickstart_vocabulary() -> seqio.SentencePieceVocabulary:
  """The quickstart's 2,000-piece vocabulary, shipped with the package."""
  return seqio.SentencePieceVocabulary(QUICKSTART_PATH)
