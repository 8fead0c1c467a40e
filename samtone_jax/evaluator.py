"""Corpus-level evaluation, built once and called with an `Embedder` at each evaluation.

  evaluator = Evaluator(["stdlib_code_search_test", "beir:/data/nfcorpus"], k=1000)
  results = evaluator(embedder)   # {set: {metric: value}}

The sets are read, and their names checked (`eval_sets.short_names`: a `beir:<folder>` set
is reported as `beir_<folder name>`), when the Evaluator is built, before any model is
loaded. Each call ranks every judged query of a set against its whole corpus (top k, the
full pool when it is smaller: then MRR is over the whole pool, as the paper's) and scores
the ranking (`metrics.compute_metrics`: P@1, MRR, MRR@10, Recall@k, nDCG@k). A corpus of over
`stream_above` documents is embedded into shards in `embeddings_dir`/<set>
(`Embedder.encode_corpus`: resumed if of the same texts and source, replaced if not) and
searched a chunk at a time, in memory bounded by the chunk; any other is embedded and
searched in memory. With `baselines` = ["bm25"], each set also gets BM25's row,
`<set>_bm25`, scored the same way (samtone_jax/bm25.py).
"""

import json
import logging
import pathlib
from typing import Optional, Sequence

import jax
import numpy as np

from samtone_jax import atomic, bm25, data_files, retrieval, run_dir
from samtone_jax import embedder as embedder_lib
from samtone_jax import eval_sets as eval_sets_lib

_LOG = logging.getLogger("samtone_jax.evaluator")
BASELINES = ("bm25",)
# Documents of a streamed corpus read from its shards at a time.
CHUNK_ROWS = 1_000_000
Run = dict[str, dict[str, float]]


def evaluate_set(embedder: embedder_lib.Embedder, eval_set: data_files.RetrievalSet, k: int,
                 corpus_dir: Optional[pathlib.Path] = None, chunk_rows: int = CHUNK_ROWS
                 ) -> tuple[dict[str, float], Run]:
  """(metrics, run) of one evaluation set: its judged queries against its whole corpus.

  A retrieved document whose id is the query's is dropped, as BEIR does. With
  `corpus_dir`, the corpus is embedded into shards there and searched `chunk_rows` at a
  time; without, it is embedded and searched in memory.

  Returns:
    metrics: `metrics.compute_metrics` of the run.
    run: {query id: {document id: score}}.
  """
  query_ids, doc_ids = list(eval_set.qrels), list(eval_set.corpus)
  queries = embedder.queries([eval_set.queries[q] for q in query_ids])
  if corpus_dir is None:
    corpus = embedder.passages(list(eval_set.corpus.values()))
  else:
    corpus = embedder.encode_corpus(corpus_dir, eval_set.corpus, replace=True)
  scores, indices = retrieval.sharded_top_k(embedder.mesh, queries, corpus,
                                            k=min(k, len(doc_ids)), chunk_rows=chunk_rows)
  return retrieval.scored_run(eval_set, query_ids, doc_ids, np.asarray(scores),
                              np.asarray(indices))


def write_trec_run(path: pathlib.Path, run: Run) -> None:
  """TREC's run format: `qid Q0 docid rank score tag`, best first."""
  lines = (f"{qid} Q0 {doc} {rank} {score:.6f} samtone_jax\n"
           for qid, scores in run.items()
           for rank, (doc, score) in enumerate(
               sorted(scores.items(), key=lambda kv: -kv[1]), start=1))
  atomic.write_atomically(path, lambda f: f.writelines(line.encode("utf-8") for line in lines))


class Evaluator:
  """The evaluation sets of a run, read once; called with an Embedder at each evaluation.

  Args:
    eval_tasks: evaluation set names (EVAL_TASKS; tasks/eval_sets.py): () for none.
    k: documents ranked a query.
    baselines: () or ["bm25"] (EVAL_BASELINES): rows of a first-stage baseline beside the
      model's.
    embeddings_dir: where corpus shards go, one folder a set (None: every corpus in memory).
    stream_above: a corpus of more documents than this goes through shards in
      `embeddings_dir` (0: every one).

  Raises:
    KeyError: an unknown set (naming the registered ones).
    ValueError: sets that would be reported under one name; an unknown baseline.
  """

  def __init__(self, eval_tasks: Sequence[str], *, k: int = 1000,
               baselines: Sequence[str] = (),
               embeddings_dir: Optional[pathlib.Path] = None, stream_above: int = 0):
    if set(baselines) - set(BASELINES):
      raise ValueError(f"EVAL_BASELINES may hold 'bm25', got {list(baselines)!r}.")
    self.sets = {short: eval_sets_lib.get(name)  # unknown names and names that clash fail now
                 for name, short in eval_sets_lib.short_names(eval_tasks).items()}
    self.k, self.baselines = k, tuple(baselines)
    self.embeddings_dir, self.stream_above = embeddings_dir, stream_above

  def __call__(self, embedder: embedder_lib.Embedder, output: Optional[run_dir.EvalDir] = None
               ) -> dict[str, dict[str, float]]:
    """{row: {metric: value}} of each set (and baseline row) for `embedder`; with `output`,
    process 0 also writes each row's TREC run file and metrics.json there."""
    results = {}
    for name, eval_set in self.sets.items():
      streamed = (self.embeddings_dir is not None
                  and len(eval_set.corpus) > self.stream_above)
      rows = {name: evaluate_set(embedder, eval_set, self.k,
                                 self.embeddings_dir / name if streamed else None)}
      if "bm25" in self.baselines:
        rows[f"{name}_bm25"] = bm25.evaluate(eval_set, self.k)
      for row, (found, run) in rows.items():
        results[row] = found
        if output is not None and jax.process_index() == 0:
          write_trec_run(output.trec_run(row), run)
        _LOG.info("%s: %s", row, json.dumps({m: round(v, 4) for m, v in found.items()}))
    if output is not None and jax.process_index() == 0:
      atomic.write_atomically(output.metrics, json.dumps(results, indent=2, sort_keys=True))
    return results
