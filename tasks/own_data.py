r"""Your own training pairs and evaluation sets, named by path in gin: no code to write.

Training pairs, one example a line, in files of either form (`.gz` and zip members too):

- JSON lines: {"query": "...", "passage": "..."} (or "positive" for "passage"), and
  optionally "negatives": ["...", ...], a list of any length;
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
  return example


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
  """The examples of one file: {"query", "passage", "negatives": [str]}.

  Raises:
    data_files.DataError: `file:line` and what is wrong (not JSON, a missing or mistyped
      field, a TSV line with another number of columns).
  """
  name = pathlib.PurePath(path).name.removesuffix(".gz")
  if name.endswith((".jsonl", ".json")):
    lines = ((n, _jsonl_example(r, path, n)) for n, r in data_files.iter_jsonl(path))
  elif name.endswith((".tsv", ".txt")):
    lines = _tsv_examples(path)
  else:
    raise data_files.DataError(path, None, "expected a .jsonl or .tsv file (or .gz of one).")
  for _, example in lines:
    yield example


def _examples(split: str, num_negatives: int) -> dict[str, list]:
  """The texts of a split, as lists: {"query", "passage"} (and "negatives": [N][pool])."""
  files = pairs_files()
  if split == "train" and not files["train"]:
    raise ValueError("own_pairs: no training files; set TRAIN_FILES (experiments/"
                     "own_data.gin) or own_data.pairs_files.train.")
  columns = {"query": [], "passage": [], "negatives": []}
  short = 0
  for path in files[split]:
    for example in data_files.drop_empty(read_examples(path), path):
      if len(example["negatives"]) < num_negatives:
        short += 1
        if files["short_pools"] == "drop":
          continue
      columns["query"].append(example["query"])
      columns["passage"].append(example["passage"])
      columns["negatives"].append(example["negatives"])
  if short:
    done = "dropped" if files["short_pools"] == "drop" else "padded the empty slots of"
    logging.warning("own_pairs %s: %s %d examples with fewer than NUM_NEGATIVES=%d"
                    " negatives (SHORT_POOLS=%r).", split, done, short, num_negatives,
                    files["short_pools"])
  logging.info("own_pairs %s: %d examples from %s.", split, len(columns["query"]),
               files[split])
  if not num_negatives:
    del columns["negatives"]
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
    if not columns["query"]:
      spec = {k: tf.TensorSpec([None] * (k == "negatives"), tf.string) for k in columns}
      return tf.data.Dataset.from_generator(lambda: iter(()), output_signature=spec)
    tensors = {k: tf.constant(columns[k], tf.string) for k in ("query", "passage")}
    if "negatives" in columns:  # pools of any size: ragged [N, None]
      tensors["negatives"] = tf.RaggedTensor.from_row_lengths(
          tf.constant([n for pool in columns["negatives"] for n in pool], tf.string),
          [len(pool) for pool in columns["negatives"]])
    return tf.data.Dataset.from_tensor_slices(tensors)
  return dataset


for _name, _negatives in (("own_pairs", False), ("own_pairs_with_negatives", True)):
  seqio.TaskRegistry.remove(_name)
  seqio.TaskRegistry.add(
      _name, source=seqio.FunctionDataSource(_dataset_fn(_negatives), splits=SPLITS),
      preprocessors=preprocessors.pair_preprocessors(_negatives),
      output_features=pairs.output_features(vocabularies.t5_vocabulary(), _negatives),
      metric_fns=[])
