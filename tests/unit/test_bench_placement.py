"""The end-to-end benchmark's core placement: disjoint halves, and every thread of a process moved."""

import os
import subprocess
import sys

import pytest

from bench.e2e import pin_process, split_cores


def test_split_cores_gives_the_model_an_equal_disjoint_half():
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        assert split_cores() is None
        return
    model, others = split_cores()
    assert model and others and not model & others
    assert model | others <= cpus and len(model) == len(others) == len(cpus) // 2


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move a process between them")
def test_pin_process_moves_every_thread():
    code = (
        "import threading, time\n"
        "for _ in range(3): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print(flush=True)\n"
        "time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()  # the threads are running
        target = {max(os.sched_getaffinity(0))}
        pin_process(child.pid, target)
        threads = os.listdir(f"/proc/{child.pid}/task")
        assert len(threads) >= 4
        assert all(os.sched_getaffinity(int(thread)) == target for thread in threads)
    finally:
        child.kill()
        child.wait()
