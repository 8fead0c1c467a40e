"""Training pairs as TFDS datasets, and their SeqIO tasks: the part every source shares.

A source module (msmarco.py, multireqa.py, quickstart.py, ...) reads its official files
into pairs {"query", "passage"} (and "negatives"), subclasses `PairsBuilder` to write them
once into TFRecords, and calls `register_pairs_task`. The task's preprocessors add the
content ids that duplicate masking uses (tasks/preprocessors.py).

The official files are read from TFDS's manual folder: `--manual_dir` of `tfds build`, or
by default `$SAMTONE_DATA_DIR/<builder's MANUAL_SUBDIR>`.
"""

import pathlib
from typing import Any, Iterator, Mapping, Optional

from etils import epath
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from samtone_jax import data_files
from samtone_jax.tasks import preprocessors

class PairsConfig(tfds.core.BuilderConfig):
  """A builder config; `negatives`: whether its pairs carry hard negatives."""

  def __init__(self, *, negatives: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.negatives = negatives


class PairsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the TFDS builders of training pairs.

  Subclasses set VERSION, `SPLITS`, `NEGATIVES` (whether pairs carry hard negatives; a
  `PairsConfig` can say it instead), `MANUAL_SUBDIR` and MANUAL_DOWNLOAD_INSTRUCTIONS (for
  builders of downloaded files), and implement `iter_pairs`.
  """
  SPLITS: tuple[str, ...] = ("train",)
  NEGATIVES: bool = False
  MANUAL_SUBDIR: str = ""
  # Where TFDS looks for metadata files: this folder, also under `pip install -e`, where the
  # package path TFDS would infer (samtone_jax/tasks) does not exist.
  pkg_dir_path = epath.Path(__file__).parent

  @property
  def negatives(self) -> bool:
    return getattr(self.builder_config, "negatives", self.NEGATIVES)

  def iter_pairs(self, split: str, manual_dir: pathlib.Path) -> Iterator[Mapping[str, Any]]:
    """Yields {"query": str, "passage": str} (and "negatives": [str]) in a fixed order."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    features = {"query": tfds.features.Text(), "passage": tfds.features.Text()}
    if self.negatives:
      features["negatives"] = tfds.features.Sequence(tfds.features.Text())
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

  def _manual_dir(self, dl_manager) -> Optional[pathlib.Path]:
    """TFDS's manual folder if it exists, else $SAMTONE_DATA_DIR/MANUAL_SUBDIR; None for
    builders that read no downloaded files."""
    if not self.MANUAL_DOWNLOAD_INSTRUCTIONS:
      return None
    try:
      manual = pathlib.Path(dl_manager.manual_dir)
    except AssertionError:  # TFDS asserts when no manual folder is configured.
      manual = None
    return manual if manual and manual.exists() else data_files.data_root() / self.MANUAL_SUBDIR

  def _split_generators(self, dl_manager):
    manual_dir = self._manual_dir(dl_manager)
    return {split: self._generate_examples(split, manual_dir) for split in self.SPLITS}

  def _generate_examples(self, split, manual_dir):
    index = -1
    for index, pair in enumerate(self.iter_pairs(split, manual_dir)):
      example = {"query": pair["query"], "passage": pair["passage"]}
      if self.negatives:
        example["negatives"] = list(pair["negatives"])
      yield index, example
    if index < 0:  # rather than TFDS's bare AssertionError
      raise data_files.DataError(manual_dir, None, f"the files hold no {split!r} pair.")


def output_features(vocabulary: seqio.Vocabulary,
                    negatives: bool = False) -> dict[str, seqio.Feature]:
  """The output features of a dual-encoder task (see tasks/preprocessors.py)."""
  ids = lambda: seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int32,
                              rank=0, required=False)
  features = {"queries": seqio.Feature(vocabulary, add_eos=True),
              "passages": seqio.Feature(vocabulary, add_eos=True),
              "query_ids": ids(), "passage_ids": ids()}
  if negatives:
    features["negative_passages"] = seqio.Feature(vocabulary, add_eos=True, rank=2)
    features["negative_passage_ids"] = seqio.Feature(
        seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.int32, rank=1, required=False)
  return features


def register_pairs_task(name: str, tfds_name: str, vocabulary: seqio.Vocabulary, *,
                        negatives: bool = False, splits: Optional[Any] = None,
                        tfds_data_dir: Optional[str] = None) -> seqio.Task:
  """Registers (or re-registers) the SeqIO task reading the TFDS pairs `tfds_name`."""
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=seqio.TfdsDataSource(tfds_name, splits=splits, tfds_data_dir=tfds_data_dir),
      preprocessors=preprocessors.pair_preprocessors(negatives),
      output_features=output_features(vocabulary, negatives),
      metric_fns=[])
