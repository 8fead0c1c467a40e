r"""Your own training pairs and evaluation sets, named by path in gin: no code to write.

Training pairs, one example a line, in files of either form (`.gz` and zip members too):

- JSON lines: {"query": "...", "passage": "..."} (or "positive" for "passage"), and
  optionally "negatives": ["...", ...], a list of any length, and ids (strings or ints):
  "query_id", "passage_id" with "negative_ids" (one a negative). Where given, ids name the
  items for masking in place of their texts: two lines with one query_id are one query, and
  a negative with the passage_id of one of its positives leaves the loss. Every line of a
  split's files gives the same id fields, or none;
- TSV: `query<TAB>passage`, optionally followed by negatives, one a column (every line of
  a file with as many columns as its first).

The task `own_pairs` reads the files that gin binds (experiments/own_data.gin binds them
from the macros TRAIN_FILES and VALIDATION_FILES); each split is the examples of its files,
in order:

  own_data.pairs_files.train = ['/data/mine/train.jsonl']
  own_data.pairs_files.validation = ['/data/mine/dev.jsonl']

With NUM_NEGATIVES = k and MIXTURE_OR_TASK_NAME = 'own_pairs_with_negatives', an example's
negatives are its pool (e.g. the top 30 of `python -m samtone_jax.mine`), and each
epoch draws k of them anew, seeded by SEED (samtone_jax/feature_converter.py). An example
with fewer than k is dropped (SHORT_POOLS = 'drop', the default) or keeps them all and
leaves the other slots empty ('pad': in-batch negatives only there); both are counted in
the log. The texts go
through the same preprocessors (content ids, tokenisation with EOS, cutting) and feature
converter as the built-in tasks, tokenised with T5's vocabulary (tasks/vocabularies.py says
where its file comes from).

An evaluation set in BEIR's format (a folder or zip holding corpus.jsonl, queries.jsonl and
qrels/<split>.tsv; in a zip, `/data/mine.zip/mine`) is named by its path:
EVAL_TASKS = ['beir:/data/mine/eval'] reads the split "test", 'beir:/data/mine/eval#dev'
the split "dev" (tasks/eval_sets.py).
"""

import logging
import pathlib
from typing import Any, Iterator, Sequence

import gin
import seqio
import tensorflow as tf

from samtone_jax import data_files
from samtone_jax.tasks import pairs, preprocessors, vocabularies

SPLITS = ("train", "validation")
ID_FIELDS = ("query_id", "passage_id", "negative_ids")
POOLS = ("negatives", "negative_ids")  # a list a line


@gin.configurable(module="own_data")
def pairs_files(train: Sequence[str] = (), validation: Sequence[str] = (),
                num_negatives: int = 0, short_pools: str = "drop") -> dict[str, Any]:
  """The files of each split of `own_pairs`, the negatives an example takes (k), and what
  becomes of an example with fewer than k: "drop" it, or "pad" its empty slots."""
  if isinstance(train, str) or isinstance(validation, str):
    raise ValueError("own_data.pairs_files: train and validation are lists of paths, e.g."
                     " TRAIN_FILES = ['/data/train.jsonl'].")
  if short_pools not in ("drop", "pad"):
    raise ValueError(f"own_data.pairs_files.short_pools (SHORT_POOLS) must be 'drop' or"
                     f" 'pad', got {short_pools!r}.")
  return {"train": list(train), "validation": list(validation),
          "num_negatives": num_negatives, "short_pools": short_pools}


def _jsonl_example(record: Any, path: Any, line: int) -> dict[str, Any]:
  if not isinstance(record, dict):
    raise data_files.DataError(path, line, f"expected a JSON object, got"
                                           f" {type(record).__name__}.")
  name = "passage" if "passage" in record else "positive"
  if name not in record:
    raise data_files.DataError(path, line, "missing field 'passage' (or 'positive').")
  example = {"query": data_files.field(record, "query", str, path, line),
             "passage": data_files.field(record, name, str, path, line), "negatives": []}
  if "negatives" in record:
    negatives = data_files.field(record, "negatives", list, path, line)
    if not all(isinstance(n, str) for n in negatives):
      raise data_files.DataError(path, line, "field 'negatives' must be a list of strings.")
    example["negatives"] = negatives
  for name in ID_FIELDS:
    if name in record:
      example[name] = _id(record[name], name, path, line)
  if "negative_ids" in example and len(example["negative_ids"]) != len(example["negatives"]):
    raise data_files.DataError(path, line, f"field 'negative_ids' has"
                                           f" {len(example['negative_ids'])} ids for"
                                           f" {len(example['negatives'])} negatives.")
  if ("passage_id" in example) != ("negative_ids" in example) and example["negatives"]:
    raise data_files.DataError(path, line, "'passage_id' and 'negative_ids' go together:"
                                           " a negative is known to be a positive by its id.")
  return example


def id_fields(example: dict[str, Any]) -> list[str]:
  """Which of "query_id" and "passage_id" an example gives (its negative_ids go with the
  latter)."""
  return [name for name in ID_FIELDS[:2] if name in example]


def check_id_fields(path: Any, ids: list[str], first_path: Any,
                    first_ids: list[str]) -> None:
  """DataError unless a file gives the id fields of the first file read with it."""
  if ids != first_ids:
    raise data_files.DataError(path, None, f"id fields {ids} where {first_path} has"
                                           f" {first_ids}: give ids in every file or none.")


def _is_id(value: Any) -> bool:
  return isinstance(value, (str, int)) and not isinstance(value, bool)


def _id(value: Any, name: str, path: Any, line: int) -> Any:
  """An id field's value, checked: a string or an int; for negative_ids a list of them."""
  if name == "negative_ids":
    if not isinstance(value, list) or not all(map(_is_id, value)):
      raise data_files.DataError(path, line, f"field 'negative_ids' must be a list of"
                                             f" strings or ints, got {value!r}.")
    return value
  if not _is_id(value):
    raise data_files.DataError(path, line, f"field {name!r} must be a string or an int, got"
                                           f" {value!r}.")
  return value


def id_text(value: Any) -> Any:
  """An id (str or int) as text, by which it names its item ("7" and 7 are one); a list of
  ids as a list of texts."""
  return [str(v) for v in value] if isinstance(value, list) else str(value)


def _tsv_examples(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
  columns = None
  for line_no, line in data_files.iter_lines(path):
    if not line.strip():
      continue
    fields = line.split("\t")
    columns = columns or len(fields)
    if len(fields) < 2 or len(fields) != columns:
      raise data_files.DataError(path, line_no, f"expected {max(columns, 2)} tab-separated"
                                                f" fields (query, passage, negatives...),"
                                                f" got {len(fields)}: {line[:200]!r}.")
    yield line_no, {"query": fields[0], "passage": fields[1], "negatives": fields[2:]}


def read_examples(path: str) -> Iterator[dict[str, Any]]:
  """The examples of one file: {"query", "passage", "negatives": [str]} and, where the
  lines give them, "query_id", "passage_id", "negative_ids": [str or int] (ids as given;
  `id_text` makes them the text that names the item).

  Raises:
    data_files.DataError: `file:line` and what is wrong (not JSON, a missing or mistyped
      field, a TSV line with another number of columns, ids on some lines only).
  """
  name = pathlib.PurePath(path).name.removesuffix(".gz")
  if name.endswith((".jsonl", ".json")):
    lines = ((n, _jsonl_example(r, path, n)) for n, r in data_files.iter_jsonl(path))
  elif name.endswith((".tsv", ".txt")):
    lines = _tsv_examples(path)
  else:
    raise data_files.DataError(path, None, "expected a .jsonl or .tsv file (or .gz of one).")
  first = None
  for line, example in lines:
    ids = id_fields(example)
    first = ids if first is None else first
    if ids != first:
      raise data_files.DataError(path, line, f"id fields {ids} where the first line has"
                                             f" {first}: give ids on every line or none.")
    yield example


def _column_names(ids: list[str], num_negatives: int) -> list[str]:
  """The features of a split's examples, given the id fields of its files."""
  names = ["query", "passage", *ids]
  if num_negatives:
    names += ["negatives"] + ["negative_ids"] * ("passage_id" in ids)
  return names


def _examples(split: str, num_negatives: int) -> dict[str, list]:
  """The texts of a split, as lists: {"query", "passage"} (and "negatives": [N][pool]),
  and the id fields that its files give."""
  files = pairs_files()
  if split == "train" and not files["train"]:
    raise ValueError("own_pairs: no training files; set TRAIN_FILES (experiments/"
                     "own_data.gin) or own_data.pairs_files.train.")
  columns, first_ids, first = None, None, None
  short = 0
  for path in files[split]:
    for example in data_files.drop_empty(read_examples(path), path):
      ids = id_fields(example)
      if columns is None:
        first_ids, first = ids, path
        columns = {name: [] for name in _column_names(ids, num_negatives)}
      check_id_fields(path, ids, first, first_ids)
      if len(example["negatives"]) < num_negatives:
        short += 1
        if files["short_pools"] == "drop":
          continue
      for name, values in columns.items():
        value = example.get(name, [])  # negative_ids: none without negatives
        values.append(id_text(value) if name in ID_FIELDS else value)
  if short:
    done = "dropped" if files["short_pools"] == "drop" else "padded the empty slots of"
    logging.warning("own_pairs %s: %s %d examples with fewer than NUM_NEGATIVES=%d"
                    " negatives (SHORT_POOLS=%r).", split, done, short, num_negatives,
                    files["short_pools"])
  if columns is None or not columns["query"]:
    macro = {"train": "TRAIN_FILES", "validation": "VALIDATION_FILES"}[split]
    raise data_files.DataError(", ".join(files[split]) or "no files", None,
                               f"own_pairs {split}: no examples in {macro}: files empty, of"
                               " blank texts only, or with every pool shorter than"
                               f" NUM_NEGATIVES={num_negatives} (SHORT_POOLS='drop').")
  logging.info("own_pairs %s: %d examples from %s.", split, len(columns["query"]),
               files[split])
  return columns


def _dataset_fn(negatives: bool):
  def dataset(split: str, shuffle_files: bool = False, seed=None) -> tf.data.Dataset:
    del shuffle_files, seed  # the files are read in order; seqio shuffles the examples
    num_negatives = pairs_files()["num_negatives"]
    if negatives and num_negatives < 1:
      raise ValueError("own_pairs_with_negatives needs NUM_NEGATIVES >= 1.")
    if not negatives and num_negatives:
      raise ValueError(f"NUM_NEGATIVES={num_negatives}: hard negatives are read by the task"
                       " own_pairs_with_negatives; set MIXTURE_OR_TASK_NAME to it.")
    columns = _examples(split, num_negatives)
    tensors = {}
    for name, values in columns.items():
      if name in POOLS:  # pools of any size: ragged [N, None]
        tensors[name] = tf.RaggedTensor.from_row_lengths(
            tf.constant([n for pool in values for n in pool], tf.string),
            [len(pool) for pool in values])
      else:
        tensors[name] = tf.constant(values, tf.string)
    return tf.data.Dataset.from_tensor_slices(tensors)
  return dataset


for _name, _negatives in (("own_pairs", False), ("own_pairs_with_negatives", True)):
  seqio.TaskRegistry.remove(_name)
  seqio.TaskRegistry.add(
      _name, source=seqio.FunctionDataSource(_dataset_fn(_negatives), splits=SPLITS),
      preprocessors=preprocessors.pair_preprocessors(_negatives),
      output_features=pairs.output_features(vocabularies.t5_vocabulary(), _negatives),
      metric_fns=[])
