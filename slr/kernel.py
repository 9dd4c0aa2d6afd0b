"""The compiled step of the reduced SGD chain (``_reduced_step.c``), built on first use with the system C compiler.

The reduced chain does a few microseconds of arithmetic per step, which numpy spreads over about fifty calls on
arrays of a few dozen numbers; one C call does it in a tenth of the time (``scripts/bench.py``). The shared
library is compiled once per source version into ``$SLR_CACHE_DIR`` (default ``~/.cache/slr``) and reused by
every later process. Without a working compiler (``$CC``, default ``cc``), or with ``SLR_KERNEL=0``, the reduced
SGD runs its numpy step instead: same chain, same random numbers, equal up to float32 rounding.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_reduced_step.c")
# No -march=native: the cache may be shared by machines of different generations (a cluster's home directory).
# -fno-math-errno lets erff/expf vectorise; -ffp-contract=off keeps the rounding the same with and without FMA.
MAX_TOKENS = 4096  # batch_size * L per repeat, as in the C source
CFLAGS = ("-O3", "-fno-math-errno", "-ffp-contract=off", "-shared", "-fPIC")


def cache_dir() -> Path:
    """The folder of the compiled kernel, created if needed: ``$SLR_CACHE_DIR``, else ``$XDG_CACHE_HOME/slr`` or
    ``~/.cache/slr``; a per-user folder in the temporary directory when that one cannot be created or written."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slr"
    path = Path(os.environ.get("SLR_CACHE_DIR") or default)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / f"slr-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    path.mkdir(exist_ok=True)
    return path


def build(cc: str | None = None) -> Path:
    """Compile the kernel (if not already in the cache) and return the shared library's path.

    Raises ``RuntimeError`` with the compiler's message when it cannot be built."""
    cc = cc or os.environ.get("CC") or "cc"
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + repr((cc, CFLAGS, platform.machine(), platform.system())).encode()).hexdigest()[:16]
    target = cache_dir() / f"reduced_step-{key}.so"
    if target.exists():
        return target
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)  # concurrent jobs: build apart, rename atomically
    os.close(fd)
    try:
        cmd = [*shlex.split(cc), *CFLAGS, "-o", tmp, str(SOURCE), "-lm"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RuntimeError(f"{shlex.join(cmd)}: {err}") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr.strip()}")
        os.replace(tmp, target)
        log.info("compiled the reduced SGD step kernel into %s", target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def reduced_step():
    """The C function ``slr_reduced_step`` (ctypes), or ``None`` when disabled or not buildable (logged once)."""
    if os.environ.get("SLR_KERNEL", "1") == "0":
        log.info("SLR_KERNEL=0: the reduced SGD uses its numpy step")
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as err:
        log.warning("the reduced SGD step kernel could not be built, so the numpy step runs (same chain, "
                    "about 2x slower per step); set CC to a C compiler to fix. Reason: %s", err)
        return None
    fn = lib.slr_reduced_step
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int] * 5 + [ctypes.c_double] * 2 + [ctypes.c_void_p] * 5
    return fn
