"""The SeqIO FeatureConverter of dual-encoder batches: pad to fixed lengths, never pack.

Task features (tasks/preprocessors.py) -> model features, for lengths {"queries": Lq,
"passages": Lp}:
  queries [<= Lq] int32            -> queries [Lq] (0-padded)
  passages [<= Lp] int32           -> passages [Lp]
  negative_passages [k, <= Lp]     -> negative_passages [k, Lp] (with `num_negatives=k`)
  query_ids, passage_ids (scalars) -> unchanged
Sequences arrive ending in EOS and cut to fit (tasks/preprocessors.trim_with_eos).
"""

from typing import Mapping

import seqio
import tensorflow as tf

Spec = seqio.FeatureConverter.FeatureSpec


class DualEncoderFeatureConverter(seqio.FeatureConverter):
  """Pads queries, passages and hard negatives; packing is an error (examples are pairs).

  Attributes:
    num_negatives: hard negatives per example (0: none); every example must have exactly
      this many.
  """

  PACKING_FEATURE_DTYPES = {}

  def __init__(self, num_negatives: int = 0, pack: bool = False, **kwargs):
    if pack:
      raise ValueError("DualEncoderFeatureConverter: packing would put several queries in one"
                       " sequence, which a dual encoder embeds as one; use pack=False.")
    if num_negatives < 0:
      raise ValueError(f"num_negatives must be >= 0, got {num_negatives}.")
    self.num_negatives = num_negatives
    features = {"queries": Spec(tf.int32), "passages": Spec(tf.int32),
                "query_ids": Spec(tf.int32, rank=0), "passage_ids": Spec(tf.int32, rank=0)}
    if num_negatives:
      features["negative_passages"] = Spec(tf.int32, rank=2, sequence_dim=1)
    self.TASK_FEATURES = self.MODEL_FEATURES = features  # pylint: disable=invalid-name
    super().__init__(pack=False, **kwargs)

  def __call__(self, ds: tf.data.Dataset,
               task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    """`task_feature_lengths` names "queries" and "passages"; the other lengths follow."""
    missing = {"queries", "passages"} - set(task_feature_lengths)
    if missing:
      raise ValueError(f"TASK_FEATURE_LENGTHS must give lengths for {sorted(missing)}; got"
                       f" {dict(task_feature_lengths)}.")
    for key in ("queries", "passages"):
      if not isinstance(task_feature_lengths[key], int) or task_feature_lengths[key] < 2:
        raise ValueError(f"TASK_FEATURE_LENGTHS['{key}'] must be an int >= 2 (room for a"
                         f" token and EOS), got {task_feature_lengths[key]!r}.")
    return super().__call__(ds, self.get_model_feature_lengths(task_feature_lengths))

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> Mapping[str, int]:
    lengths = {"queries": task_feature_lengths["queries"],
               "passages": task_feature_lengths["passages"], "query_ids": 1, "passage_ids": 1}
    if self.num_negatives:
      lengths["negative_passages"] = task_feature_lengths["passages"]
    return lengths

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    query_length = task_feature_lengths["queries"]
    passage_length = task_feature_lengths["passages"]
    k = self.num_negatives

    def pad(tokens, length):
      tokens = tokens[:length]
      return tf.ensure_shape(tf.pad(tokens, [[0, length - tf.shape(tokens)[0]]]), [length])

    @seqio.map_over_dataset
    def convert(features):
      out = {"queries": pad(features["queries"], query_length),
             "passages": pad(features["passages"], passage_length),
             "query_ids": features["query_ids"], "passage_ids": features["passage_ids"]}
      if k:
        negatives = features["negative_passages"]
        if not isinstance(negatives, tf.RaggedTensor):
          negatives = tf.RaggedTensor.from_tensor(negatives)
        tf.debugging.assert_equal(
            negatives.nrows(), tf.cast(k, negatives.row_splits.dtype),
            message=f"an example does not have num_negatives={k} hard negatives")
        out["negative_passages"] = tf.ensure_shape(
            negatives[:, :passage_length].to_tensor(shape=[k, passage_length]),
            [k, passage_length])
      return out

    return convert(ds)
