"""Mutation testing of the safety-critical modules with mutmut, one module at a time. Run it
through `tests/mutation/run [module...]` (which installs mutmut into .venv first).

For each module of modules.toml: keep a work copy of the repository (default
/tmp/rtk-archive-mutation/<module>, or $RTK_MUTATION_DIR/<module>), give it a [tool.mutmut]
section for that module alone (the files to mutate, its targeted tests), run `mutmut run`
there (afresh: earlier results are dropped unless --keep), and print killed / survived / timeout / no tests / other counts of the module's
mutants, plus every survivor's diff (also written to <work copy>/survivors.txt). mutmut keeps
its results in the work copy, so `cd <work copy> && mutmut browse` shows them afterwards.
Not part of CI: a module takes minutes to an hour on two cores.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = Path(__file__).with_name("modules.toml")
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".tools", "mutants", "__pycache__", ".pytest_cache",
                                    "*.egg-info", "rtk-archive-demo")
RESULT_LINE = re.compile(r"^\s+(\S+): (.+)$")


def load_modules() -> dict[str, dict]:
    return tomllib.loads(MODULES.read_text())


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def prepare(module: str, spec: dict, work: Path, keep: bool) -> None:
    """Refresh the work copy from the repository and write its mutmut configuration. mutmut's
    own `mutants/` folder (its results and its map of which tests reach which function) is
    removed first, so every mutant is tested afresh against the current tests, unless `keep`."""
    work.mkdir(parents=True, exist_ok=True)
    if not keep:
        shutil.rmtree(work / "mutants", ignore_errors=True)
    for item in REPO.iterdir():
        if NOT_COPIED(str(REPO), [item.name]):
            continue
        if item.is_dir():
            shutil.copytree(item, work / item.name, ignore=NOT_COPIED, dirs_exist_ok=True)
        else:
            shutil.copy2(item, work / item.name)
    tools = work / ".tools"
    if (REPO / ".tools").exists() and not tools.exists():
        tools.symlink_to(REPO / ".tools")  # Azurite, for storage tests
    config = (
        "\n[tool.mutmut]\n"
        f"# written by tests/mutation/mutate.py for module '{module}'\n"
        'source_paths = ["pipeline", "storage"]\n'
        f"only_mutate = {toml_list(spec['files'])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(spec['tests'])}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        'also_copy = ["config", "README.md"]\n'
    )
    pyproject = work / "pyproject.toml"
    pyproject.write_text((REPO / "pyproject.toml").read_text() + config)


def mutmut(work: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mutmut", *args]
    return subprocess.run(command, cwd=work, text=True, capture_output=capture, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def results(work: Path, patterns: list[str]) -> dict[str, str]:
    """Mutant name -> status, for this module's mutants."""
    done = mutmut(work, "results", "--all", "true", capture=True)
    found = {}
    for line in done.stdout.splitlines():
        match = RESULT_LINE.match(line)
        if match and any(fnmatch.fnmatchcase(match.group(1), p) for p in patterns):
            found[match.group(1)] = match.group(2)
    return found


def retest(module: str, spec: dict, work: Path) -> None:
    """Test a finished run's survivors and mutants without tests again, against the tests as
    they are now (new tests are copied into the run's `mutants/`), each by running the
    module's selection with the mutant switched on. For tests written after a long run;
    mutmut's own figures stay as they were, this adds what the new tests kill."""
    statuses = results(work, patterns_of(spec))
    todo = sorted(n for n, status in statuses.items() if status in ("survived", "no tests"))
    shutil.copytree(REPO / "tests", work / "mutants" / "tests", ignore=NOT_COPIED, dirs_exist_ok=True)
    print(f"== {module}: re-testing {len(todo)} survivors / mutants without tests", flush=True)
    killed, alive = {}, []
    for name in todo:
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *spec["tests"]]
        done = subprocess.run(command, cwd=work / "mutants", capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              env={**os.environ, "MUTANT_UNDER_TEST": name, "PYTHONDONTWRITEBYTECODE": "1"})
        if done.returncode == 1:  # the test that failed, so that a kill can be checked (not a flake)
            killed[name] = [line for line in done.stdout.splitlines() if line.startswith("FAILED")][:1]
        else:
            alive.append(name)
        print(f"   {'killed' if done.returncode == 1 else 'alive ' if done.returncode == 0 else 'error '} {name} "
              f"{' '.join(killed.get(name, []))}", flush=True)
    (work / "retest.json").write_text(json.dumps({"killed_now": killed, "still_alive": alive}, indent=2,
                                                 ensure_ascii=False))
    print(f"== {module}: {len(killed)} of {len(todo)} killed by the current tests", flush=True)


def patterns_of(spec: dict) -> list[str]:
    if spec.get("mutants"):
        return list(spec["mutants"])
    return [f[:-3].replace("/", ".") + ".*" for f in spec["files"]]


def run_module(module: str, spec: dict, work: Path, max_children: int, keep: bool) -> Counter:
    prepare(module, spec, work, keep)
    patterns = patterns_of(spec)
    print(f"== {module}: mutating {', '.join(spec['files'])}; tests: {' '.join(spec['tests'])}", flush=True)
    names = list(spec.get("mutants") or [])
    done = mutmut(work, "run", "--max-children", str(max_children), *names)
    if done.returncode != 0:
        print(f"mutmut run exited {done.returncode} for {module}", flush=True)
    statuses = results(work, patterns)
    counts = Counter(statuses.values())
    survivors = sorted(name for name, status in statuses.items() if status == "survived")
    with open(work / "survivors.txt", "w") as out:
        for name in survivors:
            shown = mutmut(work, "show", name, capture=True)
            out.write(shown.stdout + "\n")
    summary = {"module": module, "files": spec["files"], "total": len(statuses), **counts,
               "survivors": survivors}
    (work / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"== {module}: {len(statuses)} mutants: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), flush=True)
    print(f"   survivors' diffs: {work / 'survivors.txt'}", flush=True)
    return counts


def main() -> int:
    modules = load_modules()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(modules)}")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN",
                        help="only the module's mutants matching these mutmut name patterns "
                             "(e.g. 'pipeline.archive.x_verify_copy__mutmut_*')")
    parser.add_argument("--retest", action="store_true",
                        help="re-test the last run's survivors against the current tests (see retest())")
    parser.add_argument("--tests", nargs="+", metavar="ARG",
                        help="pytest arguments replacing the module's selection (e.g. with --retest: only the new tests)")
    parser.add_argument("--keep", action="store_true",
                        help="keep mutmut's earlier results (it then re-tests only changed functions)")
    parser.add_argument("--table", action="store_true",
                        help="only print the Markdown table of the modules' last results (for RESULTS.md)")
    parser.add_argument("--work", type=Path,
                        default=Path(os.environ.get("RTK_MUTATION_DIR", "/tmp/rtk-archive-mutation")),
                        help="where the work copies live")
    args = parser.parse_args()
    unknown = set(args.modules) - set(modules)
    if unknown:
        raise SystemExit(f"unknown module(s) {', '.join(sorted(unknown))}; known: {', '.join(modules)}")
    if args.table:
        print_table(args.modules or list(modules), args.work)
        return 0
    if args.only:
        modules = {name: {**spec, "mutants": args.only} for name, spec in modules.items()}
    if args.tests:
        modules = {name: {**spec, "tests": args.tests} for name, spec in modules.items()}
    if args.retest:
        for module in args.modules or list(modules):
            retest(module, modules[module], args.work / module)
        return 0
    for module in args.modules or list(modules):
        run_module(module, modules[module], args.work / module, args.max_children, args.keep)
    return 0


def print_table(modules: list[str], work: Path) -> None:
    print("| module | files | mutants | killed | survived | timeout | no tests | other |")
    print("|---|---|---|---|---|---|---|---|")
    for module in modules:
        path = work / module / "summary.json"
        if not path.exists():
            print(f"| {module} | not run | | | | | | |")
            continue
        data = json.loads(path.read_text())
        known = ("killed", "survived", "timeout", "no tests")
        other = data["total"] - sum(data.get(k, 0) for k in known)
        print(f"| {module} | {', '.join(data['files'])} | {data['total']} | "
              + " | ".join(str(data.get(k, 0)) for k in known) + f" | {other} |")


if __name__ == "__main__":
    sys.exit(main())
