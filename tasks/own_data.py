r"""Your own training pairs and evaluation sets, named by path in gin: no code to write.

Training pairs, one example a line, in JSONL or TSV files (samtone_jax/pairs_format.py says
what a line holds).

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
the split "dev" (samtone_jax/eval_sets.py).
"""

import logging
from typing import Any, Sequence

import gin
import seqio
import tensorflow as tf

from samtone_jax import data_files, pairs_format
from samtone_jax.tasks import pairs, preprocessors, vocabularies

SPLITS = ("train", "validation")
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
    for example in data_files.drop_empty(pairs_format.read_examples(path), path):
      ids = pairs_format.id_fields(example)
      if columns is None:
        first_ids, first = ids, path
        columns = {name: [] for name in _column_names(ids, num_negatives)}
      pairs_format.check_id_fields(path, ids, first, first_ids)
      if len(example["negatives"]) < num_negatives:
        short += 1
        if files["short_pools"] == "drop":
          continue
      for name, values in columns.items():
        value = example.get(name, [])  # negative_ids: none without negatives
        values.append(pairs_format.id_text(value) if name in pairs_format.ID_FIELDS
                      else value)
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
