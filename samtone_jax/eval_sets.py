"""Retrieval evaluation sets by name: the registry that sources fill and evaluation reads.

Each source of tasks/ registers its sets (e.g. "multireqa_squad", "beir_nfcorpus"), reading
from $SAMTONE_DATA_DIR when asked; `get("name")` builds one, a `data_files.RetrievalSet`.
Evaluation (EVAL_TASKS) names sets from here. A name `beir:<path>` is a folder (or zip) in
BEIR's format, anywhere, split "test"; `beir:<path>#<split>` another split: nothing to
register (samtone_jax/beir_format.py reads it).
"""

import collections
import os
import re
from typing import Callable, Sequence

from samtone_jax import beir_format, data_files

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
    path, split = _beir_path_and_split(name)
    return beir_format.eval_set(path, split or "test")
  if name not in _EVAL_SETS:
    raise KeyError(f"no evaluation set {name!r}; registered: {names()}.")
  return _EVAL_SETS[name]()


def short_names(names: Sequence[str]) -> dict[str, str]:
  """{name: short name} of the evaluation sets of one run: distinct names fit for file
  names and summaries.

  A registered set is named as registered; a `beir:<path>#<split>` set by its folder (and
  split), e.g. "beir_my_eval_dev". Where sets would share a name, the folders among them are
  named by as many of their parent folders as tell them apart ("beir:/data/a/eval" and
  "beir:/data/b/eval": "beir_a_eval" and "beir_b_eval"); the others keep their names.

  Raises:
    ValueError: two sets that no parent folders tell apart (EVAL_TASKS), naming both.
  """
  names = list(dict.fromkeys(names))
  depth = dict.fromkeys(names, 1)
  first = collections.Counter(_short_name(name, 1) for name in names)
  renamed = {name for name in names if first[_short_name(name, 1)] > 1}
  while True:
    short = {name: _short_name(name, depth[name]) for name in names}
    sharing = collections.defaultdict(list)
    for name in names:
      sharing[short[name]].append(name)
    clashes = [group for group in sharing.values() if len(group) > 1]
    if not clashes:
      return short
    deeper = [name for group in clashes for name in group
              if name in renamed and depth[name] < len(_folders(name))]
    if not deeper:
      a, b = clashes[0][:2]
      raise ValueError(f"EVAL_TASKS: the sets {a!r} and {b!r} would both be reported as"
                       f" {_short_name(a, 1)!r}: rename a folder, or evaluate them in two runs.")
    for name in deeper:
      depth[name] += 1


def _short_name(name: str, depth: int) -> str:
  """A registered name itself; a `beir:<path>#<split>` one as "beir_<folders>_<split>" of
  the path's last `depth` folders."""
  if not name.startswith("beir:"):
    return name
  path, split = _beir_path_and_split(name)
  return re.sub(r"[^A-Za-z0-9_.-]", "_",
                "_".join(filter(None, ("beir", *_folders(name)[-depth:], split))))


def _folders(name: str) -> list[str]:
  """The folders of a `beir:` set's path, outermost first, a zip named as its folder ([] for
  a registered set)."""
  if not name.startswith("beir:"):
    return []
  path, _ = _beir_path_and_split(name)
  full = path if "://" in path else os.path.abspath(path)
  return [part.removesuffix(".zip") for part in full.split("/") if part]


def _beir_path_and_split(name: str) -> tuple[str, str]:
  """("<path>", "<split>") of a name `beir:<path>[#<split>]` ("" for no split)."""
  path, _, split = name[len("beir:"):].partition("#")
  return path, split
