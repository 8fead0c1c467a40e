"""BEIR's format: a BEIR folder (zipped or not) read into an evaluation set or training pairs.

A BEIR folder (`nfcorpus/`, or the same inside its zip: `nfcorpus.zip/nfcorpus`) holds:

- `corpus.jsonl`: one `{"_id", "title", "text", "metadata"}` a line; titles are often "".
- `queries.jsonl`: one `{"_id", "text", "metadata"}` a line (no title).
- `qrels/{train,dev,test}.tsv`: the header `query-id<TAB>corpus-id<TAB>score`, then one
  judgment a line, CRLF line endings; not every set has every split.

Ids are strings even when they look numeric ("0012"): never cast. A document's text is
`(title + " " + text).strip()`, as BEIR's own dense models join them. In some sets query ids
are also corpus ids (ArguAna: a query is an argument of the corpus); the data is kept as is,
and the evaluation, as BEIR's, drops a retrieved document whose id equals the query's id.

Any such folder is an evaluation set by its path (`beir:<path>`, samtone_jax/eval_sets.py), and
its corpus a corpus to encode or mine from; tasks/beir.py registers BEIR's public sets.

Reference:
  Thakur et al., "BEIR: A Heterogenous Benchmark for Zero-shot Evaluation of Information
  Retrieval Models", NeurIPS 2021 Datasets and Benchmarks. https://arxiv.org/abs/2104.08663
"""

import pathlib
from typing import Any, Callable, Iterator, Optional

from samtone_jax import data_files

DataError = data_files.DataError


def _first_line(path: Any, key: str) -> int:
  """The number of the first line of a JSON-lines file whose "_id" is `key`."""
  return next(line_no for line_no, record in data_files.iter_jsonl(path)
              if record["_id"] == key)


def _read_records(path: Any, text_of: Callable[[dict, int], str]) -> dict[str, str]:
  """JSON lines with an "_id" -> {_id: text_of(record, line number)}, in file order.

  Raises:
    DataError: for bad JSON, a missing or mistyped field, or an id on two lines (naming
      both).
  """
  texts = {}
  for line_no, record in data_files.iter_jsonl(path):
    key = data_files.field(record, "_id", str, path, line_no)
    if key in texts:
      raise DataError(path, line_no, f"_id {key!r} again (first on line"
                                     f" {_first_line(path, key)}).")
    texts[key] = text_of(record, line_no)
  return texts


def read_corpus(path: Any) -> dict[str, str]:
  """Reads a BEIR `corpus.jsonl`.

  Args:
    path: the file, or its member in a zip (`nfcorpus.zip/nfcorpus/corpus.jsonl`).

  Returns:
    {_id: (title + " " + text).strip()}, in file order; a missing title counts as "" (as
    in BEIR's loader); "metadata" is not read.

  Raises:
    DataError: for bad JSON, a missing "_id" or "text", a field that is not a string, or a
      duplicate "_id", naming the file, line and field.
  """
  def text_of(record, line_no):
    title = data_files.field(record, "title", str, path, line_no) if "title" in record else ""
    return (title + " " + data_files.field(record, "text", str, path, line_no)).strip()
  return _read_records(path, text_of)


def read_queries(path: Any) -> dict[str, str]:
  """Reads a BEIR `queries.jsonl`.

  Args:
    path: the file, or its member in a zip.

  Returns:
    {_id: text}, texts as published, in file order.

  Raises:
    DataError: as `read_corpus`.
  """
  return _read_records(
      path, lambda record, line_no: data_files.field(record, "text", str, path, line_no))


def read_qrels(path: Any) -> dict[str, dict[str, int]]:
  """Reads a BEIR `qrels/<split>.tsv`.

  Args:
    path: the file, or its member in a zip.

  Returns:
    {query id: {corpus id: score}}; score 0 rows are kept (judged, not relevant). A pair
    judged twice with the same score is kept once.

  Raises:
    DataError: for a bad header or line, a score that is not an integer, or a pair judged
      twice with different scores (naming both lines).
  """
  return data_files.build_qrels(lambda: data_files.iter_qrels(path, "beir"), path)


def _paths(folder: Any, split: str) -> tuple[str, str, str]:
  """The corpus, queries and qrels files of a BEIR folder."""
  folder = pathlib.Path(folder)
  return (str(folder / "corpus.jsonl"), str(folder / "queries.jsonl"),
          str(folder / "qrels" / f"{split}.tsv"))


def eval_set(folder: Any, split: str = "test",
             name: Optional[str] = None) -> data_files.RetrievalSet:
  """A BEIR evaluation set: the queries judged in a split, against the whole corpus.

  Args:
    folder: the BEIR folder, plain or inside its zip (`.../nfcorpus.zip/nfcorpus`).
    split: the qrels file, `qrels/<split>.tsv`.
    name: the set's name; by default "<folder name>/<split>".

  Returns:
    A checked `RetrievalSet`: the queries that `qrels/<split>.tsv` judges (any score, as
    BEIR's loader keeps them), the whole corpus, and those qrels.

  Raises:
    DataError: for a bad file, or qrels that judge an unknown query or document.
  """
  corpus_path, queries_path, qrels_path = _paths(folder, split)
  qrels = read_qrels(qrels_path)
  queries = read_queries(queries_path)
  return data_files.RetrievalSet(
      queries={qid: text for qid, text in queries.items() if qid in qrels},
      corpus=read_corpus(corpus_path), qrels=qrels,
      name=name or f"{pathlib.Path(folder).name}/{split}").check(qrels_path)


def _judged_pairs(folder: Any, split: str) -> Iterator[dict[str, str]]:
  """(query, document) of each score > 0 row of `qrels/<split>.tsv`, in file order."""
  corpus_path, queries_path, qrels_path = _paths(folder, split)
  queries, corpus = read_queries(queries_path), read_corpus(corpus_path)
  for line_no, qid, doc_id, score in data_files.iter_qrels(qrels_path, "beir"):
    if score > 0:
      for key, texts, what in ((qid, queries, "query"), (doc_id, corpus, "document")):
        if key not in texts:
          raise DataError(qrels_path, line_no, f"unknown {what} id {key!r}.")
      yield {"query": queries[qid], "passage": corpus[doc_id], "query_id": qid,
             "passage_id": doc_id}


def iter_training_examples(folder: Any, split: str = "train") -> Iterator[dict[str, str]]:
  """Training pairs of a BEIR folder: (query, each document it judges relevant).

  Args:
    folder: the BEIR folder, plain or inside its zip.
    split: the qrels file, `qrels/<split>.tsv`.

  Returns:
    An iterator (lazy: the files are read on the first `next`) of {"query", "passage",
    "query_id", "passage_id"} (all str), one per qrels row with score > 0, in file order.
    Pairs with an empty query or document are dropped, and a warning counts them.

  Raises:
    DataError (while iterating): for a bad file, or a qrels id missing from the queries or
      corpus (naming the qrels file, line and id).
  """
  return data_files.drop_empty(_judged_pairs(folder, split), _paths(folder, split)[2])
