"""A training run's directory (MODEL_DIR), and what the entry points read from one.

The layout, written by `train` and read by `evaluate`, `export` and `analysis`:

  MODEL_DIR/
    config.gin                 the operative gin config (the run's model, task and lengths)
    checkpoints/<step>/        orbax checkpoints of the TrainState
    input_positions/<step>/    the input pipeline's position at each checkpoint
    damaged/<step>/            a checkpoint that did not restore, moved aside on resume
    summaries/                 TensorBoard event files
    metrics.json               the final evaluation
    example_ids.jsonl          each step's content ids (LOG_EXAMPLE_IDS only)
    eval_embeddings/<set>/     training's corpus embeddings of its large evaluation sets
    eval/                      `evaluate`'s output (by default; EVAL_OUTPUT_DIR):
      metrics.json               {set: {metric: value}}
      <set>.trec                 one TREC run file a row
      embeddings/<set>/          the corpus embeddings of each set

This module is the only one that spells those names; `checkpoints` reads and writes what
they hold.
"""

import dataclasses
import pathlib
from typing import Optional

import orbax.checkpoint as ocp


@dataclasses.dataclass(frozen=True)
class RunDir:
  """The paths of a training run's MODEL_DIR."""
  path: pathlib.Path

  def __post_init__(self):
    object.__setattr__(self, "path", pathlib.Path(self.path).absolute())

  @property
  def config(self) -> pathlib.Path:
    return self.path / "config.gin"

  @property
  def checkpoints(self) -> pathlib.Path:
    return self.path / "checkpoints"

  def checkpoint(self, step: int) -> pathlib.Path:
    return self.checkpoints / str(step)

  @property
  def input_positions(self) -> pathlib.Path:
    return self.path / "input_positions"

  def input_position(self, step: int) -> pathlib.Path:
    return self.input_positions / str(step)

  def damaged(self, step: int) -> pathlib.Path:
    """A new folder name for the damaged checkpoint of `step`: damaged/<step>, or
    damaged/<step>.<n> when a checkpoint of that step was moved aside before."""
    folder, n = self.path / "damaged" / str(step), 1
    while folder.exists():
      n += 1
      folder = self.path / "damaged" / f"{step}.{n}"
    return folder

  @property
  def summaries(self) -> pathlib.Path:
    return self.path / "summaries"

  @property
  def metrics(self) -> pathlib.Path:
    return self.path / "metrics.json"

  @property
  def example_ids(self) -> pathlib.Path:
    return self.path / "example_ids.jsonl"

  @property
  def eval(self) -> "EvalDir":
    return EvalDir(self.path / "eval")

  @property
  def eval_embeddings(self) -> pathlib.Path:
    """Training's corpus embeddings of its large evaluation sets, one folder a set."""
    return self.path / "eval_embeddings"

  def latest_step(self) -> Optional[int]:
    """The newest checkpoint's step, or None."""
    if not self.checkpoints.is_dir():
      return None
    return ocp.CheckpointManager(self.checkpoints).latest_step()


@dataclasses.dataclass(frozen=True)
class EvalDir:
  """The paths of an evaluation's output folder (EVAL_OUTPUT_DIR; a run's eval/ by
  default)."""
  path: pathlib.Path

  def __post_init__(self):
    object.__setattr__(self, "path", pathlib.Path(self.path).absolute())

  @property
  def metrics(self) -> pathlib.Path:
    return self.path / "metrics.json"

  def trec_run(self, row: str) -> pathlib.Path:
    """The TREC run file of a row (a set, or a set's baseline)."""
    return self.path / f"{row}.trec"

  @property
  def embeddings(self) -> pathlib.Path:
    """The corpus embeddings, one folder a set."""
    return self.path / "embeddings"
