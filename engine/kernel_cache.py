"""The numba kernels' on-disk cache: compiled at set-up (`visitwire compile`), checked at every start.

numba caches a compiled kernel under `__pycache__` next to its source, keyed by the source file's
mtime and size, the numba version and the CPU; a kernel not in the cache compiles on its first call
(capture's: about 80 cpu-s, measured on a fresh clone). `compile_all` runs each room's warm-up (the
argument types real runs pass) and writes a manifest of the kernels it left in the cache; `stale()`
compares that manifest with this machine and the sources in milliseconds, so a start can say, before
the wait, that it will compile and for about how long.

capture's kernels are also built ahead of time (capture/aot.py): while that build is current a capture
start neither imports numba nor loads its cache, and `stale()` does not look at numba for capture;
`aot_line()` says when the build cannot be used and numba's cache stands in.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "engine" / "__pycache__" / "numba-kernels.json"
ROOMS = ("capture", "processors")
# cpu-s to compile a room's kernels from nothing (a 2-core VM, numba 0.68): the wait a start announces
# when no earlier compile on this machine measured it
DEFAULT_COMPILE_S = {"capture": 80.0, "processors": 5.0}
DEFAULT_AOT_BUILD_S = 120.0  # capture's ahead-of-time build from nothing (its own compile, then the C build)


@dataclass
class Staleness:
    rooms: tuple[str, ...]   # the rooms whose kernels will compile
    reason: str
    expected_s: float

    def line(self) -> str:
        return (f"numba kernels of {' and '.join(self.rooms)} are not compiled for this machine ({self.reason}): "
                f"compiling them now, about {self.expected_s:.0f} s (`visitwire compile` does it ahead)")


def warm_up_room(room: str) -> None:
    """Load (or compile and cache) one room's kernels."""
    if room == "capture":
        from capture.warm import warm_up

        warm_up()  # through the ahead-of-time build when it is current, else numba
    elif room == "processors":
        from config.settings import Settings
        from processors.agents import HitProcessor

        HitProcessor(Settings()).warm_up()
    else:
        raise ValueError(f"no kernels in room {room!r}")


def _machine() -> dict:
    import numba
    from numba.core.registry import cpu_target

    triple, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    return {"numba": numba.__version__, "triple": triple, "cpu": cpu, "features": features}


def _dispatchers(room: str) -> list:
    """The room's kernels that numba caches on disk (njit(cache=True)), from its imported modules (capture's
    handed to numba first: with the ahead-of-time build current they are not numba's)."""
    from numba.core.caching import FunctionCache
    from numba.core.dispatcher import Dispatcher

    if room == "capture":
        from capture.jit import use_numba

        use_numba()

    found: dict[int, object] = {}
    for name, module in list(sys.modules.items()):
        if name == room or name.startswith(room + "."):
            for obj in list(vars(module).values()):
                if isinstance(obj, Dispatcher) and isinstance(obj._cache, FunctionCache):
                    found[id(obj)] = obj
    return list(found.values())


def _cached_kernels(room: str) -> list[dict]:
    """The room's kernels that have an index on disk: source file stamp and index path."""
    out = []
    for obj in _dispatchers(room):
        index = obj._cache._cache_file._index_path
        source = obj._cache._impl.locator._py_file
        if os.path.exists(index):
            st = os.stat(source)
            out.append({"kernel": f"{obj.py_func.__module__}.{obj.py_func.__qualname__}", "source": source,
                        "stamp": [st.st_mtime, st.st_size], "index": index})
    return out


def load_manifest(path: Path = MANIFEST) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stale(rooms: tuple[str, ...] = ROOMS, manifest_path: Path = MANIFEST, aot: bool = True) -> Staleness | None:
    """None when every kernel of `rooms` loads from the cache (or, with `aot`, capture's from its current
    ahead-of-time build, numba not imported); else which rooms compile, why, and how long."""
    if aot and "capture" in rooms:
        from capture.aot import built_for_another

        if not built_for_another():
            rooms = tuple(r for r in rooms if r != "capture")
    if not rooms:
        return None
    manifest = load_manifest(manifest_path)
    reasons: dict[str, str] = {}
    machine = _machine()
    for room in rooms:
        entry = (manifest or {}).get("rooms", {}).get(room)
        if manifest is None or entry is None:
            reasons[room] = "no kernel cache yet"
        elif manifest["machine"]["numba"] != machine["numba"]:
            reasons[room] = f"numba changed from {manifest['machine']['numba']} to {machine['numba']}"
        elif [manifest["machine"][k] for k in ("triple", "cpu", "features")] != \
                [machine[k] for k in ("triple", "cpu", "features")]:
            reasons[room] = f"compiled for CPU {manifest['machine']['cpu']}, this one is {machine['cpu']}"
        else:
            reasons.update({room: r for r in [_changed(entry["kernels"])] if r})
    if not reasons:
        return None
    measured = (manifest or {}).get("rooms", {})
    expected = sum(measured.get(r, {}).get("compile_s") or DEFAULT_COMPILE_S[r] for r in reasons)
    return Staleness(tuple(reasons), "; ".join(dict.fromkeys(reasons.values())), expected)


def _changed(kernels: list[dict]) -> str:
    for k in kernels:
        try:
            st = os.stat(k["source"])
        except OSError:
            return f"{_rel(k['source'])} is gone"
        if [st.st_mtime, st.st_size] != k["stamp"]:
            return f"{_rel(k['source'])} changed since they were compiled"
        if not os.path.exists(k["index"]):
            return f"the cache of {k['kernel']} was removed"
    return ""


def _rel(path: str) -> str:
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return path


def compile_all(rooms: tuple[str, ...] = ROOMS, say=print) -> dict:
    """Warm up every room (compiling what the cache lacks) and record the manifest; returns it.
    `say(text)` gets a line per room and, while numba compiles, the kernel it is on."""
    from numba.core import event

    manifest = {"machine": _machine(), "rooms": {}, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    old = load_manifest() or {}
    for room in rooms:
        compiled = _compile_counter(room, say)
        if room == "capture":
            from capture.jit import use_numba

            use_numba()  # numba's cache is what this fills, whether or not the ahead-of-time build is current
        t0 = time.process_time()
        with event.install_listener("numba:compile", compiled):
            warm_up_room(room)
        cpu_s = time.process_time() - t0
        # the wait a stale start announces is a compile from nothing: measured only when no kernel loaded
        loaded = sum(sum(d._cache_hits.values()) for d in _dispatchers(room))
        earlier = old.get("rooms", {}).get(room, {}).get("compile_s")
        compile_s = cpu_s if compiled.count and not loaded else earlier
        manifest["rooms"][room] = {"kernels": _cached_kernels(room), "compiled": compiled.count,
                                   "compile_s": compile_s}
        say(f"{room}: {compiled.count} kernel specialisations compiled, "
            f"{len(manifest['rooms'][room]['kernels'])} cached, {cpu_s:.1f} cpu-s")
    old_rooms = {r: v for r, v in old.get("rooms", {}).items() if r not in rooms and old.get("machine") ==
                 manifest["machine"]}
    manifest["rooms"] = {**old_rooms, **manifest["rooms"]}
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    tmp = MANIFEST.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(MANIFEST)
    return manifest


def _compile_counter(room: str, say):
    """A numba listener of compile events (real compiles only, not cache loads): a count, and a line each."""
    from numba.core.event import Listener

    class CompileCounter(Listener):
        def __init__(self):
            self.count, self._t0 = 0, time.monotonic()

        def on_start(self, ev) -> None:
            f = ev.data["dispatcher"].py_func
            if f.__module__.split(".")[0] not in ROOMS:
                return  # numba's own helpers, compiled inside ours
            self.count += 1
            say(f"{room}: compiling {f.__module__}.{f.__qualname__} ({self.count} so far, "
                f"{time.monotonic() - self._t0:.0f} s)")

        def on_end(self, ev) -> None:
            pass

    return CompileCounter()


def load_or_compile(rooms: tuple[str, ...], say) -> Staleness | None:
    """Load the rooms' kernels; from a stale cache compile them (said first in one line, then progress
    every 10 s) and record them, so the next start loads them. Returns what was stale, if anything."""
    todo = stale(rooms)
    line = aot_line() if "capture" in rooms else None
    if line:
        say(line)
    if todo is None:
        for room in rooms:
            warm_up_room(room)
        return None
    say(todo.line())
    compile_all(todo.rooms, say=every(10.0, say))
    for room in rooms:
        if room not in todo.rooms:
            warm_up_room(room)
    return todo


def every(seconds: float, say):
    """`say` for compile_all, passing its per-kernel progress lines on at most once per `seconds`."""
    last = [0.0]

    def throttled(text: str) -> None:
        if " compiling " not in text or time.monotonic() - last[0] >= seconds:
            say(text)
            last[0] = time.monotonic()
    return throttled


def aot_line() -> str | None:
    """One line when capture's ahead-of-time build cannot be used (numba's cache stands in), else None."""
    from capture.aot import built_for_another, previous_build_s

    reason = built_for_another()
    if not reason:
        return None
    return (f"capture's ahead-of-time kernels cannot be used ({reason}): loading numba's instead, about 0.3 cpu-s "
            f"more a start; `visitwire compile` builds them (about {previous_build_s() or DEFAULT_AOT_BUILD_S:.0f} s)")


def build_aot(say) -> bool:
    """capture's ahead-of-time build, in a process of its own (its kernels must bypass numba's cache, which
    this process may have loaded); `say` gets its progress lines. False, said, when it failed."""
    proc = subprocess.Popen([sys.executable, "-m", "capture.aot"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for text in proc.stdout:
        if text.startswith("capture (ahead of time)"):
            say(text.rstrip())
        else:  # the C compiler's lines: only shown when it fails
            tail = (tail + [text.rstrip()])[-20:]
    if proc.wait() != 0:
        say("\n".join(tail))
        say(f"capture's ahead-of-time build failed (exit {proc.returncode}, its last lines above): starts load "
            "numba's cache instead, about 0.3 cpu-s more; it needs gcc and g++ (scripts/bootstrap.sh installs them)")
        return False
    return True


def compile_or_check() -> int:
    """`visitwire compile`: nothing to do when the cache and capture's ahead-of-time build are current; else
    compile what is not, showing progress."""
    from rich.console import Console

    from capture.aot import built_for_another, previous_build_s

    console = Console(stderr=True)
    todo = stale(aot=False)
    aot_reason = built_for_another()
    if todo is None and not aot_reason:
        manifest = load_manifest() or {}
        n = sum(len(r["kernels"]) for r in manifest.get("rooms", {}).values())
        console.print(f"numba kernels up to date: {n} cached for {manifest['machine']['cpu']}, "
                      f"numba {manifest['machine']['numba']} (compiled {manifest.get('written', '?')}), "
                      "capture's built ahead of time", soft_wrap=True)
        return 0
    t0 = time.monotonic()
    if todo is not None:
        console.print(f"compiling the numba kernels of {' and '.join(todo.rooms)} ({todo.reason}): about "
                      f"{todo.expected_s:.0f} s, once; later starts load them from the cache", soft_wrap=True)
        if console.is_terminal:
            with console.status("compiling") as status:
                compile_all(todo.rooms, say=lambda text: status.update(text) if " compiling " in text else
                            console.print(text))
        else:  # a log (CI): a line every 10 s is progress enough
            compile_all(todo.rooms, say=every(10.0, lambda text: console.print(text, soft_wrap=True)))
    if aot_reason:
        console.print(f"building capture's kernels ahead of time ({aot_reason}): about "
                      f"{previous_build_s() or DEFAULT_AOT_BUILD_S:.0f} s, once; later starts need no numba",
                      soft_wrap=True)
        if not build_aot(lambda text: console.print(text, soft_wrap=True)):
            return 1
    console.print(f"numba kernels compiled and cached in {time.monotonic() - t0:.0f} s")
    return 0
