"""The report of real runs as a release engineer meets it (issue 11's acceptance): index.html
of a run with one damaged backend in a real headless Chromium, pytest-html's report of it,
re-rendering, comparing two runs, the default matrix's skip reasons, --benchmark-histogram.

The damaged backend is `fast` (fast_backend.py below): the identity, until ACCELGATE_TEST_DAMAGE
is set and it adds noise to the denoiser's output; so the two runs share their config and
their case ids, as two nightly runs of a backend whose code regressed do."""
import importlib.util
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import escape

# pytester runs pytest in this process and afterwards drops every module a run imported;
# torch, triton's C extension (pulled in by dynamo) and torchao cannot be imported twice.
import torch._dynamo  # noqa: F401,E402
import torch._inductor.utils  # noqa: F401,E402
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel  # noqa: F401,E402

try:  # --benchmark-histogram imports pygal, which imports the importlib_metadata backport, whose import
    # deletes the stdlib's PathFinder.find_distributions and installs its own finder in sys.meta_path;
    # pytester then drops that finder with the run's modules, and no later run finds a pytest11 entry
    # point. Imported here, before any run, its finder belongs to this process and stays.
    import importlib_metadata  # noqa: F401,E402
except ImportError:
    pass

from accelgate.report import __main__ as cli
from accelgate.report.compare import compare

REPO = Path(__file__).resolve().parents[3]
BACKENDS = ["eager", "channels-last", "fast"]
CONFIG = """
models = ["tiny-dit"]
backends = ["eager", "channels-last", "fast"]
baseline_dir = "baselines"
[model.tiny-dit]
steps = 3
resolutions = ["32x32"]
[backend.fast]
factory = "fast_backend:make_fast"
[speed]
rounds = 2
warmup_rounds = 0
"""
FAST_BACKEND = """
import os
from fixtures.example_backends import denoiser_noise

def make_fast(pipe):
    return denoiser_noise(pipe, sigma=0.1) if os.environ.get("ACCELGATE_TEST_DAMAGE") else pipe
"""


@pytest.fixture
def project(quality_project):
    return quality_project(CONFIG, fast_backend=FAST_BACKEND,
                           test_inner_speed=(REPO / "tests" / "test_speed.py").read_text())


def _run(pytester, config, *args):
    return pytester.runpytest("-p", "no:cacheprovider", f"--accelgate-config={config}", *args)


def _quality_run(pytester, config, out, *args, damaged=False, monkeypatch=None):
    if damaged:
        monkeypatch.setenv("ACCELGATE_TEST_DAMAGE", "1")
    try:
        result = _run(pytester, config, "-m", "quality", f"--quality-report={out}", *args)
    finally:
        if damaged:
            monkeypatch.delenv("ACCELGATE_TEST_DAMAGE")
    result.assert_outcomes(passed=2 if damaged else 3, failed=1 if damaged else 0, deselected=3)
    return result


PAGE_FACTS = """JSON.stringify({
  cases: Array.from(document.querySelectorAll('.case')).map(c => [c.dataset.case, c.dataset.outcome]),
  images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
  grids: Array.from(document.querySelectorAll('table.grid')).map(g => ({
    backends: Array.from(g.querySelectorAll('th.backend')).map(th => th.firstChild.textContent.trim()),
    rows: Array.from(g.querySelectorAll('tr')).slice(1).map(r => r.querySelectorAll('td.cell').length)})),
  firstGridAfterFailure: (() => { const c = document.querySelector('.case'), g = document.querySelector('table.grid');
    return !!(c && g && (c.compareDocumentPosition(g) & Node.DOCUMENT_POSITION_FOLLOWING)); })()
})"""


def test_a_damaged_run_in_a_real_browser_failures_first_every_image_loaded(pytester, project, monkeypatch,
                                                                          chromium):
    out = pytester.path / "out"
    html = importlib.util.find_spec("pytest_html") is not None  # an optional extra (accelgate[html])
    extra = [f"--html={pytester.path / 'pytest.html'}", "--self-contained-html"] if html else []
    _quality_run(pytester, project, out, *extra, damaged=True, monkeypatch=monkeypatch)
    chromium.page((out / "index.html").as_uri())
    facts = json.loads(chromium.evaluate(PAGE_FACTS))
    chromium.screenshot(pytester.path / "index.png")
    assert facts["cases"][0] == ["tiny-dit/fast/32x32", "failed"] and facts["firstGridAfterFailure"]
    assert len(facts["images"]) >= 3 * 2 + 3 * 2  # the failing case's triples, then a grid of 3 backends x 2 prompts
    assert [src for src, complete, width in facts["images"] if not (complete and width > 0)] == []
    assert facts["grids"] == [{"backends": BACKENDS, "rows": [3, 3]}]
    assert (pytester.path / "index.png").read_bytes().startswith(b"\x89PNG")

    # pytest-html's own report of the same run carries the failing case's three images
    if html:
        blob = _pytest_html_data(pytester.path / "pytest.html")
        failing = [t for name, runs in blob["tests"].items() if "fast" in name for t in runs]
        names = [e["name"] for t in failing for e in t["extras"] if e["content"].startswith("data:image/png;base64,")]
        assert {"00 candidate", "00 baseline", "00 diff"} <= set(names), names

    # and the page is re-rendered from results.json alone: the same summary.md
    summary = (out / "summary.md").read_text()
    (out / "summary.md").unlink()
    assert cli.main([str(out)]) == 0
    assert (out / "summary.md").read_text() == summary


def _pytest_html_data(path: Path) -> dict:
    class Blob(HTMLParser):
        data = None

        def handle_starttag(self, tag, attrs):
            self.data = self.data or dict(attrs).get("data-jsonblob")

    parser = Blob()
    parser.feed(path.read_text())
    return json.loads(parser.data)


def test_comparing_a_run_with_itself_and_with_one_damaged_backend(pytester, project, monkeypatch, capsys):
    before, after = pytester.path / "before", pytester.path / "after"
    _quality_run(pytester, project, before)
    _quality_run(pytester, project, after, damaged=True, monkeypatch=monkeypatch)
    assert cli.main(["--compare", str(before), str(before), "--exit-code"]) == 0
    assert "No change" in capsys.readouterr().out
    old, new = (json.loads((d / "results.json").read_text()) for d in (before, after))
    diff = compare(old, new)
    assert [(f["case"], f["old"], f["new"]) for f in diff.flipped] == [("tiny-dit/fast/32x32", "passed", "failed")]
    assert {m["case"] for m in diff.moved} == {"tiny-dit/fast/32x32"} and {"ssim", "psnr"} <= {
        m["metric"] for m in diff.moved}
    assert not (diff.speed or diff.only_old or diff.only_new or diff.notes)
    assert cli.main(["--compare", str(before), str(after)]) == 0
    out = capsys.readouterr().out
    assert "## Verdicts that flipped (1)" in out and "tiny-dit/channels-last" not in out


def test_the_default_matrix_prints_each_skip_reason_once(pytester, quality_module):
    """The repository's own matrix (pyproject.toml): every real model and OneDiff case is skipped
    on a CPU; three tiny cases run, so three tables carry OneDiff columns."""
    out, baselines = pytester.path / "out", pytester.path / "baselines"
    # baselines of this environment's tiny models (the committed ones are tied to the CI's versions)
    common = ("-p", "no:cacheprovider", f"--accelgate-config={REPO / 'pyproject.toml'}", f"--baseline-dir={baselines}")
    regen = pytester.runpytest(*common, "--regen-baselines", "-k", "tiny-dit/eager or tiny-sd/eager/32x32")
    assert regen.parseoutcomes()["passed"] == 3
    # a second in-process run would import transformers' CLIP modules again (a KeyError on transformers 5.5)
    result = pytester.runpytest_subprocess(*common, "-m", "quality", f"--quality-report={out}",
                                "-k", "not tiny or onediff or tiny-dit/eager or tiny-sd/eager/32x32")
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 3 and outcomes["skipped"] > 100, outcomes
    data = json.loads((out / "results.json").read_text())
    summary = (out / "summary.md").read_text()
    skipped = {c["reason"] for c in data["cases"] if c["outcome"] == "skipped"}
    na = {n["reason"] for n in data["not_applicable"]}
    assert len(skipped) >= 8 and na  # one per real model, one per OneDiff backend
    assert summary.count("## tiny-dit @") == 2 and summary.count("## tiny-sd @ 32x32") == 1
    for reason in skipped | na:
        assert summary.count(reason.splitlines()[0]) == 1, reason
    assert re.search(r"\| ⏭ skipped \(S\d+\) \| ⏭ skipped \(S\d+\) \|", summary)  # the OneDiff columns point
    html = (out / "index.html").read_text()
    for reason in skipped:
        assert html.count(str(escape(reason.splitlines()[0]))) == 1, reason


def test_benchmark_histogram_is_drawn(pytester, project):
    pytest.importorskip("pygal", reason="--benchmark-histogram draws with pygal: pip install 'accelgate[histogram]'")
    result = _run(pytester, project, "-m", "benchmark", "--backends=eager",
                  f"--benchmark-histogram={pytester.path / 'hist'}")
    result.assert_outcomes(passed=1, deselected=1)
    drawn = list(pytester.path.glob("hist*.svg"))  # one per benchmark group: hist-tiny-dit_@_32x32.svg
    assert len(drawn) == 1 and drawn[0].read_text().lstrip().startswith(("<?xml", "<svg"))
