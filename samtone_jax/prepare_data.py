"""Builds the TFDS datasets of tasks once: `python -m samtone_jax.prepare_data TASK [...]`.

Reads the official files from --data_dir (default $SAMTONE_DATA_DIR, see README "Data") and
writes TFRecords to --tfds_data_dir (default TFDS's, ~/tensorflow_datasets). Training builds
what is missing on first use too, but a run on several processes needs it done beforehand.
"""

if __name__ == "__main__":  # a program: the host set up before these imports load TensorFlow
  from samtone_jax import launch as _launch  # pylint: disable=g-import-not-at-top
  _launch.setup_host()

import argparse
import os

import seqio

from samtone_jax import data_files, inputs, launch


def main(argv=None):
  launch.setup_host()
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("tasks", nargs="+", help="SeqIO tasks or mixtures, e.g. multireqa_all")
  parser.add_argument("--data_dir",
                      help=f"the downloaded files (${data_files.DATA_DIR_VARIABLE})")
  parser.add_argument("--tfds_data_dir", help="where TFDS writes the prepared datasets")
  args = parser.parse_args(argv)
  if args.data_dir:
    os.environ[data_files.DATA_DIR_VARIABLE] = args.data_dir
  if args.tfds_data_dir:
    seqio.set_tfds_data_dir_override(args.tfds_data_dir)
  for name in args.tasks:
    inputs.prepare(name)
    print(f"{name}: prepared")


if __name__ == "__main__":
  main()
