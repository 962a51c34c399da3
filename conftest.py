"""Repository-wide pytest setup: the library's own plugin tests use pytester.

The accelgate plugin itself is registered through the `pytest11` entry point (see
pyproject.toml), exactly as in any other repository that installs it.
"""
pytest_plugins = ["pytester"]
