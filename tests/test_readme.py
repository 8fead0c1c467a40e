"""README.md and docs/ say what the repository holds: commands name real modules and gin
files, paths and links point at files that exist, tables are well formed, and the pages
point nowhere outside the repository.

Fast: nothing is trained or run; modules are found with importlib, not executed.
"""

import importlib.util
import pathlib
import re

import pytest

import samtone_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _name(page: pathlib.Path) -> str:
  return str(page.relative_to(ROOT))


def _bash_blocks(text: str) -> list[str]:
  return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def _commands(block: str) -> list[str]:
  """The block's logical lines: comments removed, `\\` continuations joined."""
  lines, current = [], ""
  for line in block.splitlines():
    line = re.sub(r"(^|\s)#.*$", "", line).rstrip()
    if line.endswith("\\"):
      current += line[:-1] + " "
      continue
    current += line
    if current.strip():
      lines.append(current.strip())
    current = ""
  if current.strip():
    lines.append(current.strip())
  return lines


def _all_commands(page: pathlib.Path) -> list[str]:
  return [c for block in _bash_blocks(page.read_text(encoding="utf-8")) for c in _commands(block)]


def _modules(command: str) -> list[str]:
  return re.findall(r"python3? -m (samtone_jax(?:\.\w+)*)", command)


def _gin_files(command: str) -> list[str]:
  return [name.strip("'\"\\") for name in re.findall(r"--gin_file[= ]([^\s;&|]+)", command)]


def _is_placeholder(path: str) -> bool:
  """A user's own file: under /tmp/, built from a shell variable, or a run's config.gin."""
  return path.startswith("/tmp/") or "$" in path or path.endswith("config.gin")


def _gin_file_exists(path: str) -> bool:
  return (ROOT / path).is_file() or (samtone_jax.GIN_CONFIGS_DIR / path).is_file()


def _expand_braces(text: str) -> list[str]:
  """Shell brace expansion: `a_{b,c}.gin` -> [`a_b.gin`, `a_c.gin`]."""
  match = re.search(r"\{([^{}]*)\}", text)
  if not match:
    return [text]
  return [expanded for option in match.group(1).split(",")
          for expanded in _expand_braces(text[:match.start()] + option + text[match.end():])]


def _strip_code(text: str) -> str:
  """The page without fenced code blocks (links and tables live outside them)."""
  return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def test_the_readme_has_commands():
  commands = _all_commands(README)
  assert any(_modules(c) for c in commands), "README.md shows no python -m samtone_jax.* command"
  assert any(_gin_files(c) for c in commands), "README.md shows no --gin_file"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_commands_name_modules_and_gin_files_that_exist(page):
  """Every `python -m samtone_jax.X` of a bash block names a module of the package, and each
  --gin_file it reads is in the repository or the shipped gin configs."""
  problems = []
  for command in _all_commands(page):
    modules = _modules(command)
    for module in modules:
      if importlib.util.find_spec(module) is None:
        problems.append(f"no module {module}: {command}")
    if not modules:
      continue
    for path in _gin_files(command):
      if not _is_placeholder(path) and not _gin_file_exists(path):
        problems.append(f"no gin file {path!r}: {command}")
  assert not problems, f"{_name(page)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_scripts_and_gin_paths_exist(page):
  """`benchmarks/*.py`, `python path/to/script.py` and `gin_configs/...` paths that the page
  names (brace patterns expanded) exist."""
  text = page.read_text(encoding="utf-8")
  problems = []
  scripts = set(re.findall(r"\bbenchmarks/[\w./-]*\.py\b", text))
  scripts |= set(re.findall(r"\bpython3? ((?!-)[\w./-]+\.py)\b", text))
  for script in sorted(scripts):
    if not (ROOT / script).is_file():
      problems.append(f"no script {script}")
  for pattern in sorted(set(re.findall(r"\bgin_configs/[\w./{},-]*", text))):
    for path in _expand_braces(pattern.rstrip(".,")):
      if not (ROOT / path).exists():
        problems.append(f"no {path} (from {pattern})")
  for pattern in sorted(set(re.findall(r"`((?:experiments|models|architectures|losses|runs)"
                                       r"/[\w./{},-]*\.gin)`", text))):
    for path in _expand_braces(pattern):
      if not (samtone_jax.GIN_CONFIGS_DIR / path).is_file():
        problems.append(f"no gin file {path} (from `{pattern}`)")
  assert not problems, f"{_name(page)}:\n" + "\n".join(problems)


def _anchors(page: pathlib.Path) -> set[str]:
  """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to '-'."""
  headings = re.findall(r"^#+\s+(.*?)\s*$", _strip_code(page.read_text(encoding="utf-8")),
                        flags=re.M)
  return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_and_images_resolve(page):
  text = _strip_code(page.read_text(encoding="utf-8"))
  text = re.sub(r"`[^`\n]*`", "", text)
  problems = []
  for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
    if re.match(r"[a-z][a-z0-9+.-]*:", target):
      continue  # a URL (https:, mailto:)
    path, _, anchor = target.partition("#")
    linked = (page.parent / path) if path else page
    if not linked.is_file():
      problems.append(target)
    elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
      problems.append(f"{target} (no such heading)")
  assert not problems, f"{_name(page)}: broken links {problems}"


def _cells(row: str) -> int:
  """The number of cells of a table row (pipes inside `code` do not count)."""
  row = re.sub(r"`[^`]*`", "``", row.strip())
  row = row.replace(r"\|", "")
  if row.startswith("|"):
    row = row[1:]
  if row.endswith("|"):
    row = row[:-1]
  return row.count("|") + 1


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_tables_are_well_formed(page):
  """Every table has a header and a separator with as many columns as each of its rows."""
  lines = _strip_code(page.read_text(encoding="utf-8")).splitlines()
  problems, i = [], 0
  while i < len(lines):
    if not lines[i].lstrip().startswith("|"):
      i += 1
      continue
    table = []
    while i < len(lines) and lines[i].lstrip().startswith("|"):
      table.append((i + 1, lines[i]))
      i += 1
    first_line = table[0][0]
    if len(table) < 2 or not re.fullmatch(r"\s*\|?(\s*:?-+:?\s*\|)*\s*:?-+:?\s*\|?\s*",
                                          table[1][1]):
      problems.append(f"table at line {first_line}: no separator under its header")
      continue
    width = _cells(table[0][1])
    for number, row in table[1:]:
      if _cells(row) != width:
        problems.append(f"table at line {first_line}: row {number} has {_cells(row)} cells,"
                        f" the header {width}")
  assert not problems, f"{_name(page)} (line numbers outside code blocks):\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_pages_point_nowhere_outside_the_repository(page):
  """A user's clone has only the repository: no page may send a reader elsewhere."""
  text = page.read_text(encoding="utf-8")
  for forbidden in ("DESIGN.md", "../shared", "shared folder"):
    assert forbidden not in text, f"{_name(page)} mentions {forbidden!r}"
  issues = re.findall(r"\bissues?\s*#?\d+", text, flags=re.I)
  assert not issues, f"{_name(page)} refers to {issues}"


def test_installation_commands_are_shown():
  """The README's install and test commands, in bash blocks (as .ci/run runs them)."""
  commands = [c for block in _bash_blocks(README.read_text(encoding="utf-8"))
              for c in block.splitlines()]
  for command in ('pip install -e ".[test]"', "pytest"):
    assert command in [c.strip() for c in commands], f"README.md lost {command!r}"
