"""The SeqIO FeatureConverter of dual-encoder batches: pad to fixed lengths, never pack.

Task features (tasks/preprocessors.py) -> model features, for lengths {"queries": Lq,
"passages": Lp}:
  queries [<= Lq] int32            -> queries [Lq] (0-padded)
  passages [<= Lp] int32           -> passages [Lp]
  negative_passages [n, <= Lp]     -> negative_passages [k, Lp] (with `num_negatives=k`)
  negative_passage_ids [n]         -> negative_passage_ids [k]
  query_ids, passage_ids (scalars) -> unchanged
Sequences arrive ending in EOS and cut to fit (tasks/preprocessors.trim_with_eos).

An example's n negatives are its pool. With n > k, each example takes k of them without
replacement, drawn afresh at each position of the stream (so each epoch draws anew) from
`(seed, shard_index, position)`: the same for a given seed, and, the position being part of
the input pipeline's saved state, the same after a resume. With n < k, the k - n empty slots
hold a one-token passage (EOS) with id -1, which the loss leaves out (losses.py).
"""

from typing import Mapping

import seqio
import tensorflow as tf

Spec = seqio.FeatureConverter.FeatureSpec
EMPTY_TOKEN = 1  # an empty negative slot's one token (T5's EOS): finite, and masked anyway


class DualEncoderFeatureConverter(seqio.FeatureConverter):
  """Pads queries, passages and hard negatives; packing is an error (examples are pairs).

  Attributes:
    num_negatives: hard negatives per example (0: none), k of each example's pool.
    seed, shard_index: where the draws of k from larger pools come from.
  """

  PACKING_FEATURE_DTYPES = {}

  def __init__(self, num_negatives: int = 0, pack: bool = False, *, seed: int = 0,
               shard_index: int = 0, **kwargs):
    if pack:
      raise ValueError("DualEncoderFeatureConverter: packing would put several queries in one"
                       " sequence, which a dual encoder embeds as one; use pack=False.")
    if num_negatives < 0:
      raise ValueError(f"num_negatives must be >= 0, got {num_negatives}.")
    self.num_negatives = num_negatives
    self.seed, self.shard_index = seed or 0, shard_index
    features = {"queries": Spec(tf.int32), "passages": Spec(tf.int32),
                "query_ids": Spec(tf.int32, rank=0), "passage_ids": Spec(tf.int32, rank=0)}
    if num_negatives:
      features["negative_passages"] = Spec(tf.int32, rank=2, sequence_dim=1)
    # pylint: disable=invalid-name
    self.TASK_FEATURES = features  # negative_passage_ids [n]: a pool of any size
    self.MODEL_FEATURES = dict(features, **(
        {"negative_passage_ids": Spec(tf.int32, rank=1)} if num_negatives else {}))
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
    lengths = self.get_model_feature_lengths(task_feature_lengths)
    return super().__call__(ds, {k: v for k, v in lengths.items() if k in self.TASK_FEATURES})

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> Mapping[str, int]:
    lengths = {"queries": task_feature_lengths["queries"],
               "passages": task_feature_lengths["passages"], "query_ids": 1, "passage_ids": 1}
    if self.num_negatives:
      lengths["negative_passages"] = task_feature_lengths["passages"]
      lengths["negative_passage_ids"] = self.num_negatives
    return lengths

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    query_length = task_feature_lengths["queries"]
    passage_length = task_feature_lengths["passages"]
    k = self.num_negatives

    def pad(tokens, length):
      tokens = tokens[:length]
      return tf.ensure_shape(tf.pad(tokens, [[0, length - tf.shape(tokens)[0]]]), [length])

    def draw(position, negatives, ids):
      """k of the pool's n negatives: a random k if n > k, all n (and k - n empty) if not."""
      n = tf.shape(ids)[0]
      seed = tf.random.experimental.stateless_fold_in(
          tf.random.experimental.stateless_fold_in([self.seed, 0], self.shard_index), position)
      order = tf.argsort(tf.random.stateless_uniform([n], seed))
      chosen = tf.cond(n > k, lambda: order[:k], lambda: tf.range(n))
      empty = k - tf.shape(chosen)[0]
      tokens = negatives[:, :passage_length].to_tensor(shape=[None, passage_length])
      tokens = tf.concat([tf.gather(tokens, chosen),
                          tf.tile([[EMPTY_TOKEN] + [0] * (passage_length - 1)], [empty, 1])], 0)
      ids = tf.concat([tf.gather(ids, chosen), tf.fill([empty], -1)], 0)
      return tf.ensure_shape(tokens, [k, passage_length]), tf.ensure_shape(ids, [k])

    def convert(position, features):
      out = {"queries": pad(features["queries"], query_length),
             "passages": pad(features["passages"], passage_length),
             "query_ids": features["query_ids"], "passage_ids": features["passage_ids"]}
      if k:
        negatives = features["negative_passages"]
        if not isinstance(negatives, tf.RaggedTensor):
          negatives = tf.RaggedTensor.from_tensor(negatives)
        out["negative_passages"], out["negative_passage_ids"] = draw(
            position, negatives, features["negative_passage_ids"])
      return out

    return ds.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE)
