"""A helper of the readers' tests: the DataError that reading raises."""

import pytest

from samtone_jax.data_files import DataError


def raised(fn, *args, **kwargs) -> DataError:
  """The DataError of fn(*args, **kwargs), reading its result through if it is an iterator
  (lazy readers raise while they are read)."""
  with pytest.raises(DataError) as info:
    result = fn(*args, **kwargs)
    if not isinstance(result, dict):
      list(result)
  return info.value
