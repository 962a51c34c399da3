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
    # issue 9: a swap is identified by its journal, written before the first rename
    (directory.parent / f".{directory.name}.swap").write_text(json.dumps(
        {"new": f".{directory.name}.new-123", "old": f".{directory.name}.old-123"}))
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


# ------------------------------------------------------------------------- issue 9: the store's edges
def _case_dir(tmp_path):
    return tmp_path / "baselines" / "cpu" / "m" / "16x16"


def test_an_old_copy_is_never_resurrected_once_a_newer_state_exists(tmp_path):
    store = _store(tmp_path)
    directory, _ = _write(store, value=10)
    stale = directory.parent / ".16x16.old-999"  # left by a run killed after its swap, no journal
    stale.mkdir()
    (stale / "manifest.json").write_text(directory.joinpath("manifest.json").read_text())
    for png in directory.glob("*.png"):
        (stale / png.name).write_bytes(png.read_bytes())
    import shutil
    shutil.rmtree(directory)  # the user deleted the baseline on purpose
    with pytest.raises(BaselineError, match="no baseline for m at 16x16") as info:
        store.read("m/eager/16x16", "m", "16x16")
    assert REGEN in str(info.value)
    assert not directory.exists() and not stale.exists()  # not restored, and the leftover is cleaned


def test_leftovers_of_killed_writers_are_cleaned_and_the_baseline_kept(tmp_path):
    store = _store(tmp_path)
    directory, _ = _write(store, value=10)
    for name in (".16x16.new-1-abc", ".16x16.old-2-def"):
        (directory.parent / name).mkdir()
        (directory.parent / name / "00.png").write_bytes(b"half")
    assert store.read("m/eager/16x16", "m", "16x16").images[0][0, 0, 0] == 10
    assert sorted(p.name for p in directory.parent.iterdir()) == ["16x16"]


def test_a_half_done_swap_rolls_forward_to_the_complete_new_baseline(tmp_path):
    store = _store(tmp_path)
    directory, _ = _write(store, value=10)
    new = directory.parent / ".16x16.new-7-abc"
    new_store = BaselineStore(tmp_path / "other", "cpu", regen_command=lambda case_id: REGEN)
    written, _ = _write(new_store, value=50)
    written.rename(new)
    (directory.parent / ".16x16.swap").write_text(json.dumps({"new": new.name, "old": ".16x16.old-7-abc"}))
    directory.rename(directory.parent / ".16x16.old-7-abc")  # cut between the two renames
    assert store.read("m/eager/16x16", "m", "16x16").images[0][0, 0, 0] == 50
    assert sorted(p.name for p in directory.parent.iterdir()) == ["16x16"]


def test_concurrent_writers_take_turns_and_readers_never_see_a_swap(tmp_path):
    import threading

    store = _store(tmp_path)
    _write(store, value=0)
    errors, seen = [], []

    def writer(value):
        try:
            for _ in range(4):
                _write(store, value=value)
        except Exception as error:  # noqa: BLE001 (collected: there must be none)
            errors.append(error)

    def reader():
        try:
            for _ in range(12):
                seen.append(int(store.read("m/eager/16x16", "m", "16x16").images[0][0, 0, 0]))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (10, 20)] + [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors  # the landed code raised ENOTEMPTY here
    assert set(seen) <= {0, 10, 20} and len(seen) == 12
    assert sorted(p.name for p in _case_dir(tmp_path).parent.iterdir()) == ["16x16"]


def test_a_symlinked_case_directory_is_kept_and_written_through(tmp_path):
    store = _store(tmp_path)
    elsewhere = tmp_path / "big-disk" / "16x16"
    elsewhere.mkdir(parents=True)
    link = _case_dir(tmp_path)
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    _write(store, value=30)
    assert link.is_symlink() and link.resolve() == elsewhere.resolve()
    assert (elsewhere / "manifest.json").is_file()
    assert store.read("m/eager/16x16", "m", "16x16").images[0][0, 0, 0] == 30
    import shutil
    shutil.rmtree(elsewhere)  # now dangling: refused, not replaced by a directory
    with pytest.raises(BaselineError, match="is a symlink to .* which is not a directory.*will not replace the link"):
        _write(store, value=40)
    assert link.is_symlink()


def test_files_and_folders_get_the_normal_modes(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        directory, _ = _write(_store(tmp_path))
    finally:
        os.umask(umask)
    assert directory.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in directory.iterdir()} == {0o644}


@pytest.mark.parametrize("field, value, message", [
    ("settings", ["steps", 4], "'settings' must be a dict, got list"),
    ("model_hash", 123, "'model_hash' must be a str, got int"),
    ("images", {"0": "x"}, "'images' must be a list"),
    ("resolution", [16, "16"], "'resolution' must be \\[width, height\\]"),
])
def test_every_manifest_field_is_type_checked(tmp_path, field, value, message):
    store = _store(tmp_path)
    directory, _ = _write(store)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest[field] = value
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BaselineError, match=message) as info:
        store.read("m/eager/16x16", "m", "16x16")
    assert str(directory / "manifest.json") in str(info.value) and REGEN in str(info.value)


def test_an_image_without_its_hash_is_a_failure_not_drift(tmp_path):
    from accelgate.quality.baselines import write_png

    store = _store(tmp_path)
    directory, _ = _write(store)
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["images"][0]["sha256"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    write_png(directory / "00.png", np.zeros((16, 16, 3), np.uint8))  # edited, and no hash to catch it
    with pytest.raises(BaselineError, match="image entry #0 has no 'sha256' .*cannot be told apart from an edited"):
        store.read("m/eager/16x16", "m", "16x16")
