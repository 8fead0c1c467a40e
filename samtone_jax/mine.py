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

The pairs files are those of the own-data task (pairs_format.py: JSONL or TSV). The corpus
is every passage of them (positives and any negatives already there) and of the BEIR
`corpus.jsonl` files of MINE_CORPUS_FILES, counted once per text, or once per id where the
files give "passage_id" and "negative_ids" (a BEIR document is then its "_id"; likewise a
query once per "query_id"). Each query ranks the corpus; its known positives (every passage
it is paired with, in any file) are dropped, and so is the query itself where the corpus holds
its text (or, with ids, a document whose id is its query_id); then the first MINE_SKIP_TOP of
what is left (near-duplicates of the answer, likely unlabelled positives), and, with a dense
model and MINE_MARGIN = m, every document scoring above s(query, positive) - m. The first
MINE_TOP_N that remain are the example's negatives, best first: the search goes as deep as
that takes (up to the whole corpus), so a pair gets fewer only where the corpus has no more;
the log gives the pool sizes.

Negatives already in the input (MINE_INPUT_NEGATIVES): 'replace' (the default) writes the
mined ones in their place (they stay in the corpus, as candidates); 'keep' writes them first,
as given, then mined ones up to MINE_TOP_N in all. Blank texts are no pairs (an example with
a blank query or passage is dropped, a blank negative removed; both counted in the log).

With a dense model, the queries are embedded a batch at a time and held ([Q, E] float32:
1.5 GB for 500k queries of 768), and the corpus is embedded into shards on disk, as
`python -m samtone_jax.encode` writes them, in MINE_EMBEDDINGS_DIR (default
`<MINE_OUTPUT_FILE>.embeddings`; every host must see it): each process embeds its own
shards, and a later run of the same texts and model reuses them (a killed one embeds only
the missing shards). In the default directory, shards of other texts, another vocabulary,
model config, checkpoint or step are replaced; in a directory named by MINE_EMBEDDINGS_DIR,
they are refused, naming what differs (it may hold embeddings you want kept). The shards
are searched `chunk_rows` documents and `query_batch` queries at a time
(`retrieval.sharded_top_k`), and each deeper search for short pools searches them again for
those queries only: no host holds the corpus's token ids or embeddings, whatever the
numbers of queries and passages. BM25 mining indexes the corpus in memory and searches it
`query_batch` queries at a time.

The output has one line per input pair, {"query", "passage", "negatives"} (and the input's
ids as given, strings or numbers, with "negative_ids" beside passage ids), for the task
own_pairs_with_negatives, which draws NUM_NEGATIVES of them each epoch.
"""

if __name__ == "__main__":  # a program: the host set up before these imports load TensorFlow
  from samtone_jax import launch as _launch  # pylint: disable=g-import-not-at-top
  _launch.setup_host()

import collections.abc
import dataclasses
import json
import logging
import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import gin
import jax
import numpy as np

from samtone_jax import (atomic, beir_format, bm25, data_files, dual_encoder, embedder,
                         embedding_shards, launch, pairs_format, retrieval)

_LOG = logging.getLogger("samtone_jax.mine")
# MINE_MARGIN's positives are read from the shards in runs: rows at most POSITIVE_GAP apart,
# spanning fewer than POSITIVE_RUN rows (12 MiB of 768-wide float32 embeddings).
POSITIVE_GAP = 64
POSITIVE_RUN = 4096


def negatives(ranked: np.ndarray, scores: np.ndarray, positives: set, *, top_n: int,
              skip_top: int = 0, max_score: Optional[float] = None) -> list[int]:
  """One query's negatives from its ranking.

  Args:
    ranked: [n] document indices, best first (< 0: none, ignored).
    scores: [n] their scores.
    positives: the documents that are none of its negatives (the query's known positives,
      the query itself).
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


def mined_pools(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                queries: Sequence[int], excluded: Sequence[set], wanted: Sequence[int], *,
                corpus_size: int, depth: int, skip_top: int = 0,
                max_scores: Optional[Sequence[float]] = None) -> list[list[int]]:
  """Each pair's `negatives`, searching deeper for the pairs that come up short.

  A pair is short when fewer than it wants remain of its query's `depth` best documents
  (the margin drops many where the positive ranks low): its query is searched again twice
  as deep, until it is not, or the search covers the corpus. The result is that of ranking
  the whole corpus for every query.

  Args:
    search: (query indices [m], depth) -> (scores [m, depth], their document indices
      [m, depth], best first), as `retrieval.sharded_top_k`'s.
    queries: [P] each pair's query index.
    excluded: [P] each pair's documents that are none of its negatives (its positives...).
    wanted: [P] the negatives each pair takes at most.
    corpus_size: the documents searched.
    depth: the first search's depth.
    skip_top: as `negatives`'.
    max_scores: [P] as `negatives`' max_score (None: no margin).

  Returns:
    [P] lists of document indices, best first.
  """
  pools: list[list[int]] = [[] for _ in queries]
  todo = [i for i, n in enumerate(wanted) if n > 0]
  while todo:
    depth = min(depth, corpus_size)
    rows = sorted({queries[i] for i in todo})
    row_of = {q: r for r, q in enumerate(rows)}
    _LOG.info("Searching %d queries %d deep.", len(rows), depth)
    scores, ranked = search(np.asarray(rows), depth)
    for i in todo:
      r = row_of[queries[i]]
      pools[i] = negatives(ranked[r], scores[r], excluded[i], top_n=wanted[i],
                           skip_top=skip_top,
                           max_score=None if max_scores is None else max_scores[i])
    todo = [i for i in todo if len(pools[i]) < wanted[i]] if depth < corpus_size else []
    depth *= 2
  return pools


class _Items:
  """Items counted once, in order of first appearance: by their id where the files give ids,
  else by their normalised text (as content ids count them)."""

  def __init__(self):
    self.texts: list[str] = []
    self.ids: list[Any] = []
    self._index: dict[tuple[str, str], int] = {}

  def add(self, text: str, item_id: Any = None) -> int:
    """The item's index; `item_id` (a string or a number, one item for "7" and 7) as given
    by its first appearance."""
    key = (("text", data_files.normalize_text(text)) if item_id is None
           else ("id", pairs_format.id_text(item_id)))
    if key not in self._index:
      self._index[key] = len(self.texts)
      self.texts.append(text)
      self.ids.append(item_id)
    return self._index[key]

  def with_id(self, item_id: Any) -> Optional[int]:
    """The index of the item of id `item_id`, if any."""
    return self._index.get(("id", pairs_format.id_text(item_id)))


def mine(*, input_files: Sequence[str] = gin.REQUIRED, output_file: str = gin.REQUIRED,
         corpus_files: Sequence[str] = (), method: str = "dense", top_n: int = 30,
         skip_top: int = 0, margin: Optional[float] = None, input_negatives: str = "replace",
         model: Optional[dual_encoder.DualEncoder] = None,
         checkpoint_path: Optional[str] = None, task_feature_lengths: Optional[dict] = None,
         mixture_or_task_name: Optional[str] = None, vocabulary=None, num_partitions: int = 1,
         batch_size: int = 256, embeddings_dir: Optional[str] = None,
         shard_size: int = 100_000, chunk_rows: int = 1_000_000,
         query_batch: int = retrieval.QUERY_BATCH) -> dict[str, float]:
  """Mines negatives for every pair of `input_files`; writes `output_file`.

  Args:
    input_files: pairs files (MINE_INPUT_FILES).
    output_file: the pairs with their negatives, JSONL (MINE_OUTPUT_FILE).
    corpus_files: more documents: BEIR corpus.jsonl files (MINE_CORPUS_FILES).
    method: "dense" (model at checkpoint_path) or "bm25".
    top_n, skip_top, margin: see the module docstring (MINE_TOP_N, MINE_SKIP_TOP,
      MINE_MARGIN; margin only with a dense model, whose scores are cosines).
    input_negatives: "replace" or "keep" the input's negatives (MINE_INPUT_NEGATIVES).
    model, checkpoint_path, task_feature_lengths, mixture_or_task_name, vocabulary,
      num_partitions, batch_size: the dense model and how to run it, as in `evaluate`.
    embeddings_dir: where the corpus's embeddings go (MINE_EMBEDDINGS_DIR; None:
      `<output_file>.embeddings`, whose embeddings of other texts or another model are
      replaced; those of a directory named here are refused instead).
    shard_size: rows a shard of embeddings.
    chunk_rows: documents searched at a time (dense: `retrieval.sharded_top_k`).
    query_batch: queries searched at a time (dense: `retrieval.sharded_top_k`; BM25:
      `bm25.search`).

  Returns:
    Counts, the same in every process: pairs, queries, corpus, and pairs whose pool holds
    fewer than top_n negatives ("short").
  """
  if method not in ("dense", "bm25"):
    raise ValueError(f"MINE_METHOD must be 'dense' or 'bm25', got {method!r}.")
  if method == "bm25" and margin is not None:
    raise ValueError("MINE_MARGIN needs a dense model: BM25 scores have no common scale.")
  if not isinstance(top_n, int) or top_n < 1 or not isinstance(skip_top, int) or skip_top < 0:
    raise ValueError(f"MINE_TOP_N must be an int >= 1 and MINE_SKIP_TOP an int >= 0, got"
                     f" {top_n!r} and {skip_top!r}.")
  if input_negatives not in ("replace", "keep"):
    raise ValueError(f"MINE_INPUT_NEGATIVES must be 'replace' or 'keep', got"
                     f" {input_negatives!r}.")
  if isinstance(input_files, str) or not input_files:
    raise ValueError(f"MINE_INPUT_FILES must be a non-empty list of paths, got"
                     f" {input_files!r}.")
  start, keep = time.time(), input_negatives == "keep"
  corpus, queries = _Items(), _Items()
  pairs, positives, first_ids = [], {}, None
  for path in input_files:
    read = len(pairs)
    for example in data_files.drop_empty(pairs_format.read_examples(path), path):
      ids = {name: example[name] for name in pairs_format.id_fields(example)}
      first_ids = list(ids) if first_ids is None else first_ids
      pairs_format.check_id_fields(path, list(ids), input_files[0], first_ids)
      q = queries.add(example["query"], ids.get("query_id"))
      p = corpus.add(example["passage"], ids.get("passage_id"))
      positives.setdefault(q, set()).add(p)
      given = [(text, corpus.add(text, example["negative_ids"][i] if "passage_id" in ids
                                 else None))
               for i, text in enumerate(example["negatives"])]
      pairs.append(_Pair(example, ids, q, p, given))
    if len(pairs) == read:
      raise data_files.DataError(path, None, "no pairs (an empty file, or only blank texts):"
                                             " check MINE_INPUT_FILES.")
  by_id = "passage_id" in first_ids  # a BEIR document is its _id then
  for path in corpus_files:
    for doc_id, text in beir_format.read_corpus(path).items():
      corpus.add(text, doc_id if by_id else None)
  _LOG.info("Mining %d pairs (%d queries) against %d documents with %s.", len(pairs),
            len(queries.texts), len(corpus.texts), method)
  num_given = sum(len(pair.given) for pair in pairs)
  if num_given:
    _LOG.warning("The input's pairs hold %d negatives: %s (MINE_INPUT_NEGATIVES=%r).",
                 num_given,
                 "written first, then mined ones up to MINE_TOP_N" if keep
                 else "replaced by mined ones", input_negatives)

  same_text = {}  # a document with a positive's or the query's text is no negative either
  for d, text in enumerate(corpus.texts):
    same_text.setdefault(data_files.normalize_text(text), set()).add(d)
  of_query = {q: _excluded(q, known, queries, corpus, same_text, by_id)
              for q, known in positives.items()}
  excluded = [of_query[pair.q] | {d for _, d in pair.given} if keep else of_query[pair.q]
              for pair in pairs]
  wanted = [top_n - len(pair.given) if keep else top_n for pair in pairs]
  depth = top_n + skip_top + max(map(len, excluded))
  if method == "bm25":
    search = lambda rows, k: bm25.search(corpus.texts, [queries.texts[q] for q in rows], k,
                                         query_batch=query_batch)
    max_scores = None
  else:
    if model is None or checkpoint_path is None or task_feature_lengths is None:
      raise ValueError("dense mining needs MODEL, CHECKPOINT_PATH and TASK_FEATURE_LENGTHS"
                       " (a run's config.gin gives MODEL and the lengths); or use"
                       " runs/mine_bm25.gin.")
    embed = embedder.Embedder.from_checkpoint(
        model, checkpoint_path, task_feature_lengths,  # pinned once, for every process
        vocabulary=embedder.resolve_vocabulary(vocabulary, mixture_or_task_name),
        num_partitions=num_partitions, batch_size=batch_size)
    # The queries are held embedded (searched once a chunk, and each pair's margin needs its
    # query's); the corpus goes into shards on disk (reused when of the same texts and
    # encoder; in the default directory made again when not, else refused).
    query_emb = embed.queries(queries.texts)
    shards = embed.encode_corpus(embeddings_dir or f"{output_file}.embeddings",
                                 _RowTexts(corpus.texts), shard_size=shard_size,
                                 replace=embeddings_dir is None)
    search = lambda rows, k: retrieval.sharded_top_k(
        embed.mesh, _Rows(query_emb, rows), shards, k, chunk_rows=chunk_rows,
        query_batch=query_batch)
    max_scores = None if margin is None else [
        score - margin for score in _positive_scores(pairs, query_emb, shards)]
  mined = mined_pools(search, [pair.q for pair in pairs], excluded, wanted,
                      corpus_size=len(corpus.texts), depth=depth, skip_top=skip_top,
                      max_scores=max_scores)

  records = (_record(pair, found, corpus, by_id, keep) for pair, found in zip(pairs, mined))
  out = pathlib.Path(output_file)
  sizes = []
  if jax.process_index() == 0:
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(f):
      for record in records:
        sizes.append(len(record["negatives"]))
        f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    atomic.write_atomically(out, write)  # a crash leaves no half-written negatives file
  else:
    sizes = [len(record["negatives"]) for record in records]
  short = sum(size < top_n for size in sizes)
  counts = {"pairs": len(pairs), "queries": len(queries.texts),
            "corpus": len(corpus.texts), "short": short}
  _LOG.info("Wrote %s: %s in %.1f s. Negatives a pair: min %d, median %g, max %d%s.", out,
            counts, time.time() - start, min(sizes), np.median(sizes), max(sizes),
            f"; {short} pairs got fewer than MINE_TOP_N={top_n} (the corpus has no more"
            " candidates for them)" if short else "")
  return counts


class _RowTexts(collections.abc.Mapping):
  """A list of texts as the {id: text} that `embedding_shards.encode` embeds: row i's id is
  str(i). No copy of the texts."""

  def __init__(self, texts: Sequence[str]):
    self._texts = texts

  def __getitem__(self, row_id: str) -> str:
    return self._texts[int(row_id)]

  def __iter__(self):
    return map(str, range(len(self._texts)))

  def __len__(self) -> int:
    return len(self._texts)


class _Rows:
  """Rows of an array ([m] indices) read as an [m, ...] array by `len()` and `[a:b]`, without
  copying them all."""

  def __init__(self, array: np.ndarray, rows: np.ndarray):
    self._array, self._rows = array, rows

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, part: slice) -> np.ndarray:
    return self._array[self._rows[part]]


def _positive_scores(pairs: Sequence["_Pair"], query_emb: np.ndarray,
                     shards: embedding_shards.EmbeddingShards) -> list[float]:
  """[P] each pair's s(query, positive), the positives' rows read from the shards in runs
  (see POSITIVE_GAP), not the whole matrix: the pairs' passages come first in the corpus,
  so that the runs are few."""
  of_row: dict[int, list[int]] = {}
  for i, pair in enumerate(pairs):
    of_row.setdefault(pair.p, []).append(i)
  needed = sorted(of_row)
  scores, first = [0.0] * len(pairs), 0
  for last, row in enumerate(needed):
    if (last + 1 < len(needed) and needed[last + 1] - row <= POSITIVE_GAP
        and needed[last + 1] - needed[first] < POSITIVE_RUN):
      continue
    start = needed[first]
    rows = shards[start:row + 1]
    for p in needed[first:last + 1]:
      for i in of_row[p]:
        scores[i] = float(query_emb[pairs[i].q] @ rows[p - start])
    first = last + 1
  return scores


@dataclasses.dataclass
class _Pair:
  """An input pair: its example, id fields as given, query and passage indices, and its
  given negatives as (text, corpus index)."""
  example: dict[str, Any]
  ids: dict[str, Any]
  q: int
  p: int
  given: list[tuple[str, int]]


def _record(pair: _Pair, found: list[int], corpus: _Items, by_id: bool,
            keep: bool) -> dict[str, Any]:
  """A pair's output line: its texts and ids as given, its negatives (with keep, its given
  ones first) and their ids."""
  example = pair.example
  record = {"query": example["query"], "passage": example["passage"], **pair.ids,
            "negatives": example["negatives"] * keep + [corpus.texts[d] for d in found]}
  if by_id:
    record["negative_ids"] = example.get("negative_ids", []) * keep + [corpus.ids[d] for d in found]
  return record


def _excluded(q: int, known: set, queries: _Items, corpus: _Items, same_text: dict[str, set],
              by_id: bool) -> set:
  """The documents that are none of query q's negatives: its known positives and those with
  a positive's text; the query itself (its text, or with ids its query_id)."""
  texts = {data_files.normalize_text(corpus.texts[d]) for d in known}
  texts.add(data_files.normalize_text(queries.texts[q]))
  out = set(known).union(*(same_text.get(t, ()) for t in texts))
  query_id = queries.ids[q]
  itself = corpus.with_id(query_id) if by_id and query_id is not None else None
  if itself is not None:
    out.add(itself)
  return out


def main(argv: Optional[Sequence[str]] = None) -> None:
  launch.run_configurable(mine, argv)


if __name__ == "__main__":
  # Run the module's canonical copy, which the gin files bind, not this __main__ copy.
  from samtone_jax import mine as _mine_module  # pylint: disable=g-import-not-at-top
  _mine_module.main()
