"""index.html, summary.md's order, the plots, re-rendering and comparing, on a synthetic
results.json with every gate (no pipeline runs here: the runs are test_report_pages.py's)."""
import copy
import dataclasses
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from accelgate.plugin import register_report_sections
from accelgate.quality.baselines import write_png
from accelgate.report import __main__ as cli
from accelgate.report.compare import compare
from accelgate.report.sections import FigureSpec, Section, SECTIONS, register_section
from accelgate.report.writer import write_report
from accelgate.speed.report import finish_part

register_report_sections()
ONEDIFF = ("backend 'onediff-oneflow' needs a CUDA device (running on cpu; run on a GPU machine with --device cuda) "
           "and missing package(s) onediffx (pip install --pre onediff onediffx)")


def _run_meta(run_id="r1"):
    return {"id": run_id, "started": "2026-12-02T10:00:00+00:00", "device": "cpu", "device_class": "cpu",
            "config": "/repo/accelgate.toml", "config_sha256": "abc", "reference": "eager",
            "versions": {"accelgate": "0.1.0", "torch": "2.15.0", "diffusers": "0.42.1", "transformers": "5.23.0"}}


def _quality_case(model, backend, outcome="passed", reason="", images=True, ssim=1.0):
    case_id = f"{model}/{backend}/32x32"
    folder = f"images/{model}/{backend}/32x32"
    return {"id": case_id, "model": model, "backend": backend, "resolution": [32, 32], "reference": backend == "eager",
            "kind": "pairwise", "outcome": outcome, "reason": reason,
            "metrics": {"ssim": {"value": ssim, "threshold": 0.995, "op": ">=", "passed": ssim >= 0.995},
                        "psnr": {"value": "inf" if ssim == 1.0 else 21.5, "threshold": 35.0, "op": ">=",
                                 "passed": ssim == 1.0}} if images else {},
            "images": [{"prompt": f"prompt {i} <b>", "seed": i, **{k: f"{folder}/{i:02d}-{k}.png" for k in
                                                                    ("candidate", "baseline", "diff")},
                        "metrics": {"ssim": ssim}} for i in range(2)] if images else [],
            "worst_image": 0 if images else None, "timing": {"generate_s": 0.1}}


def _parts(tmp_path):
    cases = []
    for model in ("tiny-dit", "tiny-sd"):
        cases += [_quality_case(model, "eager"), _quality_case(model, "channels-last"),
                  _quality_case(model, "onediff-oneflow", "skipped", ONEDIFF, images=False)]
    cases.append(_quality_case("tiny-sd", "noise", "failed", "quality dropped vs the baseline: ssim 0.3 < 0.995",
                               ssim=0.3))
    cases.append(_quality_case("tiny-dit", "broken", "error", "RuntimeError at fast.py:14: <boom>", images=False))
    for case in cases:
        for image in case["images"]:
            for kind in ("candidate", "baseline", "diff"):
                (tmp_path / image[kind]).parent.mkdir(parents=True, exist_ok=True)
                write_png(tmp_path / image[kind], np.full((32, 32, 3), 40 * image["seed"] + 20, np.uint8))
    quality = {"cases": cases, "backend_order": ["eager", "channels-last", "noise", "broken", "deepcache",
                                                 "onediff-oneflow"],
               "not_applicable": [{"id": "tiny-dit/deepcache/32x32", "model": "tiny-dit", "backend": "deepcache",
                                   "resolution": [32, 32], "reason": "needs a UNet; tiny-dit has a transformer"}],
               "model_hashes": {}, "stale_models": {}, "written_baselines": []}
    lpips = lambda value, passed: {"lpips": {"value": value, "threshold": 0.005, "op": "<=", "passed": passed,  # noqa
                                             "ci": [value / 2, value * 1.5]}}
    distribution = {"reference": "eager", "backend_order": ["eager", "channels-last", "noise"], "cases": [
        {"id": f"tiny-dit/{b}/32x32", "run": "cpu-metrics", "model": "tiny-dit", "backend": b, "resolution": [32, 32],
         "reference": b == "eager", "outcome": "passed" if b != "noise" else "failed", "reason": "",
         "metrics": lpips(v, b != "noise"), "summary": {"lpips": {"value": v}}, "reference_summary": {},
         "random_weights": True, "metric_models": {}, "prompt_set": "imagenet-classes", "warnings": []}
        for b, v in (("eager", 0.0), ("channels-last", 1e-4), ("noise", 0.02))]}
    speed_cases = [{"id": f"tiny-dit/{b}/32x32", "outcome": "passed", "model": "tiny-dit", "backend": b,
                    "resolution": "32x32", "it_per_s": s, "e2e_s": 3 / s, "peak_mem_bytes": 2**20,
                    "cold_warmup_s": 0.5, "warm_warmup_s": 0.2, "recompiles": 0, "step_s": [1 / s] * 3}
                   for b, s in (("eager", 50.0), ("channels-last", 60.0))]
    speed = finish_part({"reference": "eager", "machine": {}, "datetime": "", "cases": speed_cases,
                         "saved_run": None})
    return {"quality": quality, "distribution": distribution, "speed": speed}


@pytest.fixture
def report(tmp_path):
    write_report(tmp_path, _run_meta(), _parts(tmp_path))
    return tmp_path


class _Page(HTMLParser):
    """What the tests read from index.html: elements with their classes and attributes, in order."""

    def __init__(self, text):
        super().__init__()
        self.elements = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def having(self, tag, cls=None):
        return [a for t, a in self.elements if t == tag and (cls is None or cls in (a.get("class") or "").split())]


def test_the_page_opens_with_the_failures_then_grids_with_one_column_per_backend(report):
    text = (report / "index.html").read_text()
    page = _Page(text)
    cases = page.having("div", "case")
    assert [(c["data-gate"], c["data-case"]) for c in cases] == [
        ("quality", "tiny-sd/noise/32x32"), ("quality", "tiny-dit/broken/32x32"), ("distribution", "tiny-dit/noise/32x32")]
    assert text.index('data-case="tiny-sd/noise/32x32"') < text.index('class="grid"')
    noise = text.split('data-case="tiny-sd/noise/32x32"')[1].split('data-case="tiny-dit/broken')[0]
    for kind in ("baseline", "candidate", "diff"):  # side by side, per image
        assert f'src="images/tiny-sd/noise/32x32/00-{kind}.png"' in noise
        assert f'src="images/tiny-sd/noise/32x32/01-{kind}.png"' in noise
    assert "&lt;boom&gt;" in text and "<boom>" not in text  # escaped, never markup
    grids = text.split('<table class="grid"')[1:]
    assert len(grids) == 2
    dit = grids[0].split("</table>")[0]
    assert re.findall(r'<th class="backend">([^<\s]+)', dit) == ["eager", "channels-last", "broken", "deepcache",
                                                             "onediff-oneflow"]
    assert dit.count('data-backend="eager"') == 2  # one row per prompt
    assert "n/a (N1)" in dit and "skipped (S1)" in dit and 'class="cell outcome-error"' in dit


def test_the_page_is_self_contained(report):
    text = (report / "index.html").read_text()
    page = _Page(text)
    assert not page.having("script") and not page.having("link")
    sources = [a["src"] for a in page.having("img")] + [a["href"] for a in page.having("a")]
    assert sources and not [s for s in sources if re.match(r"[a-z]+:", s) or s.startswith("/")]
    assert all((report / s.split("#")[0]).is_file() for s in sources if not s.startswith("#"))


def test_plots_forest_speed_and_per_step_curves_are_drawn(report):
    plots = sorted(p.name for p in (report / "plots").iterdir())
    assert plots == ["forest-cpu-metrics-tiny-dit-32x32.png", "speed-tiny-dit.png", "steps-tiny-dit-32x32.png"]
    assert all((report / "plots" / p).read_bytes().startswith(b"\x89PNG") for p in plots)
    text = (report / "index.html").read_text()
    assert 'src="plots/forest-cpu-metrics-tiny-dit-32x32.png"' in text and "margin it must stay within" in text


def test_a_plot_that_cannot_be_drawn_is_named_and_the_page_stays(report):
    def broken(part, results):
        return [FigureSpec("broken", "a broken plot", "", draw=lambda figure: 1 / 0)]

    original = SECTIONS["speed"]
    SECTIONS["speed"] = dataclasses.replace(original, figures=broken)
    try:
        assert cli.main([str(report)]) == 0
    finally:
        SECTIONS["speed"] = original
    text = (report / "index.html").read_text()
    assert "plot not drawn: ZeroDivisionError" in text and "tiny-sd/noise/32x32" in text


def test_summary_md_failures_first_with_image_links_and_each_skip_reason_once(report):
    summary = (report / "summary.md").read_text()
    assert summary.index("## Failures first") < summary.index("## tiny-dit @ 32x32") < summary.index(
        "## Skipped and not applicable")
    assert ("[candidate](images/tiny-sd/noise/32x32/00-candidate.png) · [baseline](images/tiny-sd/noise/32x32/"
            "00-baseline.png) · [diff](images/tiny-sd/noise/32x32/00-diff.png)") in summary
    assert summary.count(ONEDIFF) == 1 and summary.count("needs a UNet; tiny-dit has a transformer") == 1
    assert "⏭ skipped (S1)" in summary and "n/a (N1)" in summary
    reasons = summary.split("## Skipped and not applicable")[1]
    assert "quality: `tiny-dit/onediff-oneflow/32x32`, `tiny-sd/onediff-oneflow/32x32`" in reasons


def test_rerendering_from_results_json_alone_gives_the_same_pages(report, capsys):
    before = {name: (report / name).read_bytes() for name in ("summary.md", "index.html", "speed.md")}
    plots = {p.name: p.read_bytes() for p in (report / "plots").iterdir()}
    for name in before:
        (report / name).unlink()
    assert cli.main([str(report)]) == 0
    assert {name: (report / name).read_bytes() for name in before} == before
    assert {p.name: p.read_bytes() for p in (report / "plots").iterdir()} == plots
    assert "wrote" in capsys.readouterr().out


def test_compare_a_report_with_itself_and_with_a_flipped_case(report, tmp_path, capsys):
    assert cli.main(["--compare", str(report), str(report), "--exit-code"]) == 0
    assert "No change" in capsys.readouterr().out
    results = json.loads((report / "results.json").read_text())
    changed = copy.deepcopy(results)
    case = next(c for c in changed["cases"] if c["id"] == "tiny-dit/channels-last/32x32")
    case.update(outcome="failed", reason="quality dropped vs the baseline: ssim 0.9 < 0.995")
    case["metrics"]["ssim"].update(value=0.9, passed=False)
    changed["cases"][0]["metrics"]["ssim"]["value"] = 0.9999  # below the SSIM floor: not a move
    changed["speed"]["cases"][1]["it_per_s"] = 30.0
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(json.dumps(changed))
    diff = compare(results, changed)
    assert [(f["case"], f["old"], f["new"]) for f in diff.flipped] == [("tiny-dit/channels-last/32x32", "passed",
                                                                         "failed")]
    assert [(m["case"], m["metric"]) for m in diff.moved] == [("tiny-dit/channels-last/32x32", "ssim")]
    assert [(s["case"], s["what"]) for s in diff.speed] == [("tiny-dit/channels-last/32x32", "it/s")]
    assert cli.main(["--compare", str(report), str(tmp_path / "new"), "--exit-code"]) == 1
    out = capsys.readouterr().out
    assert "## Verdicts that flipped (1)" in out and "| `tiny-dit/channels-last/32x32` | quality | ✅ passed" in out


def test_the_cli_says_what_is_missing(tmp_path, capsys):
    assert cli.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/results.json: no such results.json" in err and "--quality-report" in err


def test_a_section_registered_twice_differently_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_section(Section("quality", None, 0, lambda part, results: []))
