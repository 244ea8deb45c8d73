"""Start-up cost of `retain` commands on a small database, next to bare baselines.

Seeds a small SQLite database (customers whose cards expire soon), then times each command as a
fresh process (wall and CPU, the median of ``--repeat`` runs after a first, cold one):

* ``retain validate`` next to ``python -c pass`` and ``python -c "import prefect"``;
* the flow commands ``retain run``, ``retain dispatch``, ``retain evaluate`` next to a bare Prefect
  flow run (``python -c "from prefect import flow; ..."``) against the same API.

The flow commands use the local server ``retain server start`` keeps up (started here, on
``--port``, when none is recorded; stopped again at the end). Targets: a flow command under 3 s of
wall time after the first, ``retain validate`` under 1 s, on an idle machine: the machine's load
(``uptime``) is printed with the figures, since a loaded machine stretches wall time, not CPU.

    .venv/bin/python bench/cli_startup.py [--customers 200] [--repeat 3] [--port 4200]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
SPEC = ROOT / "experiments" / "definitions" / "card-expiry-reminder.yaml"
BARE_FLOW = (
    "from prefect import flow\n"
    "from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings\n"
    "@flow\n"
    "def bare() -> int:\n"
    "    return 1\n"
    "with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):\n"
    "    bare()\n"
)


@dataclass(frozen=True)
class Timing:
    first_wall: float
    first_cpu: float
    wall: float
    cpu: float


def _once(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=env["BENCH_DIR"])
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(command: list[str], env: dict[str, str], repeat: int) -> Timing:
    """The first (cold) run, then the median of ``repeat`` more."""
    first_wall, first_cpu = _once(command, env)
    runs = [_once(command, env) for _ in range(repeat)]
    return Timing(
        first_wall,
        first_cpu,
        statistics.median(w for w, _ in runs),
        statistics.median(c for _, c in runs),
    )


def seed(database_url: str, customers: int) -> None:
    from models.db import make_engine
    from models.migrate import upgrade
    from tests.dbdata import add_customers

    engine = make_engine(database_url)
    upgrade(engine)
    add_customers(engine, customers, card_days=20)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=4200, help="for `retain server start`")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="retain-cli-startup-"))
    env = {
        **os.environ,
        "BENCH_DIR": str(work),
        "RETAIN_DATABASE_URL": f"sqlite:///{work / 'retain.db'}",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    seed(env["RETAIN_DATABASE_URL"], args.customers)
    retain = str(BIN / "retain")
    python = str(BIN / "python")

    status = subprocess.run([retain, "server", "status"], env=env, capture_output=True, text=True)
    started_here = "local server up" not in status.stdout and "PREFECT_API_URL" not in status.stdout
    if started_here:
        t0 = time.perf_counter()
        up = subprocess.run(
            [retain, "server", "start", "--port", str(args.port)],
            env=env,
            capture_output=True,
            text=True,
        )
        if up.returncode != 0:
            raise SystemExit(up.stderr)
        print(f"retain server start: {time.perf_counter() - t0:.1f} s (once)")
    try:
        api = subprocess.run([retain, "server", "status"], env=env, capture_output=True, text=True)
        print(api.stdout.strip())
        url = api.stdout.split(" at ")[1].split(" ")[0] if " at " in api.stdout else ""
        flow_env = {**env, "PREFECT_API_URL": url} if url else env
        as_of = "2026-11-02T09:00:00+00:00"
        rows: list[tuple[str, Timing, str, Timing]] = []
        bare_python = measure([python, "-c", "pass"], env, args.repeat)
        bare_prefect = measure([python, "-c", "import prefect"], env, args.repeat)
        bare_flow = measure([python, "-c", BARE_FLOW], flow_env, args.repeat)
        validate = measure([retain, "validate", str(SPEC)], env, args.repeat)
        rows.append(("retain validate", validate, "python -c 'import prefect'", bare_prefect))
        for name, command in (
            ("retain run", [retain, "run", str(SPEC), "--as-of", as_of]),
            ("retain dispatch", [retain, "dispatch", "--as-of", as_of]),
            ("retain evaluate", [retain, "evaluate", "card-expiry-reminder", "--as-of", as_of]),
        ):
            rows.append((name, measure(command, env, args.repeat), "bare flow run", bare_flow))
    finally:
        if started_here:
            subprocess.run([retain, "server", "stop"], env=env, capture_output=True)

    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"python -c pass: {bare_python.wall:.2f} s wall, {bare_python.cpu:.2f} s CPU")
    print(f"{'command':<18}{'first':>16}{'after (median)':>22}   baseline (median)      ratio")
    for name, timing, base_name, base in rows:
        print(
            f"{name:<18}{timing.first_wall:>7.2f} s {timing.first_cpu:>4.1f} cpu"
            f"{timing.wall:>10.2f} s {timing.cpu:>5.2f} s cpu   "
            f"{base_name} {base.wall:.2f} s / {base.cpu:.2f} cpu   {timing.wall / base.wall:.2f}"
        )


if __name__ == "__main__":
    main()
