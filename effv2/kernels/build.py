"""Compile the kernel sources once per machine and cache the library.

The library is built with ``-march=native`` (the vector width and exp routines of this CPU), so
the cache key holds the source, the compiler's version and this CPU's feature flags: an AVX2 and
an AVX-512 machine sharing a home folder each build their own. Builds are atomic (temporary file
+ rename), so ranks starting together do not see half a library.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import site
import subprocess
import sys
from functools import cache
from importlib import resources
from pathlib import Path

from effv2.cache import cache_dir

log = logging.getLogger(__name__)
# compile flags; -ffast-math also brings glibc's vector exp (libmvec, declared under __FAST_MATH__)
FLAGS = ("-O3", "-ffast-math", "-march=native", "-fopenmp-simd", "-fPIC", "-std=c++17")
# for kernels whose values must equal MindSpore's operators bit for bit: IEEE arithmetic in the
# source's order and no fused multiply-adds (GCC contracts a * b + c into one by default); errno is
# never read, so sqrt still vectorises
EXACT_FLAGS = ("-O3", "-fno-math-errno", "-ffp-contract=off", "-march=native", "-fPIC", "-std=c++17")
# the link is a step of its own, without -ffast-math: GCC (before 13) links crtfastmath.o into any
# -ffast-math link, shared libraries too, and its constructor turns on flush-to-zero and
# denormals-are-zero for the whole process when the library loads: MindSpore's operators and
# numpy would then round every denormal to zero
LINK_FLAGS = ("-shared",)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def onednn_flags() -> tuple[str, ...] | None:
    """Compile and link flags for a kernel on oneDNN 3.x, or None where a part is missing.

    It links the oneDNN that MindSpore ships (``mindspore/lib/libdnnl.so.3``): that library is in
    the process already, and the dynamic loader would hand it to any other ``libdnnl.so.3`` too.
    The headers come from the base install's ``onednn-devel-cpu-gomp`` (oneDNN 3.2's; the C API is
    stable across 3.x and older headers only use older symbols).
    """
    import importlib.util

    spec = importlib.util.find_spec("mindspore")
    if spec is None or spec.origin is None:
        return None
    lib = Path(spec.origin).parent / "lib"
    if not (lib / "libdnnl.so.3").exists():
        return None
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, site.getuserbase())):  # venv, system, --user
        include = Path(prefix) / "include"
        if (include / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
            return (f"-I{include}", f"-L{lib}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib}")
    return None


@cache
def kernel_library(name: str, link: tuple[str, ...] = (), exact: bool = False) -> Path | None:
    """The compiled ``effv2/kernels/<name>.cc`` for this machine (``link``: its extra include and
    library flags; ``exact``: built with EXACT_FLAGS), or None (logged once) when it cannot be built
    here: not Linux, no C++ compiler, or a failed compile."""
    if platform.system() != "Linux":
        log.info("custom CPU kernels: not built on %s; MindSpore's own operators are used", platform.system())
        return None
    cxx = compiler()
    if cxx is None:
        log.info("custom CPU kernels: no C++ compiler (g++ or $CXX) found; MindSpore's own operators are used")
        return None
    source = resources.files("effv2.kernels").joinpath(f"{name}.cc").read_bytes()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    flags = EXACT_FLAGS if exact else FLAGS
    recipe = " ".join((*flags, "-c", ";", *LINK_FLAGS, *link))
    parts = [source, recipe.encode(), str(version).encode(), _cpu_flags().encode()]
    key = hashlib.sha256(b"\0".join(parts))
    target = cache_dir() / "kernels" / f"{name}-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # every file of this build is this process's own until the renames: a rank building at the same
    # moment never compiles a source another is still writing, nor loads half a library
    partial = target.with_name(f".{target.stem}.{platform.node()}.{os.getpid()}.tmp")  # a shared home: hosts too
    source_file, objects, library = (partial.with_suffix(suffix) for suffix in (".cc", ".o", ".so"))
    includes = [flag for flag in link if flag.startswith("-I")]
    steps = (
        [cxx, *flags, *includes, "-c", str(source_file), "-o", str(objects)],
        [cxx, *LINK_FLAGS, str(objects), *link, "-o", str(library)],
    )
    try:
        source_file.write_bytes(source)
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                lines = result.stderr.splitlines()
                first = next((line for line in lines if "error" in line), result.stderr.strip()[:200])
                log.warning("custom CPU kernels: %s failed to build %s.cc (%s); MindSpore's own operators are used",
                            Path(cxx).name, name, first)  # fmt: skip
                return None
        os.replace(library, target)
        os.replace(source_file, target.with_suffix(".cc"))  # kept beside the library it was built from
    finally:
        for leftover in (source_file, objects, library):
            leftover.unlink(missing_ok=True)
    log.info("custom CPU kernels: compiled %s.cc for this CPU into %s", name, target)
    return target


@cache
def onednn_conv_library() -> str | None:
    """This machine's build of the oneDNN convolution kernel (effv2.models.convolution), or None
    (logged once) when the oneDNN headers (``onednn-devel-cpu-gomp``), MindSpore's oneDNN or a
    compiler is missing. Imports no MindSpore: the ISA cap is chosen with it before MindSpore loads."""
    flags = onednn_flags()
    if flags is None:
        log.info("oneDNN convolutions: no oneDNN headers (pip install onednn-devel-cpu-gomp==2023.2.0) or no oneDNN in "
                 "MindSpore's package; MindSpore's own convolutions are used")  # fmt: skip
        return None
    library = kernel_library("conv_onednn", flags)
    return str(library) if library is not None else None
