"""`python -m samtone_jax.prepare_data`, as a user runs it (a process of its own: seqio
remembers TFDS folders): the TFDS datasets of the named tasks built into --tfds_data_dir from
the official files in --data_dir."""

import subprocess
import sys

from samtone_jax.tasks import msmarco
from tests import format_files


def test_prepare_data_command(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "samtone_jax.prepare_data", "stdlib_code_search",
       "--tfds_data_dir", str(tmp_path)], capture_output=True, text=True, timeout=300,
      check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "stdlib_code_search: prepared" in done.stdout
  assert list(tmp_path.glob("stdlib_code_search/*/1.0.0/*train.tfrecord*"))


def test_data_dir_names_the_downloaded_files(tmp_path):
  """MS MARCO's files in --data_dir/msmarco: the training pairs whose texts are not empty."""
  for name, content in format_files.MSMARCO_FILES.items():
    format_files.write(tmp_path / "downloads" / "msmarco" / name, content)
  done = subprocess.run(
      [sys.executable, "-m", "samtone_jax.prepare_data", "msmarco_passage",
       "--data_dir", str(tmp_path / "downloads"), "--tfds_data_dir", str(tmp_path / "tfds")],
      capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "msmarco_passage: prepared" in done.stdout
  built = msmarco.MsmarcoPassage(config="qrels", data_dir=str(tmp_path / "tfds"))
  pairs = sorted((ex["query"].decode(), ex["passage"].decode())
                 for ex in built.as_dataset(split="train").as_numpy_iterator())
  assert pairs == [("is grass\u00a0green", "Grass is green."),
                   ("what colour is the sky", "Le caf\u00c3\u00a9 au lait "),
                   ("what colour is the sky", "The sky is blue.")]
