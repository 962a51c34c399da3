"""The baselines' lifecycle (issue 12): --regen-baselines=missing, what a regen changed, and
orphaned baselines listed and pruned."""
import json

import numpy as np
import pytest

from accelgate.config.load import build_config
from accelgate.config.schema import ConfigError, parse_regen_mode
from accelgate.quality.baselines import Baseline
from accelgate.quality.lifecycle import change_line, find_orphans, prune, regen_change


def test_the_regen_mode_is_all_or_missing():
    assert parse_regen_mode("all") == "all" and parse_regen_mode(" Missing ") == "missing"
    with pytest.raises(ConfigError, match="--regen-baselines='stale': choose one of all, missing"):
        parse_regen_mode("stale")


def _image(value):
    return np.full((16, 16, 3), value, dtype=np.uint8)


def test_a_regen_says_new_unchanged_or_changed_with_the_metrics_against_the_old_images(tmp_path):
    old = Baseline(tmp_path, {}, (_image(100), _image(100)))
    assert regen_change("m/eager/8x8", None, [_image(100)])["change"] == "new"
    assert regen_change("m/eager/8x8", old, [_image(100), _image(100)])["change"] == "unchanged"
    noisy = _image(100)
    noisy[4:12, 4:12] = 200
    changed = regen_change("m/eager/8x8", old, [_image(100), noisy])
    assert changed["change"] == "changed" and changed["moved"][0]["psnr"] == "inf"
    assert changed["moved"][1]["ssim"] < 1
    assert change_line(changed).startswith("m/eager/8x8: changed (2 of 2 image(s) compared, worst SSIM 0.")
    assert "worst PSNR" in change_line(changed) and "dB vs the previous baseline" in change_line(changed)


def _baseline_dir(root, *parts, manifest=True):
    directory = root.joinpath(*parts)
    directory.mkdir(parents=True)
    (directory / "00.png").write_bytes(b"x" * 2048)
    if manifest:
        (directory / "manifest.json").write_text("{}")
    return directory


def test_orphans_are_the_stores_directories_the_matrix_no_longer_has_and_only_they_are_pruned(tmp_path):
    config = build_config({"models": ["tiny-sd"], "model": {"tiny-sd": {"resolutions": ["32x32"]}}}, None, tmp_path)
    root = tmp_path / "baselines"
    kept = _baseline_dir(root, "cpu", "tiny-sd", "32x32")
    orphans = [_baseline_dir(root, "cpu", "tiny-sd", "64x64"), _baseline_dir(root, "cpu", "old-model", "32x32"),
               _baseline_dir(root, "cuda-nvidia-h100", "old-model", "32x32")]
    leftover = _baseline_dir(root, "cpu", "tiny-sd", ".32x32.new-1-abc")  # the store's own work directory
    stranger = _baseline_dir(root, "cpu", "notes", "drafts", manifest=False)  # not written by the store
    found = find_orphans(root, config)
    assert sorted(o.path for o in found) == sorted(orphans)
    assert all(o.size >= 2048 for o in found) and "is not in the matrix" in found[0].line()
    assert sorted(o.path for o in prune(found)) == sorted(orphans)
    assert all(not o.exists() for o in orphans) and not (root / "cpu" / "old-model").exists()
    assert kept.is_dir() and leftover.is_dir() and stranger.is_dir()


def test_regen_missing_keeps_current_baselines_rewrites_stale_ones_and_prunes_orphans(pytester, quality_project):
    config = quality_project('models = ["tiny-dit"]\nbackends = ["eager"]\nbaseline_dir = "baselines"\n'
                             '[model.tiny-dit]\nresolutions = ["32x32"]\n')
    orphan = _baseline_dir(pytester.path / "baselines", "cpu", "tiny-dit", "48x48")
    run = lambda *args: pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--accelgate-config={config}", *args)  # noqa: E731

    current = run("--regen-baselines=missing", "--quality-report=current")
    current.assert_outcomes(passed=1)
    current.stdout.fnmatch_lines(["*ORPHANED baseline *48x48*: tiny-dit at 48x48 is not in the matrix; "
                                  "remove with --prune-baselines",
                                  "*regen tiny-dit/eager/32x32: current (kept: --regen-baselines=missing)"])
    assert orphan.is_dir()
    part = json.loads((pytester.path / "current" / "results.json").read_text())
    assert part["regen_changes"] == [{"id": "tiny-dit/eager/32x32", "change": "current", "images": 2}]

    config.write_text(config.read_text().replace('resolutions = ["32x32"]', 'resolutions = ["32x32"]\nseed = 7'))
    stale = run("--regen-baselines=missing", "--prune-baselines", "--quality-report=stale")
    stale.assert_outcomes(passed=1)
    stale.stdout.fnmatch_lines(["*baseline pruned: *48x48*",
                                "*regen tiny-dit/eager/32x32: changed (2 of 2 image(s) compared, worst SSIM *"])
    assert not orphan.exists()
    summary = (pytester.path / "stale" / "summary.md").read_text()
    assert "**Baselines regenerated**" in summary and "**Baselines pruned:**" in summary
