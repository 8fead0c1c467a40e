"""The files of a saved checkpoint that the damaged-checkpoint tests damage."""

import pathlib


def truncate(path: pathlib.Path) -> None:
  """Cuts a file to half its size (a copy cut short, a full disk)."""
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def array_file(checkpoint: pathlib.Path) -> pathlib.Path:
  """The largest file of a checkpoint folder: array data (TensorStore's OCDBT data file)."""
  return max((p for p in checkpoint.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
