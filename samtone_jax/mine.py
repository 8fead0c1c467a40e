r"""Hard negatives for your own pairs: `python -m samtone_jax.mine --gin_file=...`.

  # With a dense model (a run's config.gin, CHECKPOINT_PATH its MODEL_DIR, a checkpoint,
  # or a Hugging Face T5 / sentence-transformers folder):
  python -m samtone_jax.mine --gin_file=/runs/first/config.gin --gin_file=runs/mine.gin \
      --gin.CHECKPOINT_PATH="'/runs/first'" \
      --gin.MINE_INPUT_FILES="['/data/train.jsonl']" \
      --gin.MINE_OUTPUT_FILE="'/data/train.mined.jsonl'"
  # With BM25, before any dense model exists:
  python -m samtone_jax.mine --gin_file=runs/mine_bm25.gin \
      --gin.MINE_INPUT_FILES="['/data/train.jsonl']" \
      --gin.MINE_OUTPUT_FILE="'/data/train.bm25.jsonl'"

The pairs files are those of the own-data task (tasks/own_data.py: JSONL or TSV). The corpus
is every passage of them (positives and any negatives already there) and of the BEIR
`corpus.jsonl` files of MINE_CORPUS_FILES, counted once per text, or once per id where the
files give "passage_id" and "negative_ids" (a BEIR document is then its "_id"; likewise a
query once per "query_id"). Each query retrieves its top documents; its known positives
(every passage it is paired with, in any file) are dropped, then the first MINE_SKIP_TOP of
what is left (near-duplicates of the answer, likely unlabelled positives), and, with a dense
model and MINE_MARGIN = m, every document scoring above s(query, positive) - m. The first
MINE_TOP_N that remain are the example's negatives, best first. The output has one line per
input pair, {"query", "passage", "negatives"} (and the input's ids, with "negative_ids"
beside passage ids), for the task own_pairs_with_negatives, which draws NUM_NEGATIVES of
them each epoch.
"""

import json
import logging
import pathlib
import time
from typing import Optional, Sequence

import gin
import jax
import numpy as np

from samtone_jax import bm25, data_files, dual_encoder, launch, partitioning, retrieval, run_dir
from samtone_jax.tasks import beir, own_data

_LOG = logging.getLogger("samtone_jax.mine")


def negatives(ranked: np.ndarray, scores: np.ndarray, positives: set, *, top_n: int,
              skip_top: int = 0, max_score: Optional[float] = None) -> list[int]:
  """One query's negatives from its ranking.

  Args:
    ranked: [n] document indices, best first (< 0: none, ignored).
    scores: [n] their scores.
    positives: the indices of the query's known positives.
    top_n: negatives to keep at most.
    skip_top: non-positive documents skipped at the top of the ranking.
    max_score: documents scoring above it are dropped (likely false negatives).

  Returns:
    Up to top_n indices, best first.
  """
  kept = [int(d) for d in ranked if d >= 0 and int(d) not in positives][skip_top:]
  if max_score is not None:
    score_of = dict(zip(ranked.tolist(), scores.tolist()))
    kept = [d for d in kept if score_of[d] <= max_score]
  return kept[:top_n]


class _Items:
  """Items counted once, in order of first appearance: by their id where the files give ids,
  else by their normalised text (as content ids count them)."""

  def __init__(self):
    self.texts: list[str] = []
    self.ids: list[Optional[str]] = []
    self._index: dict[tuple[str, str], int] = {}

  def add(self, text: str, item_id: Optional[str] = None) -> int:
    key = ("text", data_files.normalize_text(text)) if item_id is None else ("id", item_id)
    if key not in self._index:
      self._index[key] = len(self.texts)
      self.texts.append(text)
      self.ids.append(item_id)
    return self._index[key]


def mine(*, input_files: Sequence[str] = gin.REQUIRED, output_file: str = gin.REQUIRED,
         corpus_files: Sequence[str] = (), method: str = "dense", top_n: int = 30,
         skip_top: int = 0, margin: Optional[float] = None,
         model: Optional[dual_encoder.DualEncoder] = None,
         checkpoint_path: Optional[str] = None, task_feature_lengths: Optional[dict] = None,
         mixture_or_task_name: Optional[str] = None, num_partitions: int = 1,
         batch_size: int = 256) -> dict[str, float]:
  """Mines negatives for every pair of `input_files`; writes `output_file`.

  Args:
    input_files: pairs files (MINE_INPUT_FILES).
    output_file: the pairs with their negatives, JSONL (MINE_OUTPUT_FILE).
    corpus_files: more documents: BEIR corpus.jsonl files (MINE_CORPUS_FILES).
    method: "dense" (model at checkpoint_path) or "bm25".
    top_n, skip_top, margin: see the module docstring (MINE_TOP_N, MINE_SKIP_TOP,
      MINE_MARGIN; margin only with a dense model, whose scores are cosines).
    model, checkpoint_path, task_feature_lengths, mixture_or_task_name, num_partitions,
      batch_size: the dense model and how to run it, as in `evaluate`.

  Returns:
    Counts: pairs, corpus, and pairs that got fewer than top_n negatives ("short").
  """
  if method not in ("dense", "bm25"):
    raise ValueError(f"MINE_METHOD must be 'dense' or 'bm25', got {method!r}.")
  if method == "bm25" and margin is not None:
    raise ValueError("MINE_MARGIN needs a dense model: BM25 scores have no common scale.")
  if not isinstance(top_n, int) or top_n < 1 or not isinstance(skip_top, int) or skip_top < 0:
    raise ValueError(f"MINE_TOP_N must be an int >= 1 and MINE_SKIP_TOP an int >= 0, got"
                     f" {top_n!r} and {skip_top!r}.")
  if isinstance(input_files, str) or not input_files:
    raise ValueError(f"MINE_INPUT_FILES must be a non-empty list of paths, got"
                     f" {input_files!r}.")
  start = time.time()
  corpus, queries = _Items(), _Items()
  pairs, positives, first_ids = [], {}, None
  for path in input_files:
    for example in own_data.read_examples(path):
      ids = {name: example[name] for name in own_data.id_fields(example)}
      first_ids = list(ids) if first_ids is None else first_ids
      own_data.check_id_fields(path, list(ids), input_files[0], first_ids)
      q = queries.add(example["query"], ids.get("query_id"))
      p = corpus.add(example["passage"], ids.get("passage_id"))
      positives.setdefault(q, set()).add(p)
      for i, text in enumerate(example["negatives"]):
        corpus.add(text, example["negative_ids"][i] if "passage_id" in ids else None)
      pairs.append((example["query"], example["passage"], ids, q, p))
  by_id = "passage_id" in (first_ids or ())  # a BEIR document is its _id then
  for path in corpus_files:
    for doc_id, text in beir.read_corpus(path).items():
      corpus.add(text, doc_id if by_id else None)
  _LOG.info("Mining %d pairs (%d queries) against %d documents with %s.", len(pairs),
            len(queries.texts), len(corpus.texts), method)

  if by_id:  # a document with a positive's text is no negative either, whatever its id
    same_text = {}
    for d, text in enumerate(corpus.texts):
      same_text.setdefault(data_files.normalize_text(text), set()).add(d)
    positives = {q: set().union(*(same_text[data_files.normalize_text(corpus.texts[d])]
                                  for d in known)) for q, known in positives.items()}
  depth = min(len(corpus.texts), top_n + skip_top + max(map(len, positives.values())))
  if method == "bm25":
    ranked, scores = bm25.search(corpus.texts, queries.texts, depth)
    positive_scores = None
  else:
    if model is None or checkpoint_path is None or task_feature_lengths is None:
      raise ValueError("dense mining needs MODEL, CHECKPOINT_PATH and TASK_FEATURE_LENGTHS"
                       " (a run's config.gin gives MODEL and the lengths); or use"
                       " runs/mine_bm25.gin.")
    mesh = partitioning.create_mesh(num_partitions)
    params = run_dir.load_params(model, run_dir.pinned_checkpoint(checkpoint_path)[0],
                                 task_feature_lengths, mesh)  # one step for every process
    vocabulary = run_dir.vocabulary(mixture_or_task_name)
    encode_queries, encode_passages = run_dir.encoders(model)
    query_emb = retrieval.encode(encode_queries, params, retrieval.tokenize(
        queries.texts, vocabulary, task_feature_lengths["queries"]), mesh, batch_size)
    corpus_emb = retrieval.encode(encode_passages, params, retrieval.tokenize(
        corpus.texts, vocabulary, task_feature_lengths["passages"]), mesh, batch_size)
    scores, ranked = map(np.asarray, retrieval.sharded_top_k(mesh, query_emb, corpus_emb,
                                                             depth))
    positive_scores = {(q, p): float(query_emb[q] @ corpus_emb[p])
                       for _, _, _, q, p in pairs}

  short = 0
  out = pathlib.Path(output_file)
  out.parent.mkdir(parents=True, exist_ok=True)
  partial = out.with_name(out.name + ".partial")
  if jax.process_index() == 0:
    with open(partial, "w", encoding="utf-8") as f:
      for query, passage, ids, q, p in pairs:
        max_score = None if margin is None else positive_scores[q, p] - margin
        found = negatives(ranked[q], scores[q], positives[q], top_n=top_n, skip_top=skip_top,
                          max_score=max_score)
        short += len(found) < top_n
        record = {"query": query, "passage": passage, **ids,
                  "negatives": [corpus.texts[d] for d in found]}
        if by_id:
          record["negative_ids"] = [corpus.ids[d] for d in found]
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(out)  # a crash leaves no half-written negatives file
  counts = {"pairs": len(pairs), "queries": len(queries.texts),
            "corpus": len(corpus.texts), "short": short}
  _LOG.info("Wrote %s: %s in %.1f s%s.", out, counts, time.time() - start,
            f" ({short} pairs got fewer than MINE_TOP_N={top_n} negatives)" if short else "")
  return counts


def main(argv: Optional[Sequence[str]] = None) -> None:
  launch.run_configurable(mine, argv)


if __name__ == "__main__":
  # Run the module's canonical copy, which the gin files bind, not this __main__ copy.
  from samtone_jax import mine as _mine_module  # pylint: disable=g-import-not-at-top
  _mine_module.main()
