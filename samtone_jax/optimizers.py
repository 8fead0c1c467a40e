"""Adafactor with T5X's defaults, and the learning-rate schedules of the paper's runs.

The paper (Section 4.1): Adafactor, learning rate 1e-3 decaying linearly to 0 at the last of
20,000 steps. T5X's Adafactor: factored second moments for matrices, decay rate 0.8, update
clipping at RMS 1.0, no momentum, updates scaled by the parameters' RMS.

One fine-tuning detail differs by default: T5X restores the pretrained checkpoint's step
count (1,000,000 for T5 v1.1), and Adafactor's second-moment decay, 1 - (step + 1)^-0.8, is
taken at that step (T5X's `step_offset` = 0), so it starts near 1 (0.99998); our step count
starts at 0, where the decay is 0. `initial_step` (ADAFACTOR_INITIAL_STEP) is the step the
decay counts from: 1,000,000 reproduces T5X's fine-tuning of T5 v1.1, 0 training from
scratch. The learning-rate schedule always counts from 0.
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
              min_dim_size_to_factor: int = 128, initial_step: int = 0
              ) -> optax.GradientTransformation:
  """optax's Adafactor with T5X's defaults (factored, no momentum, RMS clipping 1.0); its
  second-moment decay counts steps from `initial_step` (see the module docstring)."""
  if not isinstance(initial_step, int) or isinstance(initial_step, bool) or initial_step < 0:
    raise ValueError(f"ADAFACTOR_INITIAL_STEP must be an int >= 0, got {initial_step!r}.")
  return optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate,
                         decay_offset=-initial_step,  # optax decays at (count - offset)
                         clipping_threshold=clipping_threshold,
                         multiply_by_parameter_scale=multiply_by_parameter_scale,
                         min_dim_size_to_factor=min_dim_size_to_factor, momentum=None,
                         factored=True)
