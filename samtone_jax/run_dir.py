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

This module is the only one that spells those names. It also loads a checkpoint's
parameters (from a run or from a pretrained Hugging Face folder).
"""

import dataclasses
import logging
import pathlib
from typing import Any, Callable, Optional, TypeVar

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from samtone_jax import dual_encoder, partitioning, pretrained

_LOG = logging.getLogger("samtone_jax.run_dir")
T = TypeVar("T")


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


def resolve_checkpoint(path: str | pathlib.Path, name: str = "CHECKPOINT_PATH",
                       need_config: bool = False) -> tuple[RunDir, int]:
  """(run, step) of a training MODEL_DIR (its newest checkpoint) or a `checkpoints/<step>`.

  Args:
    path: the folder a user named.
    name: the flag or gin macro that named it, for the errors.
    need_config: whether the run must have its config.gin (to read its model from).

  Raises:
    FileNotFoundError: neither a run with a checkpoint nor one of its checkpoints.
  """
  path = pathlib.Path(path).absolute()
  if path.name.isdigit() and path.parent.name == "checkpoints":
    run, step = RunDir(path.parent.parent), int(path.name)
  else:
    run, step = RunDir(path), None
  if need_config and not run.config.is_file():
    raise FileNotFoundError(f"{name}={str(path)!r}: not a training MODEL_DIR or one of its"
                            f" checkpoints/<step> folders ({run.config} is missing).")
  step = run.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{name}={str(path)!r}: no checkpoint in {run.checkpoints} (nor a"
                            " checkpoints/<step> folder or a pretrained model folder).")
  return run, step


def pinned_checkpoint(checkpoint_path: str | pathlib.Path, name: str = "CHECKPOINT_PATH"
                      ) -> tuple[pathlib.Path, Optional[int]]:
  """(folder, step) of what a checkpoint path names, looked up once: a pretrained folder
  (step None), or a run's `checkpoints/<step>` (a MODEL_DIR: its newest now, as process 0
  found it, for every process). A command loads the folder (`load_params`) and labels what
  it writes with it, so that a checkpoint saved meanwhile changes neither.

  Raises:
    FileNotFoundError: as `resolve_checkpoint`.
  """
  if is_pretrained_folder(checkpoint_path):
    return pathlib.Path(checkpoint_path).absolute(), None
  run, step = resolve_checkpoint(checkpoint_path, name)
  step = int(multihost_utils.broadcast_one_to_all(np.int32(step)))
  return run.checkpoint(step), step


def is_pretrained_folder(path: str | pathlib.Path) -> bool:
  """Whether `path` is a Hugging Face T5 or sentence-transformers folder."""
  path = pathlib.Path(path)
  return (path / "modules.json").exists() or (path / "config.json").exists()


def load_params(model: dual_encoder.DualEncoder, checkpoint_path: str | pathlib.Path,
                lengths: dict, mesh: Optional[jax.sharding.Mesh] = None,
                name: str = "CHECKPOINT_PATH") -> dict:
  """The model's parameters from a training MODEL_DIR, a `checkpoints/<step>` folder, or a
  pretrained Hugging Face / sentence-transformers folder (named by `name`, for errors).

  The parameters are partitioned over `mesh` (default: all devices, no "model" axis) as
  training partitions them (T5X's logical axis rules), whatever devices and mesh saved them:
  with NUM_PARTITIONS = m, each device holds about 1/m of the weights. Only a checkpoint's
  TrainState parameters are read; without `model`, they are replicated.

  Raises:
    pretrained.CheckpointError: the checkpoint does not restore (damaged files); the error
      names the newest checkpoint of the run that does.
  """
  mesh = partitioning.create_mesh() if mesh is None else mesh
  shardings = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if model is not None:
    ids = jax.ShapeDtypeStruct((1, lengths["queries"]), jax.numpy.int32)
    boxed = jax.eval_shape(model.init, jax.random.key(0), ids, ids)["params"]
    shardings = partitioning.logical_shardings(
        boxed, mesh, partitioning.standard_logical_axis_rules())
  if is_pretrained_folder(checkpoint_path):
    config, tower, kernel = pretrained.load_initial_checkpoint(checkpoint_path)
    pretrained.check_compatible(config, model.config, f"{name}={str(checkpoint_path)!r}")
    ids = jax.numpy.zeros((1, lengths["queries"]), jax.numpy.int32)
    params = nn.unbox(model.init(jax.random.key(0), ids, ids))["params"]
    return jax.device_put(pretrained.with_pretrained(
        jax.device_get(params), model.architecture, tower, kernel), shardings)
  run, step = resolve_checkpoint(checkpoint_path, name)
  _LOG.info("Parameters of step %d from %s.", step, run.path)
  manager = restoring_manager(run.checkpoints, item_handlers=ocp.PyTreeCheckpointHandler())
  params, error = agreed(lambda: _restore_params(manager, step, shardings))
  if error is None:
    return params
  good = next((s for s in sorted(manager.all_steps(), reverse=True) if s < step
               and agreed(lambda s=s: _restore_params(manager, s, shardings))[1] is None), None)
  raise pretrained.CheckpointError(
      f"{name}={str(checkpoint_path)!r}: the checkpoint of step {step} ({run.checkpoint(step)})"
      f" does not restore: {error}. " + (
          f"The newest checkpoint that does is step {good}: {run.checkpoint(good)}."
          if good is not None else f"No older checkpoint in {run.checkpoints} restores."))


def _restore_params(manager: ocp.CheckpointManager, step: int, shardings: Any) -> dict:
  """The `params` of checkpoint `step`'s TrainState, with `shardings` (one sharding for
  all, or a tree of them like the parameters)."""
  metadata = manager.item_metadata(step)["params"]
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, metadata)
  target = {"params": jax.tree.map(
      lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      metadata, shardings)}
  return manager.restore(step, args=ocp.args.PyTreeRestore(
      target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))["params"]


def restoring_manager(directory: pathlib.Path, **kwargs) -> ocp.CheckpointManager:
  """A read-only orbax CheckpointManager of `directory` (`kwargs`: its other arguments) whose
  restores wait for no other process: orbax ends a restore with a barrier across processes,
  which a process whose restore raised would never reach; `agreed` agrees instead."""
  local = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                             active_processes={jax.process_index()})
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True, create=False, save_interval_steps=0, multiprocessing_options=local),
      **kwargs)


def agreed(attempt: Callable[[], T]) -> tuple[Optional[T], Optional[str]]:
  """(attempt(), None), or (None, what went wrong: its error here, else the processes where
  it raised) when `attempt` raises on this process or on another. Every process calls it and
  meets one all-gather, whatever fails where; so `attempt` must wait for no other process
  (restore through a `restoring_manager`)."""
  result, error = None, None
  try:
    result = attempt()
  except Exception as e:  # pylint: disable=broad-except  # the storage layer's, said plainly
    error = f"{type(e).__name__}: {first_line(e)}"
  if jax.process_count() > 1:
    failed = multihost_utils.process_allgather(np.int32(error is not None))
    if failed.any() and error is None:
      result, error = None, f"it failed on process(es) {np.flatnonzero(failed).tolist()}"
  return result, error


def first_line(error: BaseException, limit: int = 300) -> str:
  """An exception's message: its first line, without TensorStore's spec dump, at most
  `limit` characters."""
  text = (str(error).strip().splitlines() or [""])[0].split(" See full TensorStore details")[0]
  return text if len(text) <= limit else text[:limit] + " ..."
