"""Text normalisation and the training examples' empty texts, against written-out references."""

import logging

import pytest

from samtone_jax import data_files

# Unicode's White_Space characters, written out: after NFKC, each of them is a space.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200b))) + (
    "\u2028\u2029\u202f\u205f\u3000")
# Not whitespace (though Python's str.split splits on the first four).
NOT_WHITE_SPACE = "\x1c\x1d\x1e\x1f\u200b\u180e\ufeff"


@pytest.mark.parametrize("char", WHITE_SPACE)
def test_white_space_folds_to_one_space(char):
  assert data_files.normalize_text(f"{char}a {char}{char}b{char}") == "a b"


@pytest.mark.parametrize("char", NOT_WHITE_SPACE)
def test_other_characters_are_kept(char):
  assert data_files.normalize_text(f" a{char}b ") == f"a{char}b"


def test_drop_empty_drops_examples_and_removes_empty_negatives(caplog):
  examples = [{"query": "q1", "passage": "p1", "negatives": ["n1", " ", "n2", ""],
               "negative_ids": ["a", "b", "c", "d"]},
              {"query": " \u3000", "passage": "p2", "negatives": ["n3"]},
              {"query": "q3", "passage": "", "negatives": []},
              {"query": "q4", "passage": "p4", "negative": "\t"},
              {"query": "q5", "passage": "p5", "negatives": ["\x85"]}]
  with caplog.at_level(logging.WARNING):
    got = list(data_files.drop_empty(examples, "pairs.jsonl"))
  assert got == [{"query": "q1", "passage": "p1", "negatives": ["n1", "n2"],
                  "negative_ids": ["a", "c"]},
                 {"query": "q5", "passage": "p5", "negatives": []}]
  assert "pairs.jsonl: dropped 3 training examples with an empty text" in caplog.text
  assert "removed 3 empty negatives" in caplog.text
