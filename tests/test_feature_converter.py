"""The dual-encoder feature converter on hand-written examples: texts 0-padded to their
lengths, ids unchanged; k hard negatives of each pool drawn by seed, shard and position, or
the whole pool and empty slots (EOS, id -1); packing and bad lengths refused."""

import numpy as np
import pytest
import tensorflow as tf

from samtone_jax import feature_converter

LENGTHS = {"queries": 4, "passages": 6}
# The tasks' features: token ids ending in EOS (1); each example a pool of negatives.
EXAMPLES = [
    {"queries": [5, 6, 1], "passages": [7, 8, 9, 10, 1], "query_ids": 11, "passage_ids": 12,
     "negative_passages": [[20, 1], [21, 22, 1], [23, 24, 25, 26, 27, 1]],
     "negative_passage_ids": [30, 31, 32]},
    {"queries": [2, 1], "passages": [3, 4, 5, 6, 7, 1], "query_ids": 13, "passage_ids": 14,
     "negative_passages": [[28, 29, 1]], "negative_passage_ids": [33]},
    {"queries": [9, 8, 7, 1], "passages": [1], "query_ids": 15, "passage_ids": 16,
     "negative_passages": [], "negative_passage_ids": []},
]
# Each pool's negatives as the converter writes them: [Lp] 0-padded.
PADDED_POOLS = [
    {30: [20, 1, 0, 0, 0, 0], 31: [21, 22, 1, 0, 0, 0], 32: [23, 24, 25, 26, 27, 1]},
    {33: [28, 29, 1, 0, 0, 0]},
    {},
]
EMPTY = [1, 0, 0, 0, 0, 0]  # an empty slot: EOS only


def _dataset(examples, negatives=True):
  """The examples as a tf.data stream of the tasks' feature types (negatives ragged)."""
  signature = {"queries": tf.TensorSpec([None], tf.int32),
               "passages": tf.TensorSpec([None], tf.int32),
               "query_ids": tf.TensorSpec([], tf.int32),
               "passage_ids": tf.TensorSpec([], tf.int32)}
  if negatives:
    signature["negative_passages"] = tf.RaggedTensorSpec([None, None], tf.int32, 1)
    signature["negative_passage_ids"] = tf.TensorSpec([None], tf.int32)

  def generate():
    for ex in examples:
      out = {k: ex[k] for k in signature if k != "negative_passages"}
      if negatives:
        out["negative_passages"] = tf.ragged.constant(ex["negative_passages"], tf.int32,
                                                      ragged_rank=1, row_splits_dtype=tf.int64)
      yield out
  return tf.data.Dataset.from_generator(generate, output_signature=signature)


def _convert(examples, num_negatives=0, **kwargs):
  converter = feature_converter.DualEncoderFeatureConverter(num_negatives, **kwargs)
  return list(converter(_dataset(examples, num_negatives > 0), LENGTHS).as_numpy_iterator())


def test_texts_are_padded_to_their_lengths_and_ids_kept():
  got = _convert(EXAMPLES)
  want = [{"queries": [5, 6, 1, 0], "passages": [7, 8, 9, 10, 1, 0], "query_ids": 11,
           "passage_ids": 12},
          {"queries": [2, 1, 0, 0], "passages": [3, 4, 5, 6, 7, 1], "query_ids": 13,
           "passage_ids": 14},
          {"queries": [9, 8, 7, 1], "passages": [1, 0, 0, 0, 0, 0], "query_ids": 15,
           "passage_ids": 16}]
  assert [set(ex) for ex in got] == [set(ex) for ex in want]
  for ex, expected in zip(got, want):
    for key, value in expected.items():
      assert ex[key].dtype == np.int32, key
      np.testing.assert_array_equal(ex[key], value, err_msg=key)


def test_k_of_a_larger_pool_and_all_of_a_smaller_one_then_empty_slots():
  got = _convert(EXAMPLES, num_negatives=2)
  # Pool of 3: 2 distinct negatives of it, each row the text of its id.
  ids = got[0]["negative_passage_ids"].tolist()
  assert len(set(ids)) == 2 and set(ids) <= set(PADDED_POOLS[0])
  np.testing.assert_array_equal(got[0]["negative_passages"], [PADDED_POOLS[0][i] for i in ids])
  # Pool of 1: it, then an empty slot; pool of 0: two empty slots.
  np.testing.assert_array_equal(got[1]["negative_passage_ids"], [33, -1])
  np.testing.assert_array_equal(got[1]["negative_passages"], [PADDED_POOLS[1][33], EMPTY])
  np.testing.assert_array_equal(got[2]["negative_passage_ids"], [-1, -1])
  np.testing.assert_array_equal(got[2]["negative_passages"], [EMPTY, EMPTY])
  assert all(ex["negative_passages"].shape == (2, 6) for ex in got)


def _draws(seed=0, shard_index=0, positions=24):
  """The ids drawn for EXAMPLES[0] at each of `positions` stream positions (k = 2)."""
  got = _convert([EXAMPLES[0]] * positions, num_negatives=2, seed=seed,
                 shard_index=shard_index)
  return [tuple(ex["negative_passage_ids"].tolist()) for ex in got]


def test_draws_depend_on_seed_shard_and_position_only():
  draws = _draws()
  assert all(len(set(d)) == 2 and set(d) <= {30, 31, 32} for d in draws)
  assert len(set(draws)) > 1  # drawn afresh at each position
  assert _draws() == draws
  assert _draws(seed=1) != draws
  assert _draws(shard_index=1) != draws


def test_packing_negative_k_and_bad_lengths_are_refused():
  with pytest.raises(ValueError, match="packing"):
    feature_converter.DualEncoderFeatureConverter(pack=True)
  with pytest.raises(ValueError, match="num_negatives must be >= 0, got -1"):
    feature_converter.DualEncoderFeatureConverter(-1)
  converter = feature_converter.DualEncoderFeatureConverter()
  with pytest.raises(ValueError, match=r"lengths for \['passages'\]"):
    converter(_dataset(EXAMPLES, False), {"queries": 16})
  with pytest.raises(ValueError, match=r"TASK_FEATURE_LENGTHS\['queries'\] must be an int >= 2"):
    converter(_dataset(EXAMPLES, False), {"queries": 1, "passages": 8})
