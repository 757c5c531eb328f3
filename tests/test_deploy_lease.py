"""One deploy at a time (issue 14, finding 6): the deploy lease, without starting servers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.deploy import lease
from pipelines.settings import Settings


@pytest.fixture()
def s(tmp_path: Path) -> Settings:
    return Settings(root=tmp_path, var_dir=tmp_path / "var")


def test_a_second_owner_waits_then_gets_a_clear_refusal(s: Settings) -> None:
    lease.acquire("dag:run-1", s)
    with pytest.raises(lease.DeployBusy, match="dag:run-1 has held the deploy lease"):
        lease.acquire("cli:2", s, wait_s=0.6)
    lease.acquire("dag:run-1", s)  # the holder may renew
    lease.check("dag:run-1", s)
    assert lease.release("dag:run-1", s) and lease.holder(s) is None
    lease.acquire("cli:2", s, wait_s=0)
    with pytest.raises(lease.DeployBusy, match="no longer holds"):
        lease.check("dag:run-1", s)


def test_a_lease_ends_with_its_process_or_its_ttl(s: Settings) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    lease.acquire("cli:dead", s, pid=proc.pid)
    proc.kill()
    proc.wait()
    lease.acquire("cli:next", s, wait_s=0)  # the holder's process is gone: taken over at once
    lease.release("cli:next", s)
    lease.acquire("dag:crashed", s, ttl_s=0.3)  # a DAG run that died without its cleanup
    time.sleep(0.4)
    lease.acquire("cli:after", s, wait_s=0)


def test_holders_never_overlap(s: Settings) -> None:
    log: list[str] = []

    def work(i: int) -> None:
        with lease.held(f"t{i}", s):
            log.append(f"in{i}")
            time.sleep(0.2)
            log.append(f"out{i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(log[k].startswith("in") and log[k + 1] == "out" + log[k][2:] for k in range(0, 6, 2)), log


def test_a_rollback_waits_for_the_deploy_in_progress(s: Settings) -> None:
    from pipelines.deploy import release

    held, released = threading.Event(), threading.Event()

    def deploying() -> None:
        with lease.held("cli:deploying", s):
            held.set()
            time.sleep(0.5)  # the rollback is waiting meanwhile
            released.set()  # set inside the block: before the lease is given back

    holder = threading.Thread(target=deploying)
    holder.start()
    assert held.wait(30)
    with pytest.raises(RuntimeError, match="nothing to roll back to"):
        release.rollback(s)  # runs only once the deploy's lease is released
    assert released.is_set()  # the rollback ran after the deploy, not beside it
    holder.join()


def _hold(s: Settings, seconds: float) -> None:
    with lease.held("cli:deploying", s):
        time.sleep(seconds)
