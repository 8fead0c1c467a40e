"""What the training loop does besides the step: when, progress, stopping, what it writes.

`itstime` is the loop's one cadence test (log, checkpoint, evaluate); `Progress` reads each
step's metrics one step late, so that the host waits for the device only where it must;
`StopSignal` turns SIGTERM into a checkpoint and a clean stop at a step every process agrees
on; a step whose metrics are not finite stops the run (`check_finite`).
"""

import json
import logging
import math
import pathlib
import signal
import time
from typing import Callable, Optional

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

_LOG = logging.getLogger("samtone_jax.train")  # its lines are train's progress, so named


class TrainingError(RuntimeError):
  """A run that cannot go on (a non-finite loss, a checkpoint that does not restore)."""


def itstime(step: int, period: int, last_step: int, at_last: bool = True) -> bool:
  """Whether step `step` is one of every `period`-th steps, or (`at_last`) the last one."""
  return step % period == 0 and step != last_step or at_last and step == last_step


def check_finite(step: int, values: dict[str, float], latest_checkpoint: Optional[int]) -> None:
  """TrainingError if a value is not finite, naming the step and the last good checkpoint."""
  if not all(math.isfinite(v) for v in values.values()):
    raise TrainingError(
        f"non-finite training metrics at step {step}: {values}. The last good checkpoint"
        f" (step {latest_checkpoint}) is kept (SKIP_NONFINITE = True skips such steps"
        " instead).")


class Progress:
  """Training metrics, read one step late: step n's are fetched while step n + 1 runs, so
  that the host waits for the device only where it must (a log line, a checkpoint)."""

  def __init__(self, writer, batch_size: int, train_steps: int, step: int,
               latest_checkpoint: Callable[[], Optional[int]], count_skipped: bool):
    self._writer, self._batch_size, self._train_steps = writer, batch_size, train_steps
    self._latest_checkpoint, self._count_skipped = latest_checkpoint, count_skipped
    self._pending = None  # (step, metrics on the device)
    self._start_time, self._start_step = time.perf_counter(), step
    self.values: dict[str, float] = {}  # the newest step read, less "skipped"
    self.skipped = 0  # skipped steps since the last log line
    self.skipped_total = 0  # and before it, in this invocation

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    """Takes step `step`'s metrics (not waited for) and reads the step before's."""
    self.read()
    self._pending = (step, metrics)

  def read(self) -> None:
    """Waits for the pending step's metrics; TrainingError if they are not finite (in a
    step that was not skipped)."""
    if self._pending is None:
      return
    step, metrics = self._pending
    self._pending = None
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    skipped = int(values.pop("skipped", 0))
    if not skipped:
      check_finite(step, values, self._latest_checkpoint())
    self.skipped += skipped
    self.values = values

  def log(self, step: int) -> None:
    """A progress line and the summaries of step `step`."""
    self.read()
    values = self.values
    rate = (step - self._start_step) * self._batch_size / (time.perf_counter()
                                                           - self._start_time)
    eta = (self._train_steps - step) * self._batch_size / max(rate, 1e-9)
    _LOG.info("step %d/%d  loss %.4f  acc %.3f  mrr %.3f  lr %.2e  %.0f examples/s  ETA %.0f s"
              "%s%s",
              step, self._train_steps, values["loss"], values["accuracy_qp"], values["mrr_qp"],
              values["learning_rate"], rate, eta,
              f"  empty negatives {values['empty_negatives']:.1%}"
              if values.get("empty_negatives") else "",
              f"  skipped {self.skipped}" if self.skipped else "")
    summaries = dict(values, examples_per_second=rate)
    if self._count_skipped:
      summaries["skipped_steps"] = self.skipped
    write_summaries(self._writer, step, summaries)
    self._start_time, self._start_step = time.perf_counter(), step
    self.skipped_total, self.skipped = self.skipped_total + self.skipped, 0

  def final(self) -> dict[str, float]:
    """{"train/<metric>": value} of the newest step read, and the steps skipped."""
    self.read()
    final = {f"train/{k}": v for k, v in self.values.items()}
    if self._count_skipped:
      final["train/skipped_steps"] = self.skipped_total + self.skipped
    return final


class StopSignal:
  """SIGTERM, caught: the loop saves a checkpoint and stops. Every process stops at the same
  step: with several, they agree at each `period`-th step (one all-gather); alone, a
  process looks at every step, for free. A context manager: the handler before is put back
  on exit."""

  def __init__(self, period: int):
    self.signal = None
    self._period = period
    self._agreed = False
    self._previous = None

  def __enter__(self) -> "StopSignal":
    self._previous = signal.signal(signal.SIGTERM, self._catch)
    return self

  def __exit__(self, *_) -> None:
    signal.signal(signal.SIGTERM, self._previous)

  def _catch(self, signum, _):
    self.signal = signum

  def agreed(self, step: int) -> bool:
    """Whether every process has been asked to stop, as of `step`."""
    if jax.process_count() == 1:
      return self.signal is not None
    if step % self._period == 0:
      flag = np.int32(self.signal is not None)
      self._agreed = bool(multihost_utils.process_allgather(flag).max())
    return self._agreed


def log_example_ids(path: pathlib.Path, step: int, batch: dict[str, jax.Array]) -> None:
  """Appends step `step`'s content ids to `path` (MODEL_DIR/example_ids.jsonl; process 0)."""
  ids = {k: multihost_utils.process_allgather(batch[k], tiled=True).tolist()
         for k in ("query_ids", "passage_ids")}
  if jax.process_index() == 0:  # one unbuffered write: a line is whole even after a kill
    with path.open("ab", buffering=0) as f:
      f.write((json.dumps(dict(step=step, **ids)) + "\n").encode())


def write_summaries(writer, step: int, values: dict[str, float]) -> None:
  """TensorBoard scalars of step `step` (process 0)."""
  if jax.process_index() != 0:
    return
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(name, value)
  writer.flush()
