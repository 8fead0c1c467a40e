"""SeqIO preprocessors of the dual-encoder tasks.

A training pair, as every TFDS builder of tasks/ stores it:
  {"query": text, "passage": text, "query_id": int32, "passage_id": int32}
  and, with hard negatives, "negatives": [k] texts.
The task's output features, after these preprocessors:
  {"queries": [<= Lq] int32, "passages": [<= Lp] int32, "query_ids": int32,
   "passage_ids": int32} and "negative_passages": [k, <= Lp] int32 (ragged).
"""

import functools

import seqio
import tensorflow as tf

# TFDS feature -> SeqIO output feature.
PAIR_TO_TASK_FEATURES = {"queries": "query", "passages": "passage", "query_ids": "query_id",
                         "passage_ids": "passage_id", "negative_passages": "negatives"}


def rekey_pairs(dataset: tf.data.Dataset, negatives: bool) -> tf.data.Dataset:
  """Renames a TFDS pair's features to the task's (and drops the rest).

  {"query": "q", "passage": "p", "query_id": 7, "passage_id": 9, ...}
    -> {"queries": "q", "passages": "p", "query_ids": 7, "passage_ids": 9}
  """
  key_map = dict(PAIR_TO_TASK_FEATURES)
  if not negatives:
    del key_map["negative_passages"]
  return seqio.preprocessors.rekey(dataset, key_map)


@seqio.map_over_dataset
def _cast_ids(features):
  return {k: tf.cast(v, tf.int32) if k.endswith("_ids") else v for k, v in features.items()}


def trim_with_eos(dataset: tf.data.Dataset, output_features, sequence_length):
  """Appends EOS to each token sequence, first cutting it so that it fits with the EOS.

  `negative_passages` ([k, ?], ragged) take the length of `passages`. A feature without a
  length (e.g. evaluation without TASK_FEATURE_LENGTHS) is not cut.

  {"queries": [4, 5, 6, 7]} with {"queries": 3} -> {"queries": [4, 5, 1]} (EOS = 1)
  {"queries": [4]} with {"queries": 3} -> {"queries": [4, 1]}
  """
  lengths = dict(sequence_length or {})
  if "passages" in lengths:
    lengths.setdefault("negative_passages", lengths["passages"])

  @seqio.map_over_dataset
  def trim(features):
    out = dict(features)
    for key, feature in output_features.items():
      if key not in out or not feature.add_eos:
        continue
      value = out[key]
      if feature.rank == 2 and not isinstance(value, tf.RaggedTensor):
        value = tf.RaggedTensor.from_tensor(value, padding=0)  # some vocabularies pad
      if lengths.get(key) is not None:
        value = value[..., :lengths[key] - 1]
      eos = feature.vocabulary.eos_id
      if isinstance(value, tf.RaggedTensor):
        out[key] = tf.concat([value, tf.fill([value.nrows(), 1], eos)], axis=1)
      else:
        out[key] = tf.concat([value, [eos]], axis=0)
    return out

  return trim(dataset)


def pair_preprocessors(negatives: bool):
  """The preprocessors of a pairs task: rekey, tokenize (EOS added), cut keeping EOS."""
  return [functools.partial(rekey_pairs, negatives=negatives), _cast_ids,
          functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False,
                            with_eos=False),
          trim_with_eos]
