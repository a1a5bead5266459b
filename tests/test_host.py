"""Process settings: with the heap kept, a training step's big blocks are reused, not re-faulted."""

import json
import platform
import subprocess
import sys

import pytest

CHILD = """
import json, resource, sys, torch
from scenimefy.stages.host import keep_freed_memory_in_heap
if sys.argv[1] == "keep":
    assert keep_freed_memory_in_heap()
w = torch.ones(16 * 2**20, requires_grad=True)  # a 64 MiB parameter: its activations are 64 MiB blocks
def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = (w * 2).relu()
    (y * y).sum().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps([faults_of_a_step() for _ in range(6)]))
"""


def _faults_per_step(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc allocator setting")
def test_kept_heap_reuses_freed_blocks_instead_of_faulting_them_in_again():
    block = 64 * 2**20 // 4096  # one 64 MiB block: 16,384 pages of 4 KiB
    default, kept = _faults_per_step("default"), _faults_per_step("keep")
    # glibc maps each block above 32 MiB afresh and unmaps it on free: every step faults all of them in
    assert min(default[1:]) >= 5 * block
    # kept in the heap, most steps reuse the pages of the step before
    assert sum(kept[1:]) < 0.5 * sum(default[1:]) and min(kept[1:]) <= 2 * block


def test_configure_process_sets_threads_and_leaves_the_allocator_alone_on_gpus(monkeypatch):
    import torch

    from scenimefy.stages import host

    calls = []
    monkeypatch.setattr(host, "keep_freed_memory_in_heap", lambda: calls.append("heap") or True)
    threads = torch.get_num_threads()
    try:
        host.configure_process(torch.device("cuda", 0), torch_threads=1)
        assert torch.get_num_threads() == 1 and calls == []
        host.configure_process(torch.device("cpu"), keep_heap=False)
        assert calls == []
        host.configure_process(torch.device("cpu"))
        assert calls == ["heap"]
    finally:
        torch.set_num_threads(threads)
