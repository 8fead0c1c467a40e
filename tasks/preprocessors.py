"""SeqIO preprocessors of the dual-encoder tasks.

A training pair, as every TFDS builder of tasks/ stores it:
  {"query": text, "passage": text} and, with hard negatives, "negatives": [k] texts.
The task's output features, after these preprocessors:
  {"queries": [<= Lq] int32, "passages": [<= Lp] int32, "query_ids": int32,
   "passage_ids": int32} and, with hard negatives, "negative_passages": [n, <= Lp] int32
  (ragged: the example's pool of n) and "negative_passage_ids": [n] int32.
"""

import functools

import seqio
import tensorflow as tf
import tensorflow_text as tf_text

from samtone_jax import data_files

# SeqIO output feature <- TFDS feature.
PAIR_TO_TASK_FEATURES = {"queries": "query", "passages": "passage",
                         "negative_passages": "negatives"}


# A content id feature <- (the text it fingerprints, the id that a source may give in its
# place: own data's "query_id", "passage_id", "negative_ids", as text).
CONTENT_IDS = {"query_ids": ("queries", "query_id"), "passage_ids": ("passages", "passage_id"),
               "negative_passage_ids": ("negative_passages", "negative_ids")}
ID_PREFIX = "\x1fid\x1f"  # an id's fingerprint is never a text's


def rekey_pairs(dataset: tf.data.Dataset, negatives: bool) -> tf.data.Dataset:
  """Renames a TFDS pair's features to the task's (and drops the rest but the ids).

  {"query": "q", "passage": "p", ...} -> {"queries": "q", "passages": "p"}
  {"query": "q", "passage": "p", "query_id": "7"} -> {..., "query_id": "7"}
  """
  key_map = dict(PAIR_TO_TASK_FEATURES)
  if not negatives:
    del key_map["negative_passages"]
  key_map.update({name: name for _, name in CONTENT_IDS.values()
                  if name in dataset.element_spec and (negatives or name != "negative_ids")})
  return seqio.preprocessors.rekey(dataset, key_map)


def content_id(text: tf.Tensor) -> tf.Tensor:
  """int32 fingerprints of texts, equal exactly for equal normalised texts
  (`data_files.normalize_text`: NFKC, runs of Unicode's whitespace as one space, stripped),
  then FarmHash into [0, 2^31 - 1).

  Different texts share an id with probability ~2^-31 a pair: in a batch of 512, ~6e-5,
  so duplicate masking very rarely drops one true negative and never keeps a duplicate.
  """
  normal = tf.strings.strip(tf.strings.regex_replace(
      tf_text.normalize_utf8(text, "NFKC"), data_files.WHITE_SPACE_RUN, " "))
  return tf.cast(tf.strings.to_hash_bucket_fast(normal, 2**31 - 1), tf.int32)


@seqio.map_over_dataset
def add_content_ids(features):
  """Adds "query_ids" and "passage_ids", the content ids of the texts (for masking), and
  "negative_passage_ids" for hard negatives. Where the source gives an item's id
  ("query_id", "passage_id", "negative_ids": text), the content id is the id's, in place
  of the text's: equal ids are one item, whatever their texts.

  {"queries": "a  b", "passages": "c"} -> {..., "query_ids": 516208603, "passage_ids": ...}
  {"queries": "a", "query_id": "7", ...} -> {"queries": "a", "query_ids": <"7"'s>, ...}
  """
  out = dict(features)
  for content, (text, given) in CONTENT_IDS.items():
    if given in out:
      out[content] = content_id(tf.ragged.map_flat_values(
          lambda ids: tf.strings.join([ID_PREFIX, ids]), out.pop(given)))
    elif text in out:
      out[content] = content_id(out[text])
  return out


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
  """The preprocessors of a pairs task: rekey, content ids, tokenize, cut keeping EOS."""
  return [functools.partial(rekey_pairs, negatives=negatives), add_content_ids,
          functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False,
                            with_eos=False),
          trim_with_eos]
