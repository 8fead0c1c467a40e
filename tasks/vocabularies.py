"""The vocabularies of the tasks: T5's SentencePiece model, and the quickstart's own.

- T5's model (cc_all.32000.100extra, 32,000 pieces + 100 sentinels), from a local copy of
  its `sentencepiece.model` (nothing is downloaded at run time). Its path is set in gin,
  `vocabularies.t5_vocabulary_path.path = '/data/t5/sentencepiece.model'`, or by
  $SAMTONE_T5_VOCABULARY; the default is its public location, readable where GCS is. The
  path is read when the vocabulary is first used, after the gin files are parsed.
- The quickstart's model (tasks/vocab/quickstart_spm.model, 2,000 pieces), trained on the
  embedded code-search set by tasks/vocab/make_quickstart_vocab.py, with T5's special ids
  (pad 0, EOS 1, UNK 2, no BOS) so that the two are interchangeable.
"""

import importlib.resources
import os
from typing import Optional

import gin
import seqio

T5_VOCABULARY_VARIABLE = "SAMTONE_T5_VOCABULARY"
T5_PUBLIC_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
QUICKSTART_PATH = str(importlib.resources.files("samtone_jax.tasks") / "vocab"
                      / "quickstart_spm.model")


@gin.configurable(module="vocabularies")
def t5_vocabulary_path(path: Optional[str] = None) -> str:
  """The gin-bound path, else $SAMTONE_T5_VOCABULARY, else T5's public location."""
  return path or os.environ.get(T5_VOCABULARY_VARIABLE) or T5_PUBLIC_PATH


class _T5Vocabulary(seqio.SentencePieceVocabulary):
  """T5's SentencePiece vocabulary, its file found by `t5_vocabulary_path` on first use."""

  def __init__(self):
    super().__init__(sentencepiece_model_file=None)

  def _model_context(self):
    # The file the gin configuration names now: a process may run several configurations
    # (seqio caches each file's model, so a switch back loads nothing again).
    path = t5_vocabulary_path()
    if path != self._sentencepiece_model_file:
      self._sentencepiece_model_file, self._model = path, None
    return super()._model_context()

  def resolved(self) -> seqio.SentencePieceVocabulary:
    """The vocabulary of the file the gin configuration names now, kept after the
    configuration is cleared (`launch.read_run`)."""
    return seqio.SentencePieceVocabulary(t5_vocabulary_path())


def t5_vocabulary() -> seqio.SentencePieceVocabulary:
  """T5's vocabulary (see the module docstring for where its file comes from)."""
  return _T5Vocabulary()


def quickstart_vocabulary() -> seqio.SentencePieceVocabulary:
  """The quickstart's 2,000-piece vocabulary, shipped with the package."""
  return seqio.SentencePieceVocabulary(QUICKSTART_PATH)
