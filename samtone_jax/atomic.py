"""Result files written whole or not at all."""

import os
import pathlib
from typing import BinaryIO, Callable


def write_atomically(path: str | pathlib.Path,
                     data: str | bytes | Callable[[BinaryIO], None]) -> None:
  """Writes `path` whole or not at all: text (as UTF-8), bytes, or what `data(file)` writes
  to a binary file, into `<path>.partial` beside it, then renamed over `path`. A crash, or a
  writer that raises, leaves the old file (or none) and, but for a killed process, no
  partial file."""
  path = pathlib.Path(path)
  partial = path.with_name(path.name + ".partial")
  try:
    with open(partial, "wb") as f:
      if callable(data):
        data(f)
      else:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(partial, path)
  except BaseException:
    partial.unlink(missing_ok=True)
    raise
