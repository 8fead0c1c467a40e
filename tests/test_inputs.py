"""Pairs -> TFDS -> SeqIO task -> feature converter -> global batches, end to end."""

import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from samtone_jax import data_files, inputs, partitioning
from samtone_jax.tasks import pairs, preprocessors

VOCAB = seqio.ByteVocabulary()  # exact round trips of any text
TEXTS = [f"the query number {i} asks" for i in range(40)]


class ToyPairs(pairs.PairsBuilder):
  """40 train pairs (two of them sharing a query text), 8 validation pairs, 1 negative each."""
  VERSION = tfds.core.Version("1.0.0")
  SPLITS = ("train", "validation")
  NEGATIVES = True

  def iter_pairs(self, split, manual_dir):
    count = 40 if split == "train" else 8
    for i in range(count):
      query = TEXTS[i] if i != 1 else TEXTS[0]  # a duplicated query
      yield {"query": query, "passage": f"passage {i} " + "long " * (i % 7) * 5,
             "negatives": [f"negative {i}"]}


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  ToyPairs(data_dir=data_dir).download_and_prepare()
  pairs.register_pairs_task("toy_pairs_task", "toy_pairs:1.0.0", VOCAB, negatives=True,
                            tfds_data_dir=data_dir)
  return "toy_pairs_task"


def _examples(task, lengths, **kwargs):
  ds = inputs.get_dataset(task, "train", lengths, 1, num_epochs=1, num_negatives=1, **kwargs)
  return [{k: v[0] for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def _text(tokens):
  return VOCAB.decode([int(t) for t in tokens if t not in (0, 1)])


def test_texts_ids_and_lengths(toy_task):
  examples = _examples(toy_task, {"queries": 32, "passages": 24}, shuffle=False)
  assert len(examples) == 40
  by_index = {}
  for ex in examples:
    assert ex["queries"].shape == (32,) and ex["passages"].shape == (24,)
    assert ex["negative_passages"].shape == (1, 24)
    i = int(_text(ex["passages"]).split()[1])  # TFDS stores the pairs in its own order
    by_index[i] = ex
    query = TEXTS[i] if i != 1 else TEXTS[0]
    passage = f"passage {i} " + "long " * (i % 7) * 5
    assert _text(ex["queries"]) == query
    ends = np.flatnonzero(ex["passages"] == 1)
    assert len(ends) == 1  # EOS kept, also on cut passages
    if ends[0] == 23:  # cut: the text is a prefix of the passage
      assert passage.startswith(_text(ex["passages"]))
    else:
      assert _text(ex["passages"]) == passage
    assert _text(ex["negative_passages"][0]) == f"negative {i}"
  assert sorted(by_index) == list(range(40))
  assert by_index[0]["query_ids"] == by_index[1]["query_ids"]  # equal texts, equal ids
  assert len({int(ex["query_ids"]) for ex in examples}) == 39
  assert len({int(ex["passage_ids"]) for ex in examples}) == 40


def test_content_ids_are_equal_exactly_for_equal_normalised_texts():
  texts = [" a\u00a0 b\t", "a b", "A b", "\ufb01 x", "fi x", ""]
  ids = preprocessors.content_id(tf.constant(texts)).numpy()
  assert ids.dtype == np.int32 and (ids >= 0).all()
  assert ids[0] == ids[1] and ids[3] == ids[4]  # whitespace and NFKC forms
  assert len({ids[1], ids[2], ids[4], ids[5]}) == 4  # case matters


@pytest.mark.parametrize("char", "\t\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2003\u200b\u2028\u2029\u3000")
def test_content_ids_normalise_as_normalize_text(char):
  """Two texts that differ only by `char` where the other has a space share a content id
  exactly when data_files.normalize_text makes them equal."""
  texts = [f"a{char}b{char}", "a b", f"{char}{char}a b"]
  ids = preprocessors.content_id(tf.constant(texts)).numpy().tolist()
  normal = [data_files.normalize_text(t) for t in texts]
  assert [i == ids[1] for i in ids] == [n == normal[1] for n in normal]


def test_two_shards_partition_the_data(toy_task):
  lengths = {"queries": 32, "passages": 24}
  whole = sorted(_text(ex["passages"]) for ex in _examples(toy_task, lengths, shuffle=False))
  parts = [[_text(ex["passages"]) for ex in _examples(toy_task, lengths, shuffle=False,
                                                       shard_index=i, num_shards=2)]
           for i in range(2)]
  assert not set(parts[0]) & set(parts[1])
  assert sorted(parts[0] + parts[1]) == whole


def test_shuffle_is_deterministic_per_seed(toy_task):
  lengths = {"queries": 32, "passages": 24}
  order = lambda seed: [int(ex["passage_ids"]) for ex in _examples(toy_task, lengths,
                                                                    shuffle=True, seed=seed)]
  assert order(3) == order(3)
  assert order(3) != order(4)
  assert sorted(order(3)) == sorted(order(4))


def test_global_batches_resume_without_repeats_or_gaps(toy_task, tmp_path):
  mesh = partitioning.create_mesh()
  make = lambda: inputs.GlobalBatches(toy_task, "train", {"queries": 32, "passages": 24}, 8,
                                      mesh, seed=5, num_negatives=1)
  batches = make()
  first = next(batches)
  assert first["queries"].shape == (8, 32)
  assert first["queries"].sharding.spec == jax.sharding.PartitionSpec(("data",))
  for _ in range(3):
    next(batches)
  batches.save(tmp_path)
  want = [np.asarray(next(batches)["passage_ids"]) for _ in range(4)]  # crosses an epoch
  resumed = make()
  resumed.restore(tmp_path)
  got = [np.asarray(next(resumed)["passage_ids"]) for _ in range(4)]
  np.testing.assert_array_equal(got, want)


def test_a_batch_not_a_multiple_of_the_devices_is_refused(toy_task):
  with pytest.raises(ValueError, match="multiple of the 8 devices"):
    inputs.GlobalBatches(toy_task, "train", {"queries": 32, "passages": 24}, 12,
                         partitioning.create_mesh())
