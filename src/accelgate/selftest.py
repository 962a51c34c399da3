"""The sensitivity self-test: can this gate see damage on this model, under these tolerances?

A random-weight model, a model that decides its image in the first step, or tolerances
loosened too far let real damage pass, and nothing in a green run says so. `pytest -m quality
--accelgate-selftest` swaps the matrix's backends for the shipped damages
(`accelgate.backends.damage`, each at a stated magnitude) and keeps everything else of the
user's run: models, resolutions, baselines, tolerances and loosenings. Each damage case is
then judged the other way round: it passes when the gate caught the damage (some metric
failed: it says which) and fails when the damaged images passed, naming the model, the
damage and how close the metrics came. The reference's own cases run as usual, so a stale
baseline is not mistaken for a catch.
"""
from __future__ import annotations

from dataclasses import replace

from accelgate.config.load import BackendChoice, Config
from accelgate.verdict import Verdict, fmt_value


def _damages():
    """The damage registry, imported when first needed (it imports torch; the plugin must not)."""
    from accelgate.backends.damage import DAMAGES

    return DAMAGES


def selftest_config(config: Config) -> Config:
    """The config with its backends replaced by the reference and every shipped damage."""
    reference = config.backend(config.reference)
    return replace(config, backends=(reference, *(BackendChoice(spec) for spec in _damages().values())))


def is_damage(backend: str) -> bool:
    return backend in _damages()


def damage_verdict(verdict: Verdict) -> Verdict:
    """A damage case's gate verdict turned into the self-test's: caught -> passed, passed ->
    failed (the gate is blind to it here); errors, skips and unjudged failures (a missing
    baseline) stay what they were."""
    damage = _damages()[verdict.backend]
    failing = [c for c in verdict.checks if not c.passed]
    if verdict.outcome == "failed" and failing:
        caught = ", ".join(f"{c.metric} {fmt_value(c.value)} (needs {c.op} {fmt_value(c.threshold)})" for c in failing)
        return replace(verdict, outcome="passed", reason=f"caught {damage.name} ({damage.description}) by {caught}")
    if verdict.outcome != "passed":
        return verdict
    closest = ", ".join(f"{c.metric} {fmt_value(c.value)} {c.op} {fmt_value(c.threshold)}" for c in verdict.checks
                        if c.threshold is not None)
    return replace(verdict, outcome="failed", reason=(
        f"NOT CAUGHT: {damage.name} ({damage.description}) passes the gate on {verdict.model} at "
        f"{verdict.resolution[0]}x{verdict.resolution[1]} under this run's tolerances ({closest}). The gate "
        "cannot see this damage on this model: tighten the tolerances of this model, or gate a model whose "
        "output depends on every step (a random-weight model decides its image in the first step)"))


def selftest_lines(cases: list[dict]) -> list[str]:
    """Per model: the damages caught and with which metrics, the ones missed, the rest."""
    by_model: dict[str, list[dict]] = {}
    for case in cases:
        if is_damage(case["backend"]):
            by_model.setdefault(case["model"], []).append(case)
    lines = []
    for model, entries in sorted(by_model.items()):
        resolutions = sorted({"x".join(map(str, c["resolution"])) for c in entries})
        outcomes = {c["outcome"] for c in entries}
        if len(outcomes) == 1 and outcomes <= {"skipped", "error", "oom"}:  # e.g. a GPU model on CPU: once
            lines.append(f"self-test {model} ({', '.join(resolutions)}): {len(entries)} damage case(s) "
                         f"{outcomes.pop()}: {entries[0]['reason'].splitlines()[0] if entries[0]['reason'] else ''}")
            continue
        name = (lambda c: c["backend"]) if len(resolutions) == 1 else \
            (lambda c: f"{c['backend']}@{'x'.join(map(str, c['resolution']))}")
        caught = [f"{name(c)} ({', '.join(m for m, v in c['metrics'].items() if not v['passed'])})"
                  for c in entries if c["outcome"] == "passed"]
        missed = [name(c) for c in entries if c["outcome"] == "failed" and c["reason"].startswith("NOT CAUGHT")]
        other = [f"{name(c)} {c['outcome']}" for c in entries
                 if c["outcome"] != "passed" and not c["reason"].startswith("NOT CAUGHT")]
        line = f"self-test {model} ({', '.join(resolutions)}): caught " + (", ".join(caught) or "nothing")
        if missed:
            line += "; MISSED " + ", ".join(missed)
        if other:
            line += "; not judged: " + ", ".join(other)
        lines.append(line)
    return lines
