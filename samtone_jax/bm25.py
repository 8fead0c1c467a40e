"""BM25 through the `bm25s` library: the lexical first stage (mining) and baseline row.

Texts are lower-cased and split into words of two or more letters or digits, English stop
words removed (bm25s's tokenizer), and scored with Lucene's BM25 at Anserini's defaults
k1 = 0.9, b = 0.4, the usual BM25 rows of MS MARCO and BEIR.

References:
  Lù, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring",
  2024. https://arxiv.org/abs/2407.03618
"""

from typing import Sequence

import bm25s
import gin
import numpy as np

from samtone_jax import data_files, retrieval


@gin.configurable(module="bm25")
def search(corpus: Sequence[str], queries: Sequence[str], k: int, *, k1: float = 0.9,
           b: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
  """The top `k` documents of each query by BM25.

  Args:
    corpus: N document texts.
    queries: Q query texts.
    k: results a query (at most N).
    k1, b: BM25's term-frequency saturation and length normalisation.

  Returns:
    (indices [Q, k] int into `corpus`, scores [Q, k] float32), best first. A query with
    fewer than k documents sharing a word with it gets score-0 documents after those.
  """
  if not 0 < k <= len(corpus):
    raise ValueError(f"k={k} must be in [1, {len(corpus)}] (the corpus size).")
  retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
  retriever.index(bm25s.tokenize(list(corpus), stopwords="en", show_progress=False),
                  show_progress=False)
  indices, scores = retriever.retrieve(
      bm25s.tokenize(list(queries), stopwords="en", show_progress=False), k=k,
      show_progress=False)
  return np.asarray(indices), np.asarray(scores, np.float32)


def evaluate(eval_set: data_files.RetrievalSet, k: int = 1000
             ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """BM25's (metrics, run) on an evaluation set, as `retrieval.evaluate` scores a model."""
  query_ids, doc_ids = list(eval_set.qrels), list(eval_set.corpus)
  indices, scores = search([eval_set.corpus[d] for d in doc_ids],
                           [eval_set.queries[q] for q in query_ids], min(k, len(doc_ids)))
  return retrieval.scored_run(eval_set, query_ids, doc_ids, scores, indices)
