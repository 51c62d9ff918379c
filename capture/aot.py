"""capture's kernels compiled ahead of time into one extension module, so a start needs no numba.

A start that loads numba's cached kernels pays for numba itself (its import, 0.13 cpu-s) and for
preparing its compiler to load them (0.17 cpu-s), about half of what `visitwire capture` took on a
tiny pcap. Set-up (`visitwire compile`, which runs `python -m capture.aot`) therefore also compiles the
kernels Python calls, for the argument types real runs pass (the warm-up's), with numba's pycc into
`capture/__pycache__/visitwire_kernels*.so`, and writes beside it what it was built from: every source
file of capture/, numpy, Python and the CPU. `load()` uses it only when all of those are still the
same; `built_for_another()` says why not. A call with argument types the build lacks goes to numba,
exactly as without the build (capture/jit.py). The build's entry points hold the GIL (live._index_block's
nogil is numba's only: it indexes one ring block, microseconds).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import platform
import pkgutil
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "__pycache__"
MODULE = "visitwire_kernels"
META = BUILD_DIR / f"{MODULE}.json"


def _machine() -> dict:
    """What a build is only valid for: numpy's ABI, the interpreter, and the CPU it was tuned for."""
    flags = model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].strip()
                elif line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if flags and model:
                    break
    except OSError:
        pass
    return {"numpy": np.__version__, "python": sys.version.split()[0], "platform": platform.machine(),
            "cpu": model, "cpu_flags": hashlib.sha256(flags.encode()).hexdigest()[:16]}


def _sources() -> dict[str, str]:
    """Every source file of capture/ by content (a kernel's callees and constants live in several)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(HERE.glob("*.py"))}


def built_for_another(meta_path: Path | None = None) -> str:
    """"" when the build matches these sources and this machine; else why it cannot be used."""
    meta_path = meta_path or META
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return "not built yet"
    if not meta.get("files") or not all((BUILD_DIR / f).exists() for f in meta["files"].values()):
        return "not built yet"
    machine = _machine()
    for key, what in (("numpy", "numpy"), ("python", "Python")):
        if meta["machine"].get(key) != machine[key]:
            return f"{what} changed from {meta['machine'].get(key)} to {machine[key]}"
    if [meta["machine"].get(k) for k in ("platform", "cpu", "cpu_flags")] != \
            [machine[k] for k in ("platform", "cpu", "cpu_flags")]:
        return f"built for CPU {meta['machine'].get('cpu') or '?'}, this one is {machine['cpu'] or '?'}"
    sources = _sources()
    for name in sorted(set(sources) | set(meta["sources"])):
        if sources.get(name) != meta["sources"].get(name):
            return f"capture/{name} changed since they were built"
    return ""


def previous_build_s(meta_path: Path | None = None) -> float | None:
    """cpu-s the last build on this machine took (a rebuild takes about as long), if there was one."""
    meta_path = meta_path or META
    try:
        return json.loads(meta_path.read_text()).get("compile_s")
    except (OSError, ValueError):
        return None


class Build:
    """The loaded extension module: for each kernel, its compiled signatures and an argument check each."""

    def __init__(self, meta: dict, modules: dict) -> None:
        self.compile_s = meta.get("compile_s")
        self._entries = {name: [(_accepts(sig["args"]), getattr(modules[sig["module"]], sig["symbol"]))
                                for sig in sigs] for name, sigs in meta["kernels"].items()}

    def entries(self, py_func) -> list:
        return self._entries.get(f"{py_func.__module__}.{py_func.__qualname__}", [])


def load(meta_path: Path | None = None) -> Build | None:
    """The build, when it matches these sources and this machine; else None (numba is used)."""
    meta_path = meta_path or META
    if built_for_another(meta_path):
        return None
    meta = json.loads(meta_path.read_text())
    modules = {}
    for name, file in meta["files"].items():
        spec = importlib.util.spec_from_file_location(name, BUILD_DIR / file)
        modules[name] = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(modules[name])
        except ImportError:  # a build for another numpy ABI slipped past the check: numba will do
            return None
    return Build(meta, modules)


# --- argument checks: the build's functions convert arguments blindly (an array's dtype is not checked),
# so a call reaches one only with exactly the types it was compiled for, as numba's dispatcher would pick

_SCALARS = {
    "int64": lambda x: (type(x) is int and -(1 << 63) <= x < (1 << 63)) or type(x) is np.int64,
    "float64": lambda x: type(x) is float or type(x) is np.float64,
    "bool": lambda x: type(x) is bool or type(x) is np.bool_,
}


def _array_check(dtype: str, ndim: int, layout: str, readonly: bool):
    want = np.dtype(dtype)

    def ok(x) -> bool:
        if type(x) is not np.ndarray or x.dtype != want or x.ndim != ndim:
            return False
        flags = x.flags
        return flags.aligned and (readonly or flags.writeable) and (
            layout == "A" or (flags.c_contiguous if layout == "C" else flags.f_contiguous))
    return ok


def _accepts(args: list):
    checks = [_array_check(*a[1:]) if a[0] == "array" else _SCALARS[a[1]] for a in args]
    n = len(checks)

    def accepts(values: tuple) -> bool:
        return len(values) == n and all(check(v) for check, v in zip(checks, values))
    return accepts


def _describe(numba_type) -> list:
    """An argument type as the checks above read it; ValueError for a type they do not check."""
    from numba.core import types

    if isinstance(numba_type, types.Array):
        return ["array", str(np.dtype(numba_type.dtype.name)), numba_type.ndim, numba_type.layout,
                not numba_type.mutable]
    if isinstance(numba_type, types.Boolean):
        return ["scalar", "bool"]
    if numba_type in (types.int64, types.float64):
        return ["scalar", str(numba_type)]
    raise ValueError(f"no argument check for {numba_type}")


# --- the build (set-up only: imports numba and compiles)

def build(say=print) -> dict:
    """Compile the kernels capture's warm-up calls from Python, for the types it passes, into the extension
    module; returns the metadata written beside it."""
    import warnings

    from numba.core.caching import NullCache

    import capture.jit as jit
    from capture.warm import warm_up

    t0 = time.process_time()
    sources = _sources()  # as compiled: a file edited meanwhile makes the build stale, not wrongly current
    jit.use_numba()
    for module in pkgutil.iter_modules([str(HERE)]):  # every kernel defined before the cache is bypassed
        importlib.import_module(f"capture.{module.name}")
    # callees must be compiled here, not loaded from numba's cache: a cached kernel keeps machine code
    # only, and the build links each kernel's callees in from their compiled form (LLVM IR)
    for d in jit.dispatchers():
        d._cache = NullCache()
    say("capture (ahead of time): compiling the kernels with the warm-up's argument types")
    warm_up()
    calls = _python_calls(warm_up)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc's pending deprecation: it is what numba offers for this today
        from numba.pycc import CC
    # one module per reference-counting mode: a `kernel` (no NRT, capture/jit.py) may return a view of an
    # array it was given, which an entry point counting references would free (heap corruption)
    ccs: dict[str, CC] = {}
    kernels: dict[str, list] = {}
    for d, sigs in calls.items():
        name = f"{d.py_func.__module__}.{d.py_func.__qualname__}"
        nrt = d.targetoptions.get("_nrt", True)
        module = MODULE + ("_nrt" if nrt else "")
        if module not in ccs:
            ccs[module] = CC(module)
            ccs[module].output_dir = str(BUILD_DIR)
            ccs[module].target_cpu = "host"  # as tuned as the JIT's kernels (vectorized byte loops)
            ccs[module].use_nrt = nrt
        # writable arrays first: such a call gets the specialisation numba's dispatcher would pick
        for args in sorted(sigs, key=lambda a: [_describe(t)[-1] is True for t in a]):
            symbol = f"{name.replace('.', '__')}__{len(kernels.get(name, []))}"
            ccs[module].export(symbol, d.overloads[args].signature)(d.py_func)
            kernels.setdefault(name, []).append({"module": module, "symbol": symbol,
                                                 "args": [_describe(t) for t in args]})
    say(f"capture (ahead of time): building {sum(len(v) for v in kernels.values())} entry points of "
        f"{len(kernels)} kernels into {', '.join(ccs)}")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    for old in BUILD_DIR.glob(f"{MODULE}*"):
        old.unlink()
    for cc in ccs.values():
        cc.compile()
    meta = {"files": {m: m + sysconfig.get_config_var("EXT_SUFFIX") for m in ccs}, "machine": _machine(),
            "sources": sources,
            "kernels": kernels, "compile_s": round(time.process_time() - t0, 1),
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = META.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(META)
    say(f"capture (ahead of time): built in {meta['compile_s']:.0f} cpu-s")
    return meta


class _Recorder:
    """Stands for a compiled kernel in its module while the warm-up runs again: the types Python calls it with."""

    def __init__(self, dispatcher, calls: dict) -> None:
        self.dispatcher, self.calls = dispatcher, calls

    def __call__(self, *args):
        self.calls.setdefault(self.dispatcher, set()).add(tuple(self.dispatcher.typeof_pyval(a) for a in args))
        return self.dispatcher(*args)


def _python_calls(run) -> dict:
    """{dispatcher: argument types} of every kernel `run` calls from Python (the build's entry points), by
    running it again with recorders in the kernels' places. Everything is compiled by then: numba, which reads
    a kernel's callees from its module, compiles nothing while they stand there."""
    from numba.core.dispatcher import Dispatcher

    calls: dict = {}
    swapped = []
    for name, module in list(sys.modules.items()):
        if name.startswith("capture.") and module is not None:
            for attr, value in list(vars(module).items()):
                if isinstance(value, Dispatcher):
                    setattr(module, attr, _Recorder(value, calls))
                    swapped.append((module, attr, value))
    try:
        run()
    finally:
        for module, attr, value in swapped:
            setattr(module, attr, value)
    return calls


if __name__ == "__main__":  # engine/kernel_cache runs it in a process of its own: its kernels bypass the cache
    build(say=lambda text: print(text, file=sys.stderr, flush=True))
