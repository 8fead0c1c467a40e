"""SeqIO task -> per-process tf.data -> global jax.Array batches, with a resumable position.

Each process reads its own shard of the task (`seqio.ShardInfo(process index, process
count)`), batches `global_batch_size / process_count` examples, and contributes them as its
rows of global arrays split over the mesh's data axes. With `num_shards` set, the task is
read in that many shards, each process reading a contiguous share of them: the global
batches then depend on `num_shards` only, not on how many processes read them. The position in the stream is a
TensorFlow iterator checkpoint (one file per process), so a resumed run continues exactly
where the saved one was: neither repeats nor gaps.
"""

import logging
import pathlib
from typing import Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
import seqio
import tensorflow as tf
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from samtone_jax import feature_converter


def prepare(mixture_or_task_name: str) -> None:
  """Builds the TFDS datasets of a task or mixture that are not built yet.

  The quickstart's set is built from the standard library on first use; the others from
  their official files (TFDS's manual folder or $SAMTONE_DATA_DIR). On several processes,
  build them beforehand, once (`python -m samtone_jax.prepare_data TASK`).
  """
  for task in seqio.get_subtasks(seqio.get_mixture_or_task(mixture_or_task_name)):
    if isinstance(task.source, seqio.TfdsDataSource):
      builder = task.source.tfds_dataset.builder
      if not builder.is_prepared():
        logging.info("Building TFDS dataset %s for task %s in %s.", builder.info.full_name,
                     task.name, builder.data_dir)
        builder.download_and_prepare()


def get_dataset(mixture_or_task_name: str, split: str, task_feature_lengths: Mapping[str, int],
                batch_size: int, *, shard_index: int = 0, num_shards: int = 1,
                shuffle: bool = True, seed: Optional[int] = 0,
                num_epochs: Optional[int] = None, num_negatives: int = 0) -> tf.data.Dataset:
  """One process's batches of a task: dicts of int32 [batch_size, ...] tensors.

  Args:
    mixture_or_task_name: a registered SeqIO task or mixture.
    split: its split, e.g. "train".
    task_feature_lengths: {"queries": Lq, "passages": Lp}.
    batch_size: examples a batch (this process's share of the global batch).
    shard_index, num_shards: this process's shard of the data.
    shuffle, seed: deterministic shuffling for a given seed.
    num_epochs: None repeats forever.
    num_negatives: hard negatives an example, drawn from its pool (feature_converter.py).
  """
  prepare(mixture_or_task_name)
  ds = seqio.get_dataset(
      mixture_or_task_name, task_feature_lengths=dict(task_feature_lengths),
      dataset_split=split, shuffle=shuffle, num_epochs=num_epochs, seed=seed,
      shard_info=(seqio.ShardInfo(index=shard_index, num_shards=num_shards)
                  if num_shards > 1 else None),
      feature_converter=feature_converter.DualEncoderFeatureConverter(
          num_negatives, seed=seed, shard_index=shard_index),
      use_cached=False)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


class GlobalBatches:
  """Iterates global batches of a task over a mesh; `save`/`restore` its position.

  Each item is a dict of jax.Arrays [global_batch_size, ...] split over `data_axes`. The
  data is read in `num_shards` shards (default: one a process); process p reads shards
  [p * k, (p + 1) * k), k = num_shards / process_count, and its rows of a batch are
  `global_batch_size / num_shards` examples of each, in shard order.
  """

  def __init__(self, mixture_or_task_name: str, split: str,
               task_feature_lengths: Mapping[str, int], global_batch_size: int, mesh: Mesh,
               data_axes: Sequence[str] = ("data",), num_shards: Optional[int] = None,
               **dataset_kwargs):
    num_processes = jax.process_count()
    num_shards = num_shards or num_processes
    if num_shards % num_processes:
      raise ValueError(f"input_shards={num_shards} must be a multiple of the {num_processes}"
                       " processes.")
    if global_batch_size % num_shards:
      raise ValueError(f"BATCH_SIZE={global_batch_size} must be a multiple of the"
                       f" {num_shards} input shards (by default one a process).")
    data_devices = int(np.prod([mesh.shape[a] for a in data_axes]))
    if global_batch_size % data_devices:
      raise ValueError(f"BATCH_SIZE={global_batch_size} must be a multiple of the"
                       f" {data_devices} devices of mesh axes {tuple(data_axes)}.")
    self._sharding = NamedSharding(mesh, PartitionSpec(tuple(data_axes)))
    per_process = num_shards // num_processes
    shards = tuple(get_dataset(mixture_or_task_name, split, task_feature_lengths,
                               global_batch_size // num_shards,
                               shard_index=jax.process_index() * per_process + i,
                               num_shards=num_shards, **dataset_kwargs)
                   for i in range(per_process))
    dataset = shards[0] if per_process == 1 else tf.data.Dataset.zip(shards).map(
        lambda *batches: {k: tf.concat([b[k] for b in batches], 0) for k in batches[0]})
    self._iterator = iter(dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

  def __iter__(self) -> Iterator[dict[str, jax.Array]]:
    return self

  def __next__(self) -> dict[str, jax.Array]:
    local = next(self._iterator)
    return {k: jax.make_array_from_process_local_data(self._sharding, v.numpy())
            for k, v in local.items()}

  def _path(self, directory) -> str:
    return str(pathlib.Path(directory)
               / f"input-{jax.process_index():03d}-of-{jax.process_count():03d}")

  def save(self, directory) -> None:
    """Writes this process's position under `directory` (which must exist)."""
    self._checkpoint.write(self._path(directory))

  def restore(self, directory) -> None:
    """Continues from the position saved under `directory`.

    Raises:
      ValueError: when this process has no position there (e.g. a run resumed on another
        number of processes than it was saved from).
    """
    try:
      self._checkpoint.read(self._path(directory)).assert_consumed()
    except tf.errors.NotFoundError:
      saved = sorted(p.name for p in pathlib.Path(directory).glob("input-*.index"))
      raise ValueError(f"no input position for process {jax.process_index()} of"
                       f" {jax.process_count()} in {directory} (saved: {saved}); resume on"
                       " the number of processes that saved it.") from None
