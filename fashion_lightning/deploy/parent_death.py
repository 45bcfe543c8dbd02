"""Child processes that die with their parent, however the parent dies.

`serve` runs LitServe's HTTP server processes (forked) and inference workers (spawned). Ctrl+C or
SIGTERM stops them through the parent; a SIGKILL gives the parent no chance, and the children would
go on answering on the port (a restart then fails: address already in use). On Linux the kernel
sends a child a signal when its parent dies (`prctl(PR_SET_PDEATHSIG)`); elsewhere a daemon thread
watches the parent's pid.
"""

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL = 0.5  # seconds between two looks at the parent, where there is no prctl


def die_with_parent(parent_pid: int) -> None:
    """End this process when `parent_pid`, its parent, ends. Call it in the child."""
    if sys.platform.startswith("linux") and set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent_pid:  # the parent died before the kernel was told to watch
            os._exit(1)
        return
    threading.Thread(target=watch_parent, args=(parent_pid,), daemon=True).start()


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send `signum` to this process when its parent ends; whether it agreed."""
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    return False


def watch_parent(parent_pid: int) -> None:
    """The portable way: once this process has another parent (it was re-parented because the
    first one ended), exit at once."""
    while os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL)
    os._exit(1)


def forked_children_die_with_their_parent() -> None:
    """Every process forked from now on (LitServe's HTTP servers, multiprocessing's manager, and
    anything they fork) dies with the process that forked it. Installed once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    forker = [os.getpid()]  # set just before each fork, read in the child

    def before() -> None:
        forker[0] = os.getpid()

    os.register_at_fork(before=before, after_in_child=lambda: die_with_parent(forker[0]))


_installed = False
