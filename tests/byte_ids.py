"""seqio.ByteVocabulary's ids, written out, as the tests' independent reference."""

import numpy as np


def byte_ids(texts: list[str], length: int) -> np.ndarray:
  """[len(texts), length] int32: each text's UTF-8 bytes + 3, cut to length - 1, then EOS
  (1), then 0s."""
  ids = np.zeros((len(texts), length), np.int32)
  for row, text in enumerate(texts):
    tokens = [b + 3 for b in text.encode()][:length - 1] + [1]
    ids[row, :len(tokens)] = tokens
  return ids
