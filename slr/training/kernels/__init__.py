"""The compiled kernels of the reduced SGD chain (``reduced_step.c``) and of population PGD (``pgd_step.c``),
built on first use with the system C compiler.

Both advance every repeat by many steps per call (up to the next logged step), so that a step costs no Python:
the reduced chain does a few microseconds of arithmetic per step, PGD a few hundred nanoseconds per repeat. The
reduced SGD kernel draws its Gaussians itself with numpy's C distribution functions (``random_standard_normal_f``,
``random_standard_normal``, ``random_chisquare`` of numpy's static ``libnpyrandom.a``) from a numpy bit generator
that Python hands over, so its numpy reference consumes the same stream; the PGD kernel calls scipy's own
``owens_t`` and ``erf`` (function pointers from ``scipy.special.cython_special``), as the numpy gradient does.

A shared library is compiled once per source, compiler and numpy version into :func:`cache_dir` and reused by
every later process. Without a working compiler (``$CC``, default ``cc``), or with ``SLR_KERNEL=0``, the numpy
step runs instead (a warning says why): same chain, same random numbers.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from slr.io import cache_dir  # the kernels and the Bayes cache share it

log = logging.getLogger(__name__)

# No -march=native: the cache may be shared by machines of different generations (a cluster's home directory).
# -fno-math-errno lets erff/expf vectorise; -ffp-contract=off keeps the rounding the same with and without FMA.
MAX_TOKENS = 4096  # batch_size * L per repeat, as in the C source
CFLAGS = ("-O3", "-fno-math-errno", "-ffp-contract=off", "-shared", "-fPIC")


def numpy_random_flags() -> tuple[str, ...]:
    """Compiler arguments to use numpy's random C API: its headers and its static library ``libnpyrandom.a``."""
    import numpy as np

    lib = Path(np.__file__).parent / "random" / "lib" / "libnpyrandom.a"
    if not lib.exists():
        raise RuntimeError(f"numpy {np.__version__} ships no {lib} (numpy's random C library)")
    return (f"-I{np.get_include()}", str(lib))


def no_flags() -> tuple[str, ...]:
    return ()


_I, _D, _L, _P = ctypes.c_int, ctypes.c_double, ctypes.c_long, ctypes.c_void_p


@dataclass(frozen=True)
class Kernel:
    """One compiled step: its C source (beside this file), the extra compiler arguments it needs (a function, so
    that numpy's paths are looked up only when it is built), the symbol it exports and that symbol's argument types.
    Every kernel returns a ``long``: the steps done, or a negative number when it could not allocate its buffers."""

    what: str
    source: str
    flags: Callable[[], tuple[str, ...]]
    symbol: str
    argtypes: tuple

    @property
    def path(self) -> Path:
        return Path(__file__).with_name(self.source)


REDUCED_SGD = Kernel("reduced SGD step", "reduced_step.c", numpy_random_flags, "slr_reduced_sgd",
                     (_I,) * 7 + (_D,) * 4 + (_L, _P, _P, _P, _L, _P, _D))
PGD = Kernel("population PGD step", "pgd_step.c", no_flags, "slr_pgd",
             (_I,) * 3 + (_P,) + (_D,) * 3 + (_I,) + (_P,) * 5 + (_L, _P, _D))
SOURCE, PGD_SOURCE = REDUCED_SGD.path, PGD.path


def build(kernel: Kernel = REDUCED_SGD, cc: str | None = None) -> Path:
    """Compile ``kernel`` (if not already in the cache) and return the shared library's path.

    Raises ``RuntimeError`` with the compiler's message when it cannot be built."""
    cc = cc or os.environ.get("CC") or "cc"
    source, libs = kernel.path, kernel.flags()
    src = source.read_bytes()
    key = hashlib.sha256(src + repr((cc, CFLAGS, libs, platform.machine(), platform.system())).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem.lstrip('_')}-{key}.so"
    if target.exists():
        return target
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)  # concurrent jobs: build apart, rename atomically
    os.close(fd)
    try:
        cmd = [*shlex.split(cc), *CFLAGS, "-o", tmp, str(source), *libs, "-lm"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RuntimeError(f"{shlex.join(cmd)}: {err}") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr.strip()}")
        os.replace(tmp, target)
        log.info("compiled %s into %s", source.name, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(kernel: Kernel):
    """The kernel's C function (ctypes), or ``None`` when disabled (``SLR_KERNEL=0``) or not buildable (logged)."""
    if os.environ.get("SLR_KERNEL", "1") == "0":
        log.info("SLR_KERNEL=0: the %s uses its numpy step", kernel.what)
        return None
    try:
        lib = ctypes.CDLL(str(build(kernel)))
    except (RuntimeError, OSError) as err:
        log.warning("the %s kernel could not be built, so the numpy step runs (same chain, several times slower "
                    "per step); set CC to a C compiler to fix. Reason: %s", kernel.what, err)
        return None
    fn = getattr(lib, kernel.symbol)
    fn.restype, fn.argtypes = ctypes.c_long, list(kernel.argtypes)
    return fn


@functools.cache
def reduced_step():
    """The C function ``slr_reduced_sgd``: ``n`` steps of the reduced SGD chain; ``None`` when disabled or not
    buildable (logged once)."""
    return load(REDUCED_SGD)


def _capsule_address(capsule) -> int:
    """The C function pointer held by a Cython ``__pyx_capi__`` capsule."""
    get_name, get_pointer = ctypes.pythonapi.PyCapsule_GetName, ctypes.pythonapi.PyCapsule_GetPointer
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


@functools.cache
def pgd_step():
    """``(fn, owens_t, erf)``: the C function ``slr_pgd`` (``n`` steps of population PGD) and the addresses of scipy's
    scalar ``owens_t`` and ``erf`` that it calls; ``None`` when disabled or not buildable (logged once)."""
    fn = load(PGD)
    if fn is None:
        return None
    from scipy.special import cython_special

    try:  # scipy's scalar functions, as the numpy step calls them (the names are those of scipy 1.17)
        capi = cython_special.__pyx_capi__
        owens_t, erf = _capsule_address(capi["owens_t"]), _capsule_address(capi["__pyx_fuse_1erf"])
    except (AttributeError, KeyError, ValueError) as err:
        log.warning("scipy %s does not expose owens_t and erf to C as expected, so the population PGD runs its "
                    "numpy step. Reason: %r", getattr(__import__("scipy"), "__version__", "?"), err)
        return None
    return fn, owens_t, erf
