"""Builds the TFDS datasets of tasks once: `python -m samtone_jax.prepare_data TASK [...]`.

Reads the official files from --data_dir (default $SAMTONE_DATA_DIR, see README "Data") and
writes TFRecords to --tfds_data_dir (default TFDS's, ~/tensorflow_datasets). Training builds
what is missing on first use too, but a run on several processes needs it done beforehand.
"""

import argparse
import os

import seqio

from samtone_jax import inputs
from samtone_jax.tasks import pairs


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("tasks", nargs="+", help="SeqIO tasks or mixtures, e.g. multireqa_all")
  parser.add_argument("--data_dir", help=f"the downloaded files (${pairs.DATA_DIR_VARIABLE})")
  parser.add_argument("--tfds_data_dir", help="where TFDS writes the prepared datasets")
  args = parser.parse_args(argv)
  if args.data_dir:
    os.environ[pairs.DATA_DIR_VARIABLE] = args.data_dir
  if args.tfds_data_dir:
    seqio.set_tfds_data_dir_override(args.tfds_data_dir)
  for name in args.tasks:
    inputs.prepare(name)
    print(f"{name}: prepared")


if __name__ == "__main__":
  main()
