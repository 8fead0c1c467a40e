"""Retrieval evaluation sets by name: queries, corpus and qrels, read by the readers.

Each source module registers its sets (e.g. "multireqa_squad", "beir_nfcorpus"), reading
from $SAMTONE_DATA_DIR when asked; `get("name")` builds one. Evaluation (EVAL_TASKS) names
sets from here.
"""

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
  if name not in _EVAL_SETS:
    raise KeyError(f"no evaluation set {name!r}; registered: {names()}.")
  return _EVAL_SETS[name]()
