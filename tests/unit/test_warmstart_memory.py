"""A forked warm rank's memory (simulate/warmstart.py `own_memory`): before it, the child shares its
parent's pages; after it, it owns them, with their contents, and its writes stay its own."""

from __future__ import annotations

import json
import os

import pytest

from simulate import warmstart

MIB = 1 << 20


def in_child(fn) -> dict:
    """Run `fn` in a forked child; its JSON-able result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps(fn()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    return json.loads(data)


def test_own_memory_makes_the_pages_shared_after_a_fork_the_childs_own():
    block = bytearray(os.urandom(8 * MIB))  # present in the parent: shared with the child after the fork
    digest = hash(bytes(block))

    def child() -> dict:
        before = sum(n for _, n in warmstart.shared_runs())
        pages, _, failed = warmstart.own_memory()
        after = sum(n for _, n in warmstart.shared_runs())
        intact = hash(bytes(block)) == digest
        block[::4096] = b"\xff" * len(block[::4096])  # the child's write: the parent must not see it
        return {"before": before, "pages": pages, "after": after, "failed": failed, "intact": intact}

    got = in_child(child)
    if got["pages"] == 0 and "Invalid argument" in got["failed"]:
        pytest.skip(f"this kernel has no MADV_POPULATE_WRITE: {got['failed']}")
    page = os.sysconf("SC_PAGE_SIZE")
    assert got["before"] >= 8 * MIB // page, got  # at least the block was shared
    assert got["pages"] >= 8 * MIB // page and got["failed"] == "", got
    assert got["after"] <= got["before"] // 100, got  # what is left: pages the child's own reads shared anew
    assert got["intact"] and hash(bytes(block)) == digest

