"""The TFDS builders of tasks/, with TFDS's own DatasetBuilderTestCase on dummy-data folders
written in the official formats (the reader tests' fixtures, tests/format_files.py)."""

import pathlib
import tempfile

import tensorflow_datasets as tfds

from samtone_jax.tasks import msmarco, multireqa, quickstart
from tests import format_files


def _dummy_msmarco() -> str:
  folder = pathlib.Path(tempfile.mkdtemp(prefix="dummy_msmarco_"))
  for name, content in format_files.MSMARCO_FILES.items():
    format_files.write(folder / name, content)
  return str(folder)


def _dummy_multireqa() -> str:
  root = pathlib.Path(tempfile.mkdtemp(prefix="dummy_multireqa_"))
  for split in ("train", "dev"):
    for path, records in zip(multireqa.paths(root, "SQuAD", split),
                             (format_files.MRQA_RECORDS, format_files.CANDIDATES)):
      pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
      format_files.write_json_lines(path, records)
  return str(root)


class MsmarcoPassageQrelsTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = msmarco.MsmarcoPassage
  BUILDER_CONFIG_NAMES_TO_TEST = ["qrels"]
  EXAMPLE_DIR = _dummy_msmarco()
  SPLITS = {"train": 3}  # four positives, one of them an empty passage (dropped)
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # the readers open the files themselves


class MsmarcoPassageTriplesTest(MsmarcoPassageQrelsTest):
  BUILDER_CONFIG_NAMES_TO_TEST = ["triples"]
  SPLITS = {"train": 1}  # two triples, one with an empty negative (dropped)


class MultireqaTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = multireqa.Multireqa
  BUILDER_CONFIG_NAMES_TO_TEST = ["squad"]
  EXAMPLE_DIR = _dummy_multireqa()
  SPLITS = {"train": 6, "validation": 6}  # (question, relevant sentence) pairs
  OVERLAPPING_SPLITS = ["train", "validation"]  # one fixture serves both MRQA files
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False


class StdlibCodeSearchTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = quickstart.StdlibCodeSearch
  BUILDER_CONFIG_NAMES_TO_TEST = [quickstart.CONFIG]
  EXAMPLE_DIR = tempfile.mkdtemp(prefix="dummy_stdlib_")  # reads the standard library
  SPLITS = {split: len(pairs) for split, pairs in quickstart.build_pairs().items()}
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False


class StdlibCodeSearchSentencesTest(StdlibCodeSearchTest):
  BUILDER_CONFIG_NAMES_TO_TEST = [quickstart.SENTENCES_CONFIG]
  SPLITS = {split: len(pairs) for split, pairs in quickstart.build_sentence_pairs().items()}
