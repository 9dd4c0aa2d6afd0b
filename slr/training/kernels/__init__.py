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
from pathlib import Path

from slr.io import cache_dir  # noqa: F401  (the kernels and the Bayes cache share it)

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("reduced_step.c")
PGD_SOURCE = Path(__file__).with_name("pgd_step.c")
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


def build(cc: str | None = None, source: Path = SOURCE, libs: tuple[str, ...] | None = None) -> Path:
    """Compile ``source`` (if not already in the cache) and return the shared library's path; ``libs``: extra
    compiler arguments (default: numpy's random C library for the reduced SGD kernel, none for the others).

    Raises ``RuntimeError`` with the compiler's message when it cannot be built."""
    cc = cc or os.environ.get("CC") or "cc"
    libs = (numpy_random_flags() if source == SOURCE else ()) if libs is None else libs
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


def _load(source: Path, what: str):
    """The shared library built from ``source``, or ``None`` when disabled or not buildable (logged)."""
    if os.environ.get("SLR_KERNEL", "1") == "0":
        log.info("SLR_KERNEL=0: the %s uses its numpy step", what)
        return None
    try:
        return ctypes.CDLL(str(build(source=source)))
    except (RuntimeError, OSError) as err:
        log.warning("the %s kernel could not be built, so the numpy step runs (same chain, several times slower "
                    "per step); set CC to a C compiler to fix. Reason: %s", what, err)
        return None


@functools.cache
def reduced_step():
    """The C function ``slr_reduced_sgd`` (ctypes): ``n`` steps of the reduced SGD chain; ``None`` when disabled or
    not buildable (logged once)."""
    lib = _load(SOURCE, "reduced SGD step")
    if lib is None:
        return None
    fn = lib.slr_reduced_sgd
    fn.restype = ctypes.c_long
    fn.argtypes = ([ctypes.c_int] * 6 + [ctypes.c_double] * 4 + [ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_double])
    return fn


def _capsule_address(capsule) -> int:
    """The C function pointer held by a Cython ``__pyx_capi__`` capsule."""
    get_name, get_pointer = ctypes.pythonapi.PyCapsule_GetName, ctypes.pythonapi.PyCapsule_GetPointer
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


@functools.cache
def pgd_step():
    """``(fn, owens_t, erf)``: the C function ``slr_pgd`` (ctypes, ``n`` steps of population PGD) and the addresses
    of scipy's scalar ``owens_t`` and ``erf`` that it calls; ``None`` when disabled or not buildable (logged once)."""
    lib = _load(PGD_SOURCE, "population PGD step")
    if lib is None:
        return None
    from scipy.special import cython_special

    try:  # scipy's scalar functions, as the numpy step calls them (the names are those of scipy 1.17)
        capi = cython_special.__pyx_capi__
        owens_t, erf = _capsule_address(capi["owens_t"]), _capsule_address(capi["__pyx_fuse_1erf"])
    except (AttributeError, KeyError, ValueError) as err:
        log.warning("scipy %s does not expose owens_t and erf to C as expected, so the population PGD runs its "
                    "numpy step. Reason: %r", getattr(__import__("scipy"), "__version__", "?"), err)
        return None
    fn = lib.slr_pgd
    fn.restype = ctypes.c_long
    fn.argtypes = ([ctypes.c_int] * 3 + [ctypes.c_void_p] + [ctypes.c_double] * 3 + [ctypes.c_int]
                   + [ctypes.c_void_p] * 3 + [ctypes.c_void_p] * 2 + [ctypes.c_long, ctypes.c_void_p, ctypes.c_double])
    return fn, owens_t, erf
