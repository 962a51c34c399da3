"""Release hygiene (issue 12, item 7): the changelog's newest version is the package's, and the
data licence note names the licence pyproject.toml declares (or says that there is none)."""
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_changelogs_newest_version_is_the_packages():
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    released = [v for v in versions if v != "Unreleased"]
    assert released and released[0] == PROJECT["version"], (
        f"pyproject.toml says {PROJECT['version']}, CHANGELOG.md's newest version is {released[:1]}: "
        "add the version's section to CHANGELOG.md")
    for heading in ("### Added", "### Changed", "### Fixed"):
        assert heading in changelog


def test_the_data_licence_note_names_the_projects_licence():
    note = (REPO / "DATA-LICENSE.md").read_text(encoding="utf-8")
    assert "baselines/cpu/" in note and "examples/my-project/baselines/cpu/" in note
    declared = PROJECT.get("license")
    if declared is None:
        assert "declares no licence" in note and not (REPO / "LICENSE").exists()
    else:
        name = declared if isinstance(declared, str) else declared.get("text") or declared.get("file")
        assert name in note, f"pyproject.toml declares {name!r}: name it in DATA-LICENSE.md"
