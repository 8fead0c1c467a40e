"""MS MARCO passage ranking, read from its official files.

Layout: every file directly in `data_dir`, under its official name (`FILES`), as the MS MARCO
site publishes them (collectionandqueries.tar.gz, queries.tar.gz, qrels.*.tsv, the triples),
extracted; `data_dir` may also be a folder inside a zip (`archive.zip/msmarco`):

- `collection.tsv`: `pid<TAB>text`. Pids are not contiguous: a pid is never a line number.
  Passages contain double-encoded UTF-8 (mojibake, e.g. "cafÃ©"), kept as published.
- `queries.{train,dev,dev.small}.tsv`: `qid<TAB>text`. Texts may carry spaces and U+00A0
  around them: surrounding whitespace is stripped, the rest kept.
- `qrels.{train,dev,dev.small}.tsv`: TREC qrels `qid 0 pid label`, TAB- or space-separated;
  TREC DL's qrels use `Q0` and graded labels, 0 (judged not relevant) included.
- `triples.train.small.tsv`: `query<TAB>positive<TAB>negative`, three texts, no ids.
- `qidpidtriples.train.full.2.tsv`: `qid<TAB>positive pid<TAB>negative pid`.

Ids are strings, as published (never cast to int). A malformed line, bytes that are not UTF-8,
a missing file, a duplicate id or an unknown id raise `data_files.DataError` naming the file
and line.

Reference:
  Nguyen et al., "MS MARCO: A Human Generated MAchine Reading Comprehension Dataset", 2016.
  https://arxiv.org/abs/1611.09268 ; files: https://microsoft.github.io/msmarco/Datasets
"""

import pathlib
from typing import Any, Callable, Iterator, Optional

import tensorflow_datasets as tfds

from samtone_jax import data_files, eval_sets
from samtone_jax.tasks import pairs, vocabularies

DataError = data_files.DataError

FILES = {
    "collection": "collection.tsv",
    "queries.train": "queries.train.tsv",
    "queries.dev": "queries.dev.tsv",
    "queries.dev.small": "queries.dev.small.tsv",
    "qrels.train": "qrels.train.tsv",
    "qrels.dev": "qrels.dev.tsv",
    "qrels.dev.small": "qrels.dev.small.tsv",
    "triples": "triples.train.small.tsv",
    "qidpidtriples": "qidpidtriples.train.full.2.tsv",
}
EVAL_SPLITS = ("train", "dev", "dev.small")


def _file(data_dir: Any, key: str) -> str:
  """The path of FILES[key] in `data_dir`."""
  return str(pathlib.Path(data_dir) / FILES[key])


def _first_line(rows: Iterator[tuple[int, list[str]]],
                match: Callable[[list[str]], bool]) -> int:
  """The line number of the first row whose fields `match` (one must)."""
  return next(line_no for line_no, fields in rows if match(fields))


def _read_texts(path: Any, clean: Callable[[str], str]) -> dict[str, str]:
  """`id<TAB>text` lines -> {id: clean(text)}, in file order.

  Raises:
    DataError: for an empty id, or an id on two lines (naming both).
  """
  texts = {}
  for line_no, (key, text) in data_files.iter_tsv(path, 2):
    key = key.strip()
    if not key:
      raise DataError(path, line_no, "empty id.")
    if key in texts:
      first = _first_line(data_files.iter_tsv(path, 2), lambda f: f[0].strip() == key)
      raise DataError(path, line_no, f"id {key!r} again (first on line {first}).")
    texts[key] = clean(text)
  return texts


def read_collection(path: Any) -> dict[str, str]:
  """Reads `collection.tsv`.

  Args:
    path: the file (`pid<TAB>text` lines).

  Returns:
    {pid: passage text}, the text exactly as published (mojibake included), in file order.

  Raises:
    DataError: for a malformed line, bytes that are not UTF-8, a missing file, an empty or
      duplicate pid.
  """
  return _read_texts(path, lambda text: text)


def read_queries(path: Any) -> dict[str, str]:
  """Reads `queries.*.tsv`.

  Args:
    path: the file (`qid<TAB>text` lines).

  Returns:
    {qid: query text with surrounding whitespace (U+00A0 included) stripped}, in file order.

  Raises:
    DataError: as `read_collection`.
  """
  return _read_texts(path, str.strip)


def read_qrels(path: Any) -> dict[str, dict[str, int]]:
  """Reads a TREC qrels file (`qid 0 pid label` or `qid Q0 pid label`).

  Args:
    path: the file; fields separated by tabs or runs of spaces.

  Returns:
    {qid: {pid: label}}; label 0 rows are kept (judged, not relevant). A pair judged twice
    with the same label is kept once.

  Raises:
    DataError: for a malformed line, a label that is not an integer, or a pair judged twice
      with different labels (naming both lines).
  """
  return data_files.build_qrels(lambda: data_files.iter_qrels(path, "trec"), path)


def _lookup(texts: dict[str, str], key: str, what: str, path: Any, line_no: int) -> str:
  """texts[key]; a DataError naming the file, line and unknown id otherwise."""
  if key not in texts:
    raise DataError(path, line_no, f"unknown {what} id {key!r}.")
  return texts[key]


def _qrels_pairs(data_dir: Any) -> Iterator[dict[str, str]]:
  """(query, positive passage) of each label > 0 row of qrels.train.tsv, in file order."""
  queries = read_queries(_file(data_dir, "queries.train"))
  collection = read_collection(_file(data_dir, "collection"))
  path = _file(data_dir, "qrels.train")
  for line_no, qid, pid, label in data_files.iter_qrels(path, "trec"):
    if label > 0:
      yield {"query": _lookup(queries, qid, "query", path, line_no), "query_id": qid,
             "passage": _lookup(collection, pid, "passage", path, line_no), "passage_id": pid}


def _text_triples(data_dir: Any) -> Iterator[dict[str, str]]:
  """The lines of triples.train.small.tsv; the ids are "" (the file has none)."""
  for _, (query, positive, negative) in data_files.iter_tsv(_file(data_dir, "triples"), 3):
    yield {"query": query.strip(), "passage": positive, "negative": negative,
           "query_id": "", "passage_id": "", "negative_id": ""}


def _id_triples(data_dir: Any) -> Iterator[dict[str, str]]:
  """The lines of qidpidtriples.train.full.2.tsv, resolved to texts."""
  queries = read_queries(_file(data_dir, "queries.train"))
  collection = read_collection(_file(data_dir, "collection"))
  path = _file(data_dir, "qidpidtriples")
  for line_no, (qid, pos, neg) in data_files.iter_tsv(path, 3, separators="\t "):
    yield {"query": _lookup(queries, qid, "query", path, line_no), "query_id": qid,
           "passage": _lookup(collection, pos, "passage", path, line_no), "passage_id": pos,
           "negative": _lookup(collection, neg, "passage", path, line_no), "negative_id": neg}


_TRAINING_READERS = {None: _qrels_pairs, "triples": _text_triples,
                     "qidpidtriples": _id_triples}


def iter_training_examples(data_dir: Any,
                           negatives: Optional[str] = None) -> Iterator[dict[str, str]]:
  """The MS MARCO training examples, read lazily from the files in `data_dir`.

  Args:
    data_dir: the folder of the official files (see the module docstring).
    negatives: None: (query, each positive) of qrels.train.tsv (label > 0, in file order),
      texts from queries.train.tsv and collection.tsv. "triples": the lines of
      triples.train.small.tsv (texts; the ids are "" since the file has none).
      "qidpidtriples": the lines of qidpidtriples.train.full.2.tsv, texts from
      queries.train.tsv and collection.tsv.

  Returns:
    An iterator of {"query", "passage", "query_id", "passage_id"} (all str), with
    "negative" and "negative_id" when `negatives` is given. Examples with an empty text are
    dropped, and a warning counts them.

  Raises:
    ValueError: for another `negatives`.
    DataError (while iterating): for a bad file, or an id of the qrels or triples that the
      queries or collection lack (naming the file, line and id).
  """
  if negatives not in _TRAINING_READERS:
    raise ValueError(f"negatives must be one of {list(_TRAINING_READERS)}, got {negatives!r}.")
  source = _file(data_dir, "qrels.train" if negatives is None else negatives)
  return data_files.drop_empty(_TRAINING_READERS[negatives](data_dir), source)


def eval_set(data_dir: Any, split: str = "dev") -> data_files.RetrievalSet:
  """The evaluation set of a split: its judged queries against the whole collection.

  Args:
    data_dir: the folder of the official files (see the module docstring).
    split: "dev" (queries.dev.tsv, qrels.dev.tsv), "dev.small" (the 6,980 queries of the
      leaderboard's MRR@10) or "train".

  Returns:
    A checked `RetrievalSet` named "msmarco/<split>": the queries of queries.<split>.tsv that
    qrels.<split>.tsv judges, the whole collection, and those qrels.

  Raises:
    ValueError: for another split.
    DataError: for a bad file, or qrels that judge an unknown query or passage.
  """
  if split not in EVAL_SPLITS:
    raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}.")
  qrels = read_qrels(_file(data_dir, f"qrels.{split}"))
  queries = read_queries(_file(data_dir, f"queries.{split}"))
  return data_files.RetrievalSet(
      queries={qid: text for qid, text in queries.items() if qid in qrels},
      corpus=read_collection(_file(data_dir, "collection")),
      qrels=qrels, name=f"msmarco/{split}").check(_file(data_dir, f"qrels.{split}"))


# -- TFDS pairs and SeqIO tasks ------------------------------------------------------------


class MsmarcoPassage(pairs.PairsBuilder):
  """MS MARCO passage training pairs: "qrels" (query, each positive) or "triples" (with the
  hard negative of triples.train.small.tsv)."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      pairs.PairsConfig(name="qrels", description="queries.train + qrels.train positives"),
      pairs.PairsConfig(name="triples", negatives=True,
                        description="triples.train.small: query, positive, hard negative"),
  ]
  MANUAL_SUBDIR = "msmarco"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download the MS MARCO passage ranking files (https://microsoft.github.io/msmarco/) and"
      " put collection.tsv, queries.train.tsv, qrels.train.tsv (and, for the 'triples'"
      " config, triples.train.small.tsv) in the manual folder, or in"
      " $SAMTONE_DATA_DIR/msmarco.")

  def iter_pairs(self, split, manual_dir):
    negatives = "triples" if self.negatives else None
    for example in iter_training_examples(manual_dir, negatives):
      pair = {"query": example["query"], "passage": example["passage"]}
      if negatives:
        pair["negatives"] = [example["negative"]]
      yield pair


pairs.register_pairs_task("msmarco_passage", "msmarco_passage/qrels:1.0.0",
                          vocabularies.t5_vocabulary())
pairs.register_pairs_task("msmarco_passage_triples", "msmarco_passage/triples:1.0.0",
                          vocabularies.t5_vocabulary(), negatives=True)
for _split in EVAL_SPLITS:
  eval_sets.register(f"msmarco_passage_{_split.replace('.', '_')}",
                     lambda split=_split: eval_set(data_files.data_root() / "msmarco", split))
