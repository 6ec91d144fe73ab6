"""Run a piece of targeting in a fresh process and report its peak memory and CPU time.

The budget is about a worker's whole footprint (never a ``MemoryError``, never a kill by the kernel),
so it is measured where it happens: in a child process, from the kernel's own accounting
(``VmHWM`` of ``/proc/self/status``, the peak resident set of the process's own memory, and
``getrusage`` CPU seconds), not by sampling from outside. Not ``getrusage``'s ``ru_maxrss``: Linux carries
it across ``exec``, so a child started by a big parent reports the parent's peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

_MARK = "TARGETING-FOOTPRINT "
_REPORT = (
    "\nimport json as _json, resource as _resource\n"
    "_usage = _resource.getrusage(_resource.RUSAGE_SELF)\n"
    "_hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    f"print({_MARK!r} + _json.dumps({{'peak_kb': int(_hwm), "
    "'cpu': _usage.ru_utime + _usage.ru_stime}))\n"
)


@dataclass(frozen=True)
class Footprint:
    """What a child process used, and what it printed (the footprint line removed)."""

    peak_mb: float
    cpu_seconds: float
    output: str
    returncode: int


def run_measured(code: str, *, timeout: float = 300.0, env: dict[str, str] | None = None) -> Footprint:
    """Run ``code`` in a new Python process; ``SystemExit`` (a CLI ending) still reports the footprint."""
    wrapped = f"try:\n    exec({code!r})\nexcept SystemExit:\n    pass\n{_REPORT}"
    done = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    lines = done.stdout.splitlines()
    report = next((line for line in reversed(lines) if line.startswith(_MARK)), None)
    usage = json.loads(report[len(_MARK):]) if report else {"peak_kb": 0, "cpu": 0.0}
    output = "\n".join(line for line in lines if not line.startswith(_MARK)) + done.stderr
    return Footprint(usage["peak_kb"] / 1024, float(usage["cpu"]), output, done.returncode)
