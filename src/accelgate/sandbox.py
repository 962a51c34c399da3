"""A sandbox of process-wide state around each case: recorded before, restored after, reported.

Accelerations that legitimately patch globals (SageAttention replacing SDPA, TF32, inductor
flags) keep working inside their own case. After it, every change is undone and reported as a
`Change` naming what changed; the gate's plugin turns them into a warning naming the backend,
and results.json lists them with the case. What cannot be undone from Python (a probe without
`write`, or a write that fails) stays recorded with the case that left it: a later case that
still sees it is failed as that case's victim, naming the culprit, instead of producing
numbers under someone else's settings. `--accelgate-isolate` runs each case in a subprocess
for exactly that.

"Clean" is the state at the first case (after the session pinned its thread count), and for a
model class the state when a case of that model first ran. The global RNGs are put back to
their clean state before and after every case, silently: drawing random numbers is not a
change, and every case then starts from the same generator state.

Pure Python (no pytest): `Session.sandbox` is one of these; `accelgate.guard` calls it around
each pytest item.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from accelgate.probes import (
    CONFIG_MODULES, TORCH_LAZY_NAMES, Namespace, Probe, base_namespaces, class_namespaces, config_differences,
    config_values, describe_object, lazy_torch_patch, library_classes, restore_config, rng_state, scalar_probes,
    set_rng_state,
)


@dataclass(frozen=True)
class Change:
    what: str
    before: str
    after: str
    restored: bool = True

    def text(self) -> str:
        return f"{self.what}: {self.before} -> {self.after}" + ("" if self.restored else " (could NOT be restored)")

    def as_json(self) -> dict[str, Any]:
        return {"what": self.what, "before": self.before, "after": self.after, "restored": self.restored}


@dataclass(frozen=True)
class Victim:
    """State a case starts under that an earlier case changed and nobody could restore."""

    changes: tuple[Change, ...]
    culprits: tuple[str, ...]

    def message(self, case_id: str) -> str:
        culprits = ", ".join(self.culprits) or "code outside any accelgate case (another test or a fixture)"
        lines = "\n  ".join(c.text() for c in self.changes)
        return (f"{case_id} did not run: process-wide state still differs from the session's start, changed by "
                f"{culprits} and not restorable from Python:\n  {lines}\nThis case's images would be made under "
                "another case's settings. Run with --accelgate-isolate (each case in its own process), or fix "
                "the culprit backend")


class Sandbox:
    """Record, compare and restore process-wide state around cases (see the module docstring)."""

    def __init__(self) -> None:
        self._probes: dict[str, Probe] = {}
        self._namespaces: dict[str, Namespace] = {}
        self._clean: dict[str, Any] = {}
        self._rng: tuple | None = None
        self._culprits: dict[str, str] = {}  # key -> the case that left it changed

    # -- what is watched ----------------------------------------------------------------
    def watch(self, classes=()) -> None:
        """Start watching (first call: torch's settings; every call: these classes). A newly
        watched item's current state is its clean state."""
        if not self._probes:
            for probe in scalar_probes():
                try:
                    self._clean[probe.key] = probe.read()
                except Exception:  # noqa: BLE001 (not readable in this build: not watched)
                    continue
                self._probes[probe.key] = probe
            for name in CONFIG_MODULES:
                self._clean[f"config:{name}"] = self._read_config(name)
            self._rng = rng_state()
            classes = [*classes]
            for namespace in base_namespaces():
                self._add_namespace(namespace)
        for namespace in class_namespaces([*classes, *library_classes()]):
            self._add_namespace(namespace)

    def _add_namespace(self, namespace: Namespace) -> None:
        if namespace.label not in self._namespaces:
            self._namespaces[namespace.label] = namespace
            self._clean[f"ns:{namespace.label}"] = namespace.read()

    @staticmethod
    def _read_config(name: str):
        return config_values(name)

    # -- comparing ------------------------------------------------------------------------
    def differences(self) -> list[tuple[str, Change]]:
        """(key, change) for everything that differs from the clean state now."""
        out = []
        for key, probe in self._probes.items():
            try:
                now = probe.read()
            except Exception as error:  # noqa: BLE001
                now = f"unreadable ({type(error).__name__}: {error})"
            if not _same(self._clean[key], now):
                out.append((key, Change(probe.key, probe.show(self._clean[key]), probe.show(now))))
        for name in CONFIG_MODULES:
            before, after = self._clean[f"config:{name}"], self._read_config(name)
            for entry, old, new in config_differences(name, before, after):
                out.append((f"config:{name}", Change(f"{name}.{entry}", old, new)))
        for label, namespace in self._namespaces.items():
            before, after = self._clean[f"ns:{label}"], namespace.read()
            for name in namespace.differences(before, after):
                if name in after and (lazy_torch_patch(after[name]) or name in TORCH_LAZY_NAMES):
                    before[name] = after[name]  # torch's own first-use patch: part of the clean state now
                    continue
                out.append((f"ns:{label}:{name}", Change(f"{label}.{name}", describe_object(before.get(name)),
                                                          describe_object(after.get(name)))))
        return out

    def restore(self, keys: list[str]) -> None:
        """Put back what these keys name; what cannot be put back simply stays different."""
        for key in dict.fromkeys(keys):
            try:
                if key.startswith("config:"):
                    restore_config(key.removeprefix("config:"), self._clean[key])
                elif key.startswith("ns:"):
                    label, _, name = key.removeprefix("ns:").rpartition(":")
                    self._namespaces[label].restore(self._clean[f"ns:{label}"], [name])
                elif self._probes[key].write is not None:
                    self._probes[key].write(self._clean[key])
            except Exception:  # noqa: BLE001 (reported by the next comparison as not restored)
                continue
        if self._rng is not None:
            set_rng_state(self._rng)

    # -- around a case --------------------------------------------------------------------
    def begin(self, classes=()) -> tuple[list[Change], Victim | None]:
        """Before a case: changes made since the last case (restored, reported), and the victim
        report when something still differs after restoring."""
        self.watch(classes)
        found = self.differences()
        self.restore(self._restore_order(found))
        still = {key for key, _ in self.differences()}
        outside = [change for key, change in found if key not in still and key not in self._culprits]
        for key in [k for k in self._culprits if k not in still]:
            del self._culprits[key]
        if not still:
            return outside, None
        changes = tuple(Change(c.what, c.before, c.after, False) for k, c in found if k in still)
        culprits = tuple(dict.fromkeys(self._culprits[k] for k in still if k in self._culprits))
        return outside, Victim(changes, culprits)

    def end(self, case_label: str) -> list[Change]:
        """After a case: what it changed, each restored (or marked as not restorable, and the
        case remembered as the culprit)."""
        found = self.differences()
        self.restore(self._restore_order(found))
        still = {key for key, _ in self.differences()}
        for key in still:
            self._culprits.setdefault(key, case_label)
        return [Change(c.what, c.before, c.after, key not in still) for key, c in found]

    @staticmethod
    def _restore_order(found: list[tuple[str, Change]]) -> list[str]:
        """Functions first (a backend may have replaced the very setter a flag is restored
        with), then the default device (its context sits on the function-mode stack), then the rest."""
        keys = [key for key, _ in found]
        return sorted(keys, key=lambda k: (not k.startswith("ns:"), "default device" not in k))


def _same(before: Any, after: Any) -> bool:
    try:
        return bool(before == after)
    except Exception:  # noqa: BLE001 (tensors, odd types)
        return before is after


def loaded_classes(pipe) -> list[type]:
    """The classes a case's pipeline is made of: the pipeline, every component, every submodule
    of the models and the attention processors they call (what a backend might patch)."""
    classes = {type(pipe)}
    for component in getattr(pipe, "components", {}).values():
        if component is None:
            continue
        classes.add(type(component))
        modules = getattr(component, "modules", None)
        if callable(modules) and "torch" in sys.modules:
            for module in modules():
                classes.add(type(module))
                processor = getattr(module, "processor", None)
                if processor is not None:
                    classes.add(type(processor))
    return sorted(classes, key=lambda c: (c.__module__, c.__qualname__))
