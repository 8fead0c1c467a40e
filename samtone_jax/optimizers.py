"""Adafactor with T5X's defaults, and the learning-rate schedules of the paper's runs.

The paper (Section 4.1): Adafactor, learning rate 1e-3 decaying linearly to 0 at the last of
20,000 steps. T5X's Adafactor: factored second moments for matrices, decay rate 0.8, update
clipping at RMS 1.0, no momentum, updates scaled by the parameters' RMS.
"""

import optax


def linear_decay_schedule(learning_rate: float = 1e-3, train_steps: int = 20_000,
                          warmup_steps: int = 0) -> optax.Schedule:
  """`learning_rate` after an optional linear warm-up from 0, decaying linearly to 0 at
  `train_steps`.

  Args:
    learning_rate: the peak rate (the paper: 1e-3).
    train_steps: the step at which the rate reaches 0 (the paper: 20,000; `TRAIN_STEPS`).
    warmup_steps: steps of linear warm-up from 0 (the paper: none).

  Raises:
    ValueError: for a rate <= 0, train_steps < 1 or warmup_steps outside [0, train_steps).
  """
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
  if not isinstance(train_steps, int) or train_steps < 1:
    raise ValueError(f"TRAIN_STEPS must be an int >= 1, got {train_steps!r}.")
  if not isinstance(warmup_steps, int) or not 0 <= warmup_steps < train_steps:
    raise ValueError(f"warmup_steps must be an int in [0, TRAIN_STEPS={train_steps}), got"
                     f" {warmup_steps!r}.")
  decay = optax.linear_schedule(learning_rate, 0.0, train_steps - warmup_steps)
  if not warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def adafactor(learning_rate: optax.ScalarOrSchedule, *, decay_rate: float = 0.8,
              clipping_threshold: float = 1.0, multiply_by_parameter_scale: bool = True,
              min_dim_size_to_factor: int = 128) -> optax.GradientTransformation:
  """optax's Adafactor with T5X's defaults (factored, no momentum, RMS clipping 1.0)."""
  return optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate,
                         clipping_threshold=clipping_threshold,
                         multiply_by_parameter_scale=multiply_by_parameter_scale,
                         min_dim_size_to_factor=min_dim_size_to_factor, momentum=None,
                         factored=True)
