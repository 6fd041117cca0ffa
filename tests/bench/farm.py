"""What the issue-11 benchmarks share: the simulator in a process of its own (driven over its
stdin/stdout, one JSON line per call, so it never shares a GIL with what is measured), an
archive config for it, and an `rtk-archive` run in a child process with its peak RSS."""

from __future__ import annotations

import json
import subprocess
import time
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

_SERVER = """
import json, sys
sys.path.insert(0, %r)
from pipeline.simulator import Simulator
sim = Simulator(recordings=0, seed=11, **json.loads(sys.argv[1])).start()
print(json.dumps({"base_url": sim.base_url, "account_id": sim.account_id, "app_id": sim.app_id,
                  "token": sim.token}), flush=True)
for line in sys.stdin:
    call = json.loads(line)
    target = sim.faults if call["m"] == "set" else sim
    print(json.dumps(getattr(target, call["m"])(*call.get("a", []), **call.get("k", {}))), flush=True)
sim.stop()
""" % str(REPO)


class Farm:
    """A simulator process: `add_recording`, `download_url`, `remove`, `set_faults`."""

    def __init__(self, **settings: Any):
        self.settings = settings

    def __enter__(self) -> Farm:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, json.dumps(self.settings)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())
        return self

    def __exit__(self, *exc_info) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.proc.stdin.write(json.dumps({"m": method, "a": args, "k": kwargs}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def add_recording(self, size: int) -> dict:
        return self.call("add_recording", size=size)

    def download_url(self, rid: str) -> str:
        return self.call("download_url", rid)

    def remove(self, recs: list[dict]) -> None:
        for rec in recs:
            self.call("remove_recording", rec["id"])

    def set_faults(self, **faults: Any) -> None:
        self.call("set", **faults)


def archive_config(farm: Farm, folder: Path, *, targets: list[dict] | None = None, **archive: Any) -> dict:
    info = farm.info
    return {
        "source": {"account_id": info["account_id"], "app_id": info["app_id"], "api_token": info["token"],
                   "base_url": info["base_url"]},
        "ledger": {"path": str(folder / "ledger.db")},
        "archive": {"spool_dir": str(folder / "spool"), **archive},
        "audit": {"path": str(folder / "audit.jsonl")},
        "targets": targets or [{"name": "bench", "type": "local", "path": str(folder / "target")}],
    }


def run_archive_child(config: dict) -> dict:
    """One `rtk-archive` run in a fresh interpreter: bytes, seconds (the run), process_seconds (the
    whole process), archived, peak RSS (MB), CPU seconds."""
    code = (f"import json,sys,resource; sys.path.insert(0, {str(REPO)!r}); "
            "from tests.bench.bench_archive import child_archive; "
            "r = child_archive(json.loads(sys.stdin.read())); "
            # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's size across exec)
            "r['peak_rss_mb'] = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))) / 1024; "
            "r['cpu_seconds'] = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]); "
            "print(json.dumps(r))")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps({"config": config}), capture_output=True,
                          text=True, check=False)
    process_seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"rtk-archive child failed:\n{proc.stderr[-3000:]}")
    # The whole process, interpreter start and imports included, as curl, aria2c or rclone are timed.
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_seconds": process_seconds}
