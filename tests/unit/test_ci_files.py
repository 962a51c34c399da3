"""The CI files run what the README says they run (issue 12): the CPU workflow and .ci/run the
README's test command, then the example project against the built wheel, the nightly GPU workflow the README's "Nightly GPU job" block verbatim,
and every tox environment has a description."""
import configparser
import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _workflow(name: str) -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / name).read_text(encoding="utf-8"))


def _run_lines(workflow: dict) -> list[str]:
    """Every shell line the workflow's steps run, continuation and indentation removed."""
    lines = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").replace("\\\n", " ").splitlines():
                lines.append(line.strip())
    return [line for line in lines if line]


def _commands(lines: list[str]) -> list[str]:
    """The pytest and python commands, without the venv prefix, normalized by shlex."""
    found = []
    for line in lines:
        line = line.removeprefix(".venv/bin/")
        if line.startswith(("pytest ", "python -m accelgate")):
            found.append(" ".join(shlex.split(line, posix=True)))
    return found


def _readme_block(heading: str) -> list[str]:
    section = README.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_cpu_workflow_and_ci_run_run_the_readmes_test_command():
    quick_start = _readme_block("## Quick start")
    test_command = next(line.split("#")[0].strip() for line in quick_start if "what CI runs" in line)
    example = _readme_block("After the suite both run the example project")
    assert example == ["./scripts/example.sh .venv/bin/python"]
    workflow = [line for line in _run_lines(_workflow("ci.yml")) if "chromium" not in line]
    assert workflow == ["./scripts/setup.sh", test_command] + example
    ci_run = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export ", "if ", "fi", "(", "||"))]
    assert ci_run[0].startswith("./scripts/setup.sh") and ci_run[-2:] == [test_command] + example


def test_the_example_runs_the_wheel_installed_without_dependencies_in_its_own_directory():
    script = (REPO / "scripts" / "example.sh").read_text()
    assert "pip wheel --quiet --no-deps" in script and "install --quiet --no-deps --ignore-installed" in script
    assert "venv --without-pip" in script and ".pth" in script and "not the wheel" in script
    assert "cd examples/my-project" in script and "-m pytest -p no:cacheprovider -m quality" in script
    example = REPO / "examples" / "my-project"
    assert (example / "tests" / "test_quality.py").is_file() and (example / "pyproject.toml").is_file()
    assert list((example / "baselines" / "cpu").rglob("manifest.json")), "the example's CPU baselines are committed"


def test_the_nightly_gpu_workflow_runs_the_readmes_nightly_block_verbatim():
    workflow = _workflow("nightly-gpu.yml")
    job = next(iter(workflow["jobs"].values()))
    assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    ran = _commands(_run_lines(workflow))
    documented = _commands(_readme_block("### Nightly GPU job"))
    assert sorted(ran) == sorted(documented)
    quality = [c for c in ran if c.startswith("pytest -m quality")]
    assert len(quality) == 2 and all("--strict-metrics" in c and "--device cuda" in c for c in quality)
    speed = [c for c in ran if c.startswith("pytest -m benchmark")]
    compared = [c for c in speed if "--benchmark-compare " in c + " "]
    bootstrap = [c for c in speed if c not in compared]
    assert len(compared) == 1 and "--benchmark-compare-fail=" in compared[0] and "--accelgate-compare-fail=" in compared[0]
    assert len(bootstrap) == 1 and "--benchmark-autosave" in bootstrap[0]
    assert any(c.startswith("python -m accelgate.report --compare") for c in ran)
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any(u.startswith("actions/cache/restore") for u in uses)
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    cache = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/cache"))
    assert "huggingface/hub" in cache["with"]["path"] and "accelgate/weights" in cache["with"]["path"]
    assert "GITHUB_STEP_SUMMARY" in "\n".join(_run_lines(workflow))


def test_every_tox_environment_says_what_it_runs():
    tox = configparser.ConfigParser()
    tox.read(REPO / "tox.ini")
    envs = {section.removeprefix("testenv:"): tox[section] for section in tox.sections()
            if section.startswith("testenv:")}
    assert set(envs) == {"cpu", "min-versions", "gpu-quality", "gpu-distribution", "gpu-bench"}
    assert all(env.get("description", "").strip() for env in envs.values())
    assert '"quality and not slow"' in envs["gpu-quality"]["commands"]
    assert '"quality and slow"' in envs["gpu-distribution"]["commands"]
    assert "-m benchmark" in envs["gpu-bench"]["commands"] and "no:xdist" in envs["gpu-bench"]["commands"]
    assert "min-versions.txt" in envs["min-versions"]["deps"]


def test_min_versions_pins_exactly_the_lower_bounds_pyproject_declares():
    """tox -e min-versions tests what pyproject.toml promises: each `>=` lower bound is pinned
    with `==` to the same version (a bound nobody installs is a guess)."""
    import tomllib

    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project["dependencies"]) + project["optional-dependencies"]["metrics"]
    bounds = {}
    for requirement in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        if match:
            bounds[match[1].lower().replace("_", "-")] = Version(match[2])
    pins = {}
    for line in (REPO / "requirements" / "min-versions.txt").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", line.strip())
        if match:
            pins[match[1].lower().replace("_", "-")] = Version(match[2])
    assert bounds and {name: pins.get(name) for name in bounds} == bounds
