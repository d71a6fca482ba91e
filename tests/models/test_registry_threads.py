"""The architecture registry loads once, whole, however many threads ask at once (a batch runs
its jobs in threads, each opening its model file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SNIPPET = textwrap.dedent("""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from geoseg.models.registry import architecture_class, architectures

    THREADS = 16
    start = threading.Barrier(THREADS)

    def resolve(name):
        start.wait()  # every thread asks the registry at the same moment, none has loaded it
        return architecture_class(name).__name__, architectures()

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(resolve, ["unet", "deeplabv3plus", "unet3d", "fcn"] * (THREADS // 4)))
    for _, names in answers:
        assert set(names) >= {"unet", "deeplabv3plus", "unet3d", "fcn"}, names
    print("resolved", len(answers))
""")


def test_threads_resolving_architectures_at_once_all_see_the_whole_registry():
    # a fresh interpreter, so the registry starts unloaded
    done = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resolved 16" in done.stdout
