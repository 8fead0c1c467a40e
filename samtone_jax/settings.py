"""Training's settings, grouped as T5X groups them (`DatasetConfig`, `SaveCheckpointConfig`):
small frozen dataclasses that gin builds (runs/train.gin binds each field to its macro) and
that check themselves when built, so that a value out of range stops the run at start-up,
naming the macro, before anything is written or compiled.

  train_lib.train.data = @settings.Data()
  settings.Data.batch_size = %BATCH_SIZE
"""

import dataclasses
import math
import numbers
import re
from typing import Any, Optional, Sequence

from samtone_jax import losses


def check(name: str, ok: bool, value: Any, what: str) -> None:
  """ValueError "NAME=value: what" unless `ok`."""
  if not ok:
    raise ValueError(f"{name}={value!r}: {what}")


def is_int(value: Any, low: int = 1) -> bool:
  """Whether `value` is an int (not a bool) >= low."""
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_positive(fields: dict[str, Any]) -> None:
  for name, value in fields.items():
    check(name, is_int(value), value, "must be a positive int.")


@dataclasses.dataclass(frozen=True)
class Data:
  """The training examples.

  Attributes:
    mixture_or_task_name: a SeqIO task or mixture (MIXTURE_OR_TASK_NAME).
    task_feature_lengths: {"queries": Lq, "passages": Lp} (TASK_FEATURE_LENGTHS).
    batch_size: the global batch, all in-batch negatives (BATCH_SIZE).
    num_negatives: hard negatives an example (tasks with `negative_passages`), drawn from the
      example's pool (NUM_NEGATIVES).
    input_shards: read the data in this many shards, each process a contiguous share (None:
      one a process); the global batches depend on it, not on the number of processes.
  """
  mixture_or_task_name: str
  task_feature_lengths: dict[str, int]
  batch_size: int
  num_negatives: int = 0
  input_shards: Optional[int] = None

  def __post_init__(self):
    _check_positive({"BATCH_SIZE": self.batch_size})
    lengths = self.task_feature_lengths
    check("TASK_FEATURE_LENGTHS", isinstance(lengths, dict)
          and set(lengths) == {"queries", "passages"}
          and all(is_int(v, 2) for v in lengths.values()), lengths,
          "must be {'queries': Lq, 'passages': Lp}, ints >= 2 (room for a token and EOS).")
    check("NUM_NEGATIVES", is_int(self.num_negatives, 0), self.num_negatives,
          "must be an int >= 0.")
    check("settings.Data.input_shards", self.input_shards is None or is_int(self.input_shards),
          self.input_shards, "must be a positive int or None.")


@dataclasses.dataclass(frozen=True)
class Loss:
  """The contrastive loss (losses/*.gin; `losses.contrastive_loss` says what each does).

  Attributes:
    temperature, same_tower, bidirectional, pair_alpha: TEMPERATURE, SAME_TOWER,
      BIDIRECTIONAL, PAIR_ALPHA.
    mask_duplicates: remove duplicate texts from the denominators, and hard negatives that
      are known positives of the anchor, by content ids (MASK_DUPLICATES).
  """
  temperature: float = 0.01
  same_tower: str = "query"
  bidirectional: bool = True
  pair_alpha: float = 0.0
  mask_duplicates: bool = False

  def __post_init__(self):
    try:
      losses.check_options(**self.options())
    except ValueError as e:
      raise ValueError(
          f"TEMPERATURE={self.temperature!r}, SAME_TOWER={self.same_tower!r},"
          f" BIDIRECTIONAL={self.bidirectional!r}, PAIR_ALPHA={self.pair_alpha!r}: {e}"
      ) from None

  def options(self) -> dict[str, Any]:
    """The keyword arguments of `losses.contrastive_loss`."""
    return dict(temperature=self.temperature, same_tower=self.same_tower,
                bidirectional=self.bidirectional, pair_alpha=self.pair_alpha)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """Adafactor and its schedule.

  Attributes:
    learning_rate, warmup_steps: the schedule, decaying linearly to 0 at TRAIN_STEPS
      (LEARNING_RATE, WARMUP_STEPS).
    adafactor_initial_step: the step Adafactor's second-moment decay counts from: T5X's
      fine-tuning restores the pretrained step (1,000,000 for T5 v1.1; the paper's
      experiments set that), 0 for training from scratch (ADAFACTOR_INITIAL_STEP).
  """
  learning_rate: float = 1e-3
  warmup_steps: int = 0
  adafactor_initial_step: int = 0

  def __post_init__(self):
    check("LEARNING_RATE", isinstance(self.learning_rate, numbers.Real)
          and self.learning_rate > 0 and math.isfinite(self.learning_rate),
          self.learning_rate, "must be a finite number > 0.")
    check("WARMUP_STEPS", is_int(self.warmup_steps, 0), self.warmup_steps,
          "must be an int >= 0.")
    check("ADAFACTOR_INITIAL_STEP", is_int(self.adafactor_initial_step, 0),
          self.adafactor_initial_step, "must be an int >= 0.")


@dataclasses.dataclass(frozen=True)
class Checkpointing:
  """When a run saves, what it keeps, and how it resumes.

  Attributes:
    period: save every N steps, and at the end (CHECKPOINT_PERIOD).
    keep: the newest checkpoints kept.
    strict_restore: on resume, a newest checkpoint that does not restore stops the run,
      instead of being moved aside to MODEL_DIR/damaged/<step> for the newest one that does
      (STRICT_RESTORE).
    steps_per_run: end this invocation, with a checkpoint, after this many steps (for job
      time limits: the next invocation with the same MODEL_DIR goes on; None: to the end).
  """
  period: int = 1000
  keep: int = 3
  strict_restore: bool = False
  steps_per_run: Optional[int] = None

  def __post_init__(self):
    _check_positive({"CHECKPOINT_PERIOD": self.period, "settings.Checkpointing.keep": self.keep})
    check("settings.Checkpointing.steps_per_run",
          self.steps_per_run is None or is_int(self.steps_per_run), self.steps_per_run,
          "must be a positive int or None.")


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What a run evaluates, every `period` steps and at the end.

  Attributes:
    period: every N steps (EVAL_PERIOD).
    split, batches: in-batch metrics on `batches` batches of the task's `split` (EVAL_SPLIT;
      None: none).
    tasks, k: corpus-level retrieval (P@1, MRR, MRR@10, Recall@k, nDCG@k) on these
      evaluation sets (eval_sets.py; EVAL_TASKS), each query against its whole corpus (top k).
  """
  period: int = 1000
  split: Optional[str] = "validation"
  batches: int = 20
  tasks: Sequence[str] = ()
  k: int = 1000

  def __post_init__(self):
    _check_positive({"EVAL_PERIOD": self.period, "settings.Evaluation.batches": self.batches,
                     "settings.Evaluation.k": self.k})


# train's arguments that these groups now hold (a run's config.gin written before binds them
# on train): their bindings now.
_MOVED_FROM_TRAIN = {
    **{name: f"Data.{name}" for name in ("mixture_or_task_name", "task_feature_lengths",
                                         "batch_size", "num_negatives", "input_shards")},
    **{name: f"Loss.{name}" for name in ("temperature", "same_tower", "bidirectional",
                                         "pair_alpha", "mask_duplicates")},
    **{name: f"Optimizer.{name}" for name in ("learning_rate", "warmup_steps",
                                              "adafactor_initial_step")},
    "checkpoint_period": "Checkpointing.period", "keep_checkpoints": "Checkpointing.keep",
    "strict_restore": "Checkpointing.strict_restore",
    "steps_per_run": "Checkpointing.steps_per_run",
    **{f"eval_{name}": f"Evaluation.{name}" for name in ("period", "split", "batches", "tasks",
                                                         "k")},
}
_GROUPS = {"data": "Data", "loss": "Loss", "optimizer": "Optimizer",
           "checkpointing": "Checkpointing", "evaluation": "Evaluation"}
_TRAIN_BINDING = re.compile(r"^(\s*)(\w+)\.train\.(\w+)(\s*=)", re.MULTILINE)


def upgrade_bindings(text: str, whole_file: bool = False) -> str:
  """Gin text (a file, or --gin. bindings) with its bindings of train's arguments that moved
  here (`train_lib.train.checkpoint_period = 1000`, as a run's config.gin of an earlier
  version has them) rebound where they are now (`settings.Checkpointing.period = 1000`);
  other text is left as it is. A `whole_file` that binds train also gets this module's
  import and train's bindings of the groups, so that it configures a run alone, as it did."""
  moved = [m for m in _TRAIN_BINDING.finditer(text) if m.group(3) in _MOVED_FROM_TRAIN]
  if not moved:
    return text
  text = _TRAIN_BINDING.sub(
      lambda m: (f"{m.group(1)}settings.{_MOVED_FROM_TRAIN[m.group(3)]}{m.group(4)}"
                 if m.group(3) in _MOVED_FROM_TRAIN else m.group(0)), text)
  if whole_file:
    alias = moved[0].group(2)
    text = text.replace("from __gin__ import dynamic_registration\n",
                        "from __gin__ import dynamic_registration\n"
                        "from samtone_jax import settings\n", 1)
    text += "".join(f"\n{alias}.train.{arg} = @settings.{group}()"
                    for arg, group in _GROUPS.items()) + "\n"
  return text
