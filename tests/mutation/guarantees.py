"""Break each README guarantee, one at a time, in a copy of the repository, and check that the
tests notice. Run it through `tests/mutation/guarantees` (which prepares the virtual
environment first).

For every row of guarantees.toml: copy the repository to a temporary folder, replace the row's
`original` text (it must occur exactly once) by its `replacement`, run the row's pytest
selection there, and report

    killed    the selection turned red: some test proves the rule
    survived  the selection stayed green: the rule can be deleted unnoticed
    error     the row no longer matches the code, or its selection is red without the break

Before the breaks, each distinct selection runs once on an unbroken copy: a selection that is
already red would "kill" every break and prove nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TABLE = Path(__file__).with_name("guarantees.toml")
# Left out of the copies: environments, tools, caches and other tools' work folders.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".tools", "mutants", ".mutation", "__pycache__",
                                    ".pytest_cache", "*.egg-info", "rtk-archive-demo")


@dataclass(frozen=True)
class Break:
    id: str
    rule: str
    change: str
    owner: str
    file: str
    original: tuple[str, ...]  # alternatives, for versions of the code: the first found once is used
    replacement: tuple[str, ...]  # one per original
    tests: tuple[str, ...]


def load(path: Path = TABLE) -> list[Break]:
    rows = tomllib.loads(path.read_text())["break"]
    def alternatives(value) -> tuple[str, ...]:
        return tuple(value) if isinstance(value, list) else (value,)

    breaks = [Break(**{**row, "tests": tuple(row["tests"]), "original": alternatives(row["original"]),
                       "replacement": alternatives(row["replacement"])}) for row in rows]
    uneven = [b.id for b in breaks if len(b.original) != len(b.replacement)]
    if uneven:
        raise SystemExit(f"{path}: rows with as many replacements as originals needed: {', '.join(uneven)}")
    ids = [b.id for b in breaks]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SystemExit(f"{path}: duplicate ids {', '.join(duplicates)}")
    return breaks


def copy_repository(into: Path) -> Path:
    copy = into / "repo"
    shutil.copytree(REPO, copy, ignore=NOT_COPIED, symlinks=True)
    tools = REPO / ".tools"
    if tools.exists():  # Azurite, installed by tests/run: shared, never changed by a test
        (copy / ".tools").symlink_to(tools)
    return copy


def pytest(copy: Path, selection: tuple[str, ...], timeout: float) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection]
    try:
        done = subprocess.run(command, cwd=copy, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


def apply(copy: Path, row: Break) -> str | None:
    """Apply the break; the reason it cannot be applied, or None."""
    path = copy / row.file
    if not path.exists():
        return f"{row.file} does not exist"
    text = path.read_text()
    for original, replacement in zip(row.original, row.replacement):
        if text.count(original) == 1:
            path.write_text(text.replace(original, replacement))
            return None
    return f"no original text of the row occurs exactly once in {row.file}: update the row"


def verdict(code: int) -> str:
    # pytest: 0 all passed, 1 some failed; 2-5 interrupted, internal error, usage, no tests.
    return {0: "survived", 1: "killed"}.get(code, "error")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", help="only these rows (default: all)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default 900)")
    parser.add_argument("--markdown", type=Path, help="also write the results as a Markdown table here")
    args = parser.parse_args()

    rows = load()
    unknown = set(args.ids) - {r.id for r in rows}
    if unknown:
        raise SystemExit(f"unknown id(s): {', '.join(sorted(unknown))}; see --list")
    if args.ids:
        rows = [r for r in rows if r.id in args.ids]
    if args.list:
        for row in rows:
            print(f"{row.id:28} [{row.owner}] {row.change}")
        return 0

    results: list[tuple[Break, str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="rtk-guarantees-") as tmp:
        baseline_copy = copy_repository(Path(tmp) / "baseline")
        baseline: dict[tuple[str, ...], tuple[int, str]] = {}
        for selection in dict.fromkeys(r.tests for r in rows):
            print(f"baseline: {' '.join(selection)} ...", flush=True)
            baseline[selection] = pytest(baseline_copy, selection, args.timeout)
            code, last = baseline[selection]
            print(f"    {'green' if code == 0 else 'RED'}: {last}", flush=True)
        for row in rows:
            started = time.monotonic()
            code, last = baseline[row.tests]
            if code != 0:
                outcome, detail = "error", f"the selection is red without the break: {last}"
            else:
                work = Path(tmp) / row.id
                copy = copy_repository(work)
                problem = apply(copy, row)
                if problem:
                    outcome, detail = "error", problem
                else:
                    code, detail = pytest(copy, row.tests, args.timeout)
                    outcome = verdict(code)
                shutil.rmtree(work, ignore_errors=True)
            seconds = time.monotonic() - started
            results.append((row, outcome, detail, seconds))
            print(f"{outcome:8} {row.id:28} [{row.owner}] {seconds:5.0f} s  {detail}", flush=True)

    counts = {name: sum(1 for _, o, _, _ in results if o == name) for name in ("killed", "survived", "error")}
    print(f"\n{counts['killed']} killed, {counts['survived']} survived, {counts['error']} error(s) "
          f"of {len(results)} breaks")
    for row, outcome, _, _ in results:
        if outcome != "killed":
            print(f"  {outcome}: {row.id} [{row.owner}]: {row.rule} -- {row.change}")
    if args.markdown:
        lines = ["| id | rule | break | owner | result |", "|---|---|---|---|---|"]
        lines += [f"| {r.id} | {r.rule} | {r.change} | {r.owner} | {o} |" for r, o, _, _ in results]
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0 if counts["killed"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
