"""What every page of the report shows whatever gates ran, read from results.json alone:
the failures first, and each skip / n/a reason once with the cases it applies to.

A gate's part holds its cases (`id`, `outcome`, `reason`, `metrics`, and for the per-image
gate `images`); speed cases say why they failed in `problems`. These functions only regroup
what is there: no metric is computed, no threshold compared. Both summary.md and index.html
use them, so the two pages list the same failures and the same reasons in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accelgate.report.markdown import OUTCOME_MARK, table
from accelgate.report.sections import Part, ordered
from accelgate.verdict import fmt_value

FAILING = ("failed", "error")
KINDS = ("candidate", "baseline", "diff")
DIRECTION = {">=": "higher is better", "<=": "lower is better", "info": "reported, not gated"}


def gate_parts(results: dict[str, Any]) -> list[tuple[str, Part]]:
    """(gate name, its part) for every registered gate that has cases, in report order."""
    found = []
    for section in ordered():
        part = results if section.key is None else results.get(section.key)
        if part and part.get("cases"):
            found.append((section.name, part))
    return found


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else fmt_value(value)


def check_rows(case: dict[str, Any]) -> list[dict[str, Any]]:
    """A case's metrics as rows: name, value (and interval), threshold with its operator,
    direction, passed, and why a tolerance was loosened; values formatted as the verdict does."""
    rows = []
    for name, check in case.get("metrics", {}).items():
        ci = check.get("ci")
        rows.append({
            "metric": name, "value": _number(check.get("value")),
            "ci": f"{_number(ci[0])} .. {_number(ci[1])}" if ci else "",
            "threshold": "" if check.get("op") == "info" else f"{check.get('op')} {_number(check.get('threshold'))}",
            "direction": DIRECTION.get(check.get("op"), ""), "passed": bool(check.get("passed")),
            "loosened": check.get("loosened_because", ""), "note": check.get("note", ""),
        })
    return rows


def failures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every failed or erroring case of every gate, the reference drift first (it puts every
    other verdict of its model in question), then in report order."""
    found = []
    for gate, part in gate_parts(results):
        for case in part["cases"]:
            outcome = case.get("outcome") or case.get("verdict")
            if outcome not in FAILING:
                continue
            images = [{**image, "index": index} for index, image in enumerate(case.get("images") or [])
                      if all(image.get(kind) for kind in KINDS)]
            found.append({"id": case["id"], "gate": gate, "outcome": outcome,
                          "reason": case.get("reason") or "\n".join(case.get("problems") or []),
                          "reference": bool(case.get("reference")), "checks": check_rows(case), "images": images})
    return sorted(found, key=lambda f: not (f["reference"] and f["gate"] == "quality" and f["checks"]))


@dataclass
class Reason:
    """One distinct skip or n/a reason, its label in the tables (S1, N1...) and its cases."""

    kind: str  # "skipped" or "n/a"
    text: str
    label: str = ""
    cases: dict[str, list[str]] = field(default_factory=dict)  # gate -> case ids

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.cases.values())


def reasons(results: dict[str, Any]) -> list[Reason]:
    """Skip reasons (every gate) and n/a reasons, each once, most cases first, labelled."""
    found: dict[tuple[str, str], Reason] = {}
    for gate, part in gate_parts(results):
        for case in part["cases"]:
            if case.get("outcome") == "skipped":
                text = case.get("reason") or "no reason given"
                found.setdefault(("skipped", text), Reason("skipped", text)).cases.setdefault(gate, []).append(case["id"])
    for item in results.get("not_applicable", []):
        found.setdefault(("n/a", item["reason"]), Reason("n/a", item["reason"])).cases.setdefault(
            "quality", []).append(item["id"])
    out = []
    for kind, prefix in (("skipped", "S"), ("n/a", "N")):
        group = sorted((r for r in found.values() if r.kind == kind), key=lambda r: (-r.count, r.text))
        for number, reason in enumerate(group, 1):
            reason.label = f"{prefix}{number}"
        out += group
    return out


def reason_labels(results: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(kind, reason text) -> its label, for a table cell that points at the reason."""
    return {(r.kind, r.text): r.label for r in reasons(results)}


# ------------------------------------------------------------------------------ markdown
def image_links(image: dict[str, Any]) -> str:
    prompt = str(image.get("prompt", ""))[:60].replace("`", "'")
    links = " · ".join(f"[{kind}]({image[kind]})" for kind in KINDS)
    return f"- image {image['index']} `{prompt}` (seed {image.get('seed')}): {links}"


def failures_markdown(results: dict[str, Any]) -> list[str]:
    """summary.md's first section: each failing case with its reason, metric table and images."""
    found = failures(results)
    if not found:
        return []
    out = [f"## Failures first\n\n{len(found)} case(s) failed or raised; each with every metric (value, threshold, "
           "direction) and its images (candidate, stored baseline, amplified difference)."]
    for failure in found:
        lines = [f"### {OUTCOME_MARK.get(failure['outcome'], failure['outcome'])}: {failure['id']} ({failure['gate']})"]
        if failure["reason"]:
            lines.append("\n".join("> " + line for line in failure["reason"].splitlines()))
        if failure["checks"]:
            rows = [[r["metric"], r["value"] + (f" (CI {r['ci']})" if r["ci"] else ""), r["threshold"] or "-",
                     r["direction"], "✅" if r["passed"] else "❌"] for r in failure["checks"]]
            lines.append(table(["Metric", "Value", "Threshold", "Direction", ""], rows))
        if failure["images"]:
            lines.append("\n".join(image_links(image) for image in failure["images"]))
        out.append("\n\n".join(lines))
    return out


def reasons_markdown(results: dict[str, Any]) -> list[str]:
    """summary.md's last section: every skip and n/a reason once, with its cases."""
    found = reasons(results)
    if not found:
        return []
    out = ["## Skipped and not applicable\n\nEach reason once, with the cases it applies to; the tables point here "
           "with its label (S: skipped, what to install or where to run; N: the backend cannot serve the model)."]
    for reason in found:
        what = "skipped" if reason.kind == "skipped" else "not applicable"
        cases = "; ".join(f"{gate}: " + ", ".join(f"`{i}`" for i in ids) for gate, ids in reason.cases.items())
        quoted = "\n".join("> " + line for line in reason.text.splitlines())
        out.append(f"### {reason.label}: {reason.count} case(s) {what}\n\n{quoted}\n\nCases: {cases}")
    return out
