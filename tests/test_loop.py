"""The loop's cadence, its non-finite stop and its SIGTERM handling."""

import math
import os
import signal

import pytest

from samtone_jax import loop


@pytest.mark.parametrize("period, last", [(4, 12), (5, 12), (1, 3), (50, 12)])
def test_itstime_is_every_period_and_the_last_step(period, last):
  steps = range(1, last + 1)
  assert [s for s in steps if loop.itstime(s, period, last)] == sorted(
      {s for s in steps if s % period == 0} | {last})
  assert [s for s in steps if loop.itstime(s, period, last, at_last=False)] == [
      s for s in steps if s % period == 0 and s != last]


def test_check_finite_names_the_step_and_the_last_checkpoint():
  loop.check_finite(3, {"loss": 1.0, "grad_norm": 0.0}, 2)
  for bad in (math.nan, math.inf, -math.inf):
    with pytest.raises(loop.TrainingError, match=r"at step 3: .*checkpoint \(step 2\)"):
      loop.check_finite(3, {"loss": 1.0, "grad_norm": bad}, 2)


def test_a_sigterm_is_caught_inside_and_the_handler_before_is_put_back():
  before = signal.getsignal(signal.SIGTERM)
  with loop.StopSignal(period=10) as stop:
    assert not stop.agreed(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.agreed(2) and stop.signal == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before
