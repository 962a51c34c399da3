"""The baseline store: atomic writes, recovery, and every kind of damaged baseline."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from accelgate.quality.baselines import BaselineError, BaselineStore, stale_fields

REGEN = "pytest -m quality --regen-baselines -k \"m/eager/16x16\""


def _store(tmp_path):
    return BaselineStore(tmp_path / "baselines", "cpu", regen_command=lambda case_id: REGEN)


def _write(store, value=10, n=2):
    images = [np.full((16, 16, 3), value + i, np.uint8) for i in range(n)]
    manifest = {"model": "m", "model_hash": "abc", "settings": {"steps": 4},
                "images": [{"prompt": f"p{i}", "seed": i} for i in range(n)]}
    return store.write("m", "16x16", manifest, images), images


def test_write_then_read_roundtrip(tmp_path):
    store = _store(tmp_path)
    directory, images = _write(store)
    baseline = store.read("m/eager/16x16", "m", "16x16")
    assert baseline.directory == directory
    assert all(np.array_equal(a, b) for a, b in zip(baseline.images, images))
    assert baseline.manifest["images"][0]["file"] == "00.png"
    assert len(baseline.manifest["images"][0]["sha256"]) == 64


def test_interrupted_write_leaves_previous_baseline(tmp_path, monkeypatch):
    store = _store(tmp_path)
    _write(store, value=10)

    def broken_png(path, image):
        raise KeyboardInterrupt  # the user hit Ctrl-C in the middle of a regen

    monkeypatch.setattr("accelgate.quality.baselines.write_png", broken_png)
    with pytest.raises(KeyboardInterrupt):
        _write(store, value=99)
    baseline = store.read("m/eager/16x16", "m", "16x16")
    assert baseline.images[0][0, 0, 0] == 10
    leftovers = [p.name for p in (tmp_path / "baselines" / "cpu" / "m").iterdir()]
    assert leftovers == ["16x16"]


def test_swap_cut_between_renames_is_recovered(tmp_path):
    store = _store(tmp_path)
    directory, _ = _write(store, value=10)
    directory.rename(directory.parent / f".{directory.name}.old-123")  # first rename done, second not
    assert store.read("m/eager/16x16", "m", "16x16").images[0][0, 0, 0] == 10


def test_missing_baseline_gives_exact_regen_command(tmp_path):
    with pytest.raises(BaselineError) as info:
        _store(tmp_path).read("m/eager/16x16", "m", "16x16")
    assert "no baseline for m at 16x16" in str(info.value)
    assert REGEN in str(info.value)


def test_truncated_manifest_is_reported(tmp_path):
    store = _store(tmp_path)
    directory, _ = _write(store)
    text = (directory / "manifest.json").read_text()
    (directory / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BaselineError, match="corrupt or truncated"):
        store.read("m/eager/16x16", "m", "16x16")


def test_corrupt_png_is_reported(tmp_path):
    store = _store(tmp_path)
    directory, _ = _write(store)
    (directory / "01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(BaselineError, match="01.png is unreadable") as info:
        store.read("m/eager/16x16", "m", "16x16")
    assert REGEN in str(info.value)


def test_edited_png_fails_its_hash(tmp_path):
    from accelgate.quality.baselines import write_png

    store = _store(tmp_path)
    directory, _ = _write(store)
    write_png(directory / "00.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(BaselineError, match="does not match the hash"):
        store.read("m/eager/16x16", "m", "16x16")


def test_stale_fields_name_each_changed_setting(tmp_path):
    store = _store(tmp_path)
    _write(store)
    baseline = store.read("m/eager/16x16", "m", "16x16")
    prompts = [{"prompt": "p0", "seed": 0}, {"prompt": "p1", "seed": 1}]
    assert stale_fields(baseline, {"steps": 4}, prompts, "abc") == []
    problems = stale_fields(baseline, {"steps": 8}, prompts, "abc")
    assert problems == ["steps: baseline has 4, config has 8"]
    assert any(p.startswith("prompts:") for p in stale_fields(baseline, {"steps": 4}, prompts[:1], "abc"))
    weights = stale_fields(baseline, {"steps": 4}, prompts, "def")
    assert weights and "weights changed" in weights[0]


def test_manifest_is_plain_json_with_provenance(tmp_path):
    store = _store(tmp_path)
    directory, _ = _write(store)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["model_hash"] == "abc"
    assert SimpleNamespace(**manifest).settings == {"steps": 4}
