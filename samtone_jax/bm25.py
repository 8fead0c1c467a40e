"""BM25 through the `bm25s` library: the lexical first stage (mining) and baseline row.

Texts are analysed as Lucene's `EnglishAnalyzer` does, the analysis behind BEIR's and
Anserini's published BM25 rows: split at Unicode word boundaries (UAX #29: single letters
and numbers such as "3.14" are words, a hyphen splits), a trailing possessive 's or ’s
removed, lower-cased, Lucene's 33 English stop words removed, and stemmed with the original
Porter algorithm (PyStemmer's "porter"; not Porter2, Snowball's "english"). Documents are
scored with Lucene's BM25 at Anserini's defaults k1 = 0.9, b = 0.4, a document's length
being its number of analysed words.

What still differs from Lucene (NFCorpus nDCG@10: 0.320 here, 0.322 from Anserini with
one field, 0.325 in BEIR's paper):
- Word boundaries are those of the `regex` module's Unicode version, not those of the
  Lucene release; emoji are no words here, and a word is not cut after 255 characters.
- Lucene's Porter stemmer keeps two departures of Porter's own code that the published
  algorithm lacks: -bli becomes -ble (not only -abli -able) and -logi becomes -log (so
  "biology" is "biolog" there, "biologi" here).
- Lucene stores a document's length in one byte, exact below 40 words and rounded down
  beyond (24 plus the rest to 4 significant bits); the length here is exact.
- A document is one field, title and text joined, as Anserini's "flat" BEIR indexes; BEIR's
  paper searched title and text as two Elasticsearch fields at k1 = 1.2, b = 0.75.

References:
  Lù, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring",
  2024. https://arxiv.org/abs/2407.03618
  Porter, "An algorithm for suffix stripping", Program 14(3), 1980.
  Kamphuis et al., "Which BM25 do you mean? A large-scale reproducibility study of
  scoring variants", ECIR 2020.
"""

import array
import collections.abc
import importlib
from typing import TYPE_CHECKING, Sequence

import gin
import numpy as np
import regex
import Stemmer

from samtone_jax import data_files, retrieval

if TYPE_CHECKING:
  import bm25s


def _bm25s():
  """The `bm25s` module, imported on first use, not with this one: importing it runs a JAX
  computation (top_k on dummy scores), which starts the XLA backend, and a run on several
  processes must call jax.distributed.initialize before anything does."""
  return importlib.import_module("bm25s")

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their"
    " then there these they this to was will with".split())

# A word: from a Unicode word boundary (UAX #29) to the next, holding a letter or digit.
_WORD = regex.compile(r"\b(?=_*[^\W_])\w.*?\b", flags=regex.WORD | regex.V1)
# Lucene's EnglishPossessiveFilter: an apostrophe (', ’ or ＇) and s at a word's end.
_POSSESSIVE = regex.compile(r"['\u2019\uff07][sS]$")
_PORTER = Stemmer.Stemmer("porter")
# Texts analysed at a time while indexing: only a batch's words are ever held as strings.
ANALYSIS_BATCH = 10_000
# Queries searched at a time: one `bm25s` call's memory grows with its queries (30,000
# against 300k passages took 2.2 GB more than 1,024 at a time).
QUERY_BATCH = 4096


def _stem(words: list[str]) -> list[str]:
  """Porter stems of `words`; as Lucene's PorterStemmer, words of 1 or 2 letters stay."""
  return [word if len(word) <= 2 else stem
          for word, stem in zip(words, _PORTER.stemWords(words))]


def analyze(texts: Sequence[str]) -> list[list[str]]:
  """Each text's words as Lucene's English analyzer gives them (the module's docstring)."""
  docs = [[word for word in (_POSSESSIVE.sub("", w).lower() for w in _WORD.findall(text))
           if word not in STOP_WORDS] for text in texts]
  vocabulary = list({word: None for doc in docs for word in doc})
  stems = dict(zip(vocabulary, _stem(vocabulary)))
  return [[stems[word] for word in doc] for doc in docs]


class WordIds(collections.abc.Sequence):
  """Texts as lists of word ids, stored flat: [T] int32 ids and [len + 1] int64 offsets,
  4 bytes a word and 8 a text (the lists are made when read, one at a time)."""

  def __init__(self, ids: np.ndarray, offsets: np.ndarray):
    self._ids, self._offsets = ids, offsets

  def __len__(self) -> int:
    return len(self._offsets) - 1

  def __getitem__(self, i: int) -> list[int]:
    if not -len(self) <= i < len(self):
      raise IndexError(f"text {i} of {len(self)}")
    i %= len(self)
    return self._ids[self._offsets[i]:self._offsets[i + 1]].tolist()


def analyze_ids(texts: Sequence[str], batch_size: int = ANALYSIS_BATCH
                ) -> "bm25s.tokenization.Tokenized":
  """`analyze(texts)` as word ids, analysed `batch_size` texts at a time, so that the words
  of one batch only are ever held as strings.

  Returns:
    Tokenized(ids: WordIds of the texts, vocab: {word: id}, ids 0, 1, ... in order of first
    appearance), as `bm25s.BM25.index` takes it.
  """
  vocab: dict[str, int] = {}
  ids, offsets = array.array("i"), array.array("q", [0])
  for start in range(0, len(texts), batch_size):
    for doc in analyze(texts[start:start + batch_size]):
      ids.extend(vocab.setdefault(word, len(vocab)) for word in doc)
      offsets.append(len(ids))
  return _bm25s().tokenization.Tokenized(
      ids=WordIds(np.frombuffer(ids, np.int32), np.frombuffer(offsets, np.int64)), vocab=vocab)


def index(corpus: Sequence[str], *, k1: float = 0.9, b: float = 0.4,
          analysis_batch: int = ANALYSIS_BATCH) -> "bm25s.BM25":
  """BM25's index of `corpus` (N texts), analysed `analysis_batch` texts at a time
  (`analyze_ids`; the index does not depend on it); k1, b: BM25's term-frequency saturation
  and length normalisation."""
  retriever = _bm25s().BM25(k1=k1, b=b, method="lucene")
  retriever.index(analyze_ids(corpus, analysis_batch), show_progress=False)
  return retriever


def retrieve(retriever: "bm25s.BM25", queries: Sequence[str], k: int,
             query_batch: int = QUERY_BATCH) -> tuple[np.ndarray, np.ndarray]:
  """The top `k` documents of each query in an `index`, `query_batch` queries analysed and
  searched at a time (the results do not depend on it).

  Returns:
    (scores [Q, k] float32, indices [Q, k] int64 into the indexed corpus), best first, as
    `retrieval.sharded_top_k`'s. A query with fewer than k documents sharing a word with it
    gets score-0 documents after those.
  """
  num_docs = retriever.scores["num_docs"]
  if not 0 < k <= num_docs:
    raise ValueError(f"k={k} must be in [1, {num_docs}] (the corpus size).")
  if query_batch < 1:
    raise ValueError(f"query_batch={query_batch} must be at least 1.")
  scores = np.zeros((len(queries), k), np.float32)
  indices = np.zeros((len(queries), k), np.int64)
  for start in range(0, len(queries), query_batch):
    part = slice(start, start + query_batch)
    indices[part], scores[part] = retriever.retrieve(analyze(queries[part]), k=k,
                                                     show_progress=False)
  return scores, indices


@gin.configurable(module="bm25")
def search(corpus: Sequence[str], queries: Sequence[str], k: int, *, k1: float = 0.9,
           b: float = 0.4, analysis_batch: int = ANALYSIS_BATCH,
           query_batch: int = QUERY_BATCH) -> tuple[np.ndarray, np.ndarray]:
  """The top `k` documents of each query by BM25: `retrieve` from `index(corpus)`.

  Args:
    corpus: N document texts.
    queries: Q query texts.
    k: results a query (at most N).
    k1, b, analysis_batch: as `index`'s.
    query_batch: queries searched at a time (`retrieve`); the results do not depend on it.

  Returns:
    (scores [Q, k] float32, indices [Q, k] int64 into `corpus`), best first.
  """
  return retrieve(index(corpus, k1=k1, b=b, analysis_batch=analysis_batch), queries, k,
                  query_batch)


def evaluate(eval_set: data_files.RetrievalSet, k: int = 1000
             ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """BM25's (metrics, run) on an evaluation set, as `evaluator.evaluate_set` scores a model."""
  query_ids, doc_ids = list(eval_set.qrels), list(eval_set.corpus)
  scores, indices = search([eval_set.corpus[d] for d in doc_ids],
                           [eval_set.queries[q] for q in query_ids], min(k, len(doc_ids)))
  return retrieval.scored_run(eval_set, query_ids, doc_ids, scores, indices)
