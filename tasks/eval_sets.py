"""Retrieval evaluation sets by name: queries, corpus and qrels, read by the readers.

Each source module registers its sets (e.g. "multireqa_squad", "beir_nfcorpus"), reading
from $SAMTONE_DATA_DIR when asked; `get("name")` builds one. Evaluation (EVAL_TASKS) names
sets from here. A name `beir:<path>` is a folder (or zip) in BEIR's format, anywhere, split
"test"; `beir:<path>#<split>` another split: nothing to register.
"""

import pathlib
import re
from typing import Callable

from samtone_jax import data_files

_EVAL_SETS: dict[str, Callable[[], data_files.RetrievalSet]] = {}


def register(name: str, build: Callable[[], data_files.RetrievalSet]) -> None:
  """Registers (or replaces) the evaluation set `name`, built by `build()` when asked for."""
  _EVAL_SETS[name] = build


def names() -> list[str]:
  return sorted(_EVAL_SETS)


def get(name: str) -> data_files.RetrievalSet:
  """Builds the evaluation set `name`.

  Raises:
    KeyError: for a name nobody registered, listing the registered ones.
  """
  if name.startswith("beir:"):
    from samtone_jax.tasks import beir  # pylint: disable=g-import-not-at-top  # (a cycle)
    path, split = _beir_path_and_split(name)
    return beir.eval_set(path, split or "test")
  if name not in _EVAL_SETS:
    raise KeyError(f"no evaluation set {name!r}; registered: {names()}.")
  return _EVAL_SETS[name]()


def short_name(name: str) -> str:
  """A name fit for file names and summaries: a `beir:<path>#<split>` set is named by its
  folder (and split), e.g. "beir_my_eval_dev"; registered names are themselves."""
  if not name.startswith("beir:"):
    return name
  path, split = _beir_path_and_split(name)
  stem = pathlib.PurePath(path.rstrip("/")).name.removesuffix(".zip")
  return re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(filter(None, ("beir", stem, split))))


def _beir_path_and_split(name: str) -> tuple[str, str]:
  """("<path>", "<split>") of a name `beir:<path>[#<split>]` ("" for no split)."""
  path, _, split = name[len("beir:"):].partition("#")
  return path, split
