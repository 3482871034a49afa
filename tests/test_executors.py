"""Process-pool workers must not outlive a campaign killed with SIGKILL (they would keep writing into a run
directory that the resumed campaign is rewriting)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_process_workers_die_with_a_killed_parent():
    code = textwrap.dedent("""
        import time
        from alkit.executors import make_executor
        with make_executor("process", n_workers=2) as ex:
            futs = [ex.submit(time.sleep, 120) for _ in range(2)]
            time.sleep(3)
            print(" ".join(str(p) for p in ex._processes), flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)
