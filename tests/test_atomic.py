"""`write_atomically`: a result file is written whole or not at all."""

import pytest

from samtone_jax import atomic


def test_text_bytes_and_a_writer_are_written_whole(tmp_path):
  atomic.write_atomically(tmp_path / "metrics.json", '{"caf\u00e9": 1}\n')
  atomic.write_atomically(tmp_path / "shard.npy", b"\x93NUMPY\x00")
  atomic.write_atomically(tmp_path / "run.trec", lambda f: f.write(b"q1 Q0 d1 1 0.5 x\n"))
  assert (tmp_path / "metrics.json").read_bytes() == b'{"caf\xc3\xa9": 1}\n'
  assert (tmp_path / "shard.npy").read_bytes() == b"\x93NUMPY\x00"
  assert (tmp_path / "run.trec").read_bytes() == b"q1 Q0 d1 1 0.5 x\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "run.trec",
                                                        "shard.npy"]


def test_a_crash_while_writing_leaves_the_old_file(tmp_path):
  """A writer that raises halfway (as a process killed mid-write): the old file is left as
  it was, and no partial file beside it."""
  path = tmp_path / "metrics.json"
  path.write_text("old")

  def crash(f):
    f.write(b"half of the new")
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError, match="killed"):
    atomic.write_atomically(path, crash)
  assert path.read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_new_file_is_replaced_whole(tmp_path):
  path = tmp_path / "config.gin"
  atomic.write_atomically(path, "a = 1\n" * 1000)
  atomic.write_atomically(path, "b = 2\n")
  assert path.read_text() == "b = 2\n"
