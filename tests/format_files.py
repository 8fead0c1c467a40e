"""Small files in the published formats of MS MARCO, BEIR and MultiReQA: the fixtures of
the reader tests (test_msmarco.py, test_beir_format.py, test_multireqa.py), which the
builder, task and fuzz tests also write.

MultiReQA's are written as the publishers write them: gzipped JSON lines, MRQA's header line
and inclusive char spans, MultiReQA's candidate ids sorted as strings.
"""

import gzip
import json


def write(path, content):
  """Writes `content` (bytes, or str as UTF-8) to `path`, making its folder; returns `path`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
  return path


def write_json_lines(path, records):
  """Writes `records` to `path` as JSON lines (gzipped if the name ends in .gz), a str record
  as is; returns `path`."""
  text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt", encoding="utf-8") as f:
    f.write(text)
  return path


# --- MS MARCO ------------------------------------------------------------------------------

# "café" encoded as UTF-8, read as Latin-1 and encoded again: the published collection's bytes.
MOJIBAKE = "café".encode("utf-8").decode("latin-1").encode("utf-8")

# Pids are neither contiguous nor sorted; "99" is an empty passage.
COLLECTION = (b"7\tThe sky is blue.\n"
              b"1000\tLe " + MOJIBAKE + b" au lait \n"
              b"42\tGrass is green.\n"
              b"3\tWater is wet.\n"
              b"99\t\n")
MSMARCO_FILES = {
    "collection.tsv": COLLECTION,
    # Spaces and U+00A0 around the texts; "5" is blank once stripped.
    "queries.train.tsv": "1\t what colour is the sky\u00a0\n2\tis grass\u00a0green \n5\t \u00a0\n",
    "qrels.train.tsv": "1\t0\t1000\t1\n2\t0\t42\t1\n1\t0\t7\t1\n5\t0\t3\t1\n2\t0\t99\t1\n",
    "queries.dev.tsv": "10\twhat is wet\n11\tunjudged query\n12\t  colour of\u00a0grass\n",
    # Space-separated, as some releases are.
    "qrels.dev.tsv": "10 0 3 1\n12 0 42 1\n12 0 7 1\n",
    "triples.train.small.tsv": (
        "  what colour is the sky\u00a0\tThe sky is blue.\tGrass is green.\n"
        "is water wet\tWater is wet.\t\n"),
    "qidpidtriples.train.full.2.tsv": "1\t7\t42\n2\t42\t1000\n",
}


# --- BEIR ----------------------------------------------------------------------------------

def jsonl(*records):
  """JSON lines of `records`, as BEIR's corpus and queries files."""
  return "".join(json.dumps(r) + "\n" for r in records)


def qrels(*rows):
  """A BEIR qrels file: header, TAB-separated, CRLF line endings."""
  return "".join(f"{q}\t{d}\t{s}\r\n" for q, d, s in [("query-id", "corpus-id", "score"),
                                                       *rows])


# Ids look numeric but are strings ("0012" and "12" are different documents); query "0012"
# is also a corpus id, as in ArguAna. Document "e" is empty.
CORPUS = jsonl(
    {"_id": "0012", "title": "", "text": "Fish oil and the heart.", "metadata": {}},
    {"_id": "12", "title": "Vitamin D", "text": "Sunlight makes it.", "metadata": {"url": "u"}},
    {"_id": "MED-ü", "title": "Café au lait ☕", "text": "", "metadata": {}},
    {"_id": "e", "title": "", "text": " ", "metadata": {}},
)
QUERIES = jsonl(
    {"_id": "0012", "text": "fish oil", "metadata": {}},
    {"_id": "7", "text": "vitamin D sources"},
    {"_id": "8", "text": "unjudged query"},
    {"_id": "9", "text": "coffee ☕"},
)
BEIR_FILES = {
    "corpus.jsonl": CORPUS,
    "queries.jsonl": QUERIES,
    "qrels/test.tsv": qrels(("7", "12", 2), ("7", "0012", 0), ("9", "MED-ü", 1)),
    "qrels/train.tsv": qrels(("9", "MED-ü", 1), ("7", "0012", 0), ("0012", "0012", 1),
                             ("7", "12", 1), ("9", "e", 1)),
}


# --- MultiReQA -----------------------------------------------------------------------------

# Context A: unicode and a tab inside; its sentences are MultiReQA's _0, _2 and _10 (an
# index skipped, and "_10" sorts before "_2" as a string).
A_SENTENCES = ("Zürich is the largest city in Switzerland.", "It lies on Lake Zürich.",
               "The lake is 40 km long.")
A_TEXT = "\t".join(A_SENTENCES[:2]) + " " + A_SENTENCES[2]
# Context B repeats a sentence of A (both stay in the pool) and a question of A.
B_SENTENCES = ("The lake is 40 km long.", "Its water is clean enough to drink.")
B_TEXT = " ".join(B_SENTENCES)
C_TEXT = "A context that MultiReQA does not list."


def qa(qid, question, *answers):
  """An MRQA `qas` entry whose answers are (text, context) pairs, located by text."""
  detected = []
  for answer, context in answers:
    start = context.index(answer)
    span = [start, start + len(answer) - 1]  # inclusive, as MRQA
    detected.append({"text": answer, "char_spans": [span], "token_spans": [[0, 0]]})
  return {"qid": qid, "question": question, "id": "x", "answers": [a for a, _ in answers],
          "detected_answers": detected}


A_QAS = [
    qa("a1", "Which city is the largest in Switzerland?", ("Zürich", A_TEXT)),
    # Two answers in two sentences, one of them listed twice (two annotators).
    qa("a2", "What lies on the lake?", ("Lake Zürich", A_TEXT), ("Lake Zürich", A_TEXT),
       ("The lake", A_TEXT)),
    qa("a3", "Where is it?", ("Switzerland.\tIt lies", A_TEXT)),  # crosses a boundary
    qa("a4", "How long is the lake?", ("40 km", A_TEXT)),
]
B_QAS = [
    qa("b1", " How long is the\u00a0lake? ", ("40 km", B_TEXT)),  # a4, differently spaced
    qa("b2", "Is the water clean?", ("clean", B_TEXT)),
]
MRQA_RECORDS = [
    {"header": {"dataset": "SQuAD", "split": "dev"}},
    {"id": "", "context": A_TEXT, "qas": A_QAS},
    {"context": B_TEXT, "qas": B_QAS},  # no context id
    {"id": "c", "context": C_TEXT, "qas": [qa("c1", "Which context?", ("context", C_TEXT))]},
]
KEY_A, KEY_B = "SQuAD_a1/a2/a3/a4", "SQuAD_b1/b2"
KEY_ORPHAN = "SQuAD_z1"  # a group whose context is not in the MRQA file


def _sentence_lines(key, context, sentences, indices):
  """Candidate lines of a context's sentences, located by text."""
  lines, start = [], 0
  for sentence, index in zip(sentences, indices):
    start = context.index(sentence, start)
    lines.append({"candidate_id": f"{key}/_{index}", "response_start": start,
                  "response_end": start + len(sentence)})
  return lines


CANDIDATES = sorted(
    _sentence_lines(KEY_A, A_TEXT, A_SENTENCES, ("0", "2", "10"))
    + _sentence_lines(KEY_B, B_TEXT, B_SENTENCES, ("0", "1"))
    + [{"candidate_id": f"{KEY_ORPHAN}/_0", "response_start": 0, "response_end": 4}],
    key=lambda r: r["candidate_id"])
