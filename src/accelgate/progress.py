"""Per-step progress of the running case, on an interactive terminal only.

A real-model case runs for minutes (SDXL at 1024 px, 50 steps, several prompts, on every
backend) with nothing on the screen but pytest's test id. Progress says the run is alive and
where it is: ` tiny-sd/bf16/64x64: image 1/2, step 3/5`, written after pytest's own text on
the current line and rewritten in place (ANSI save / restore cursor, erase to end of line),
then erased when the case's images are done, so pytest's dots and PASSED land where they
would have. Nothing is written when the output is not a terminal, when `CI` is set (CI logs
keep every byte: a carriage-return animation there is thousands of lines of noise), or when
TERM is "dumb" (no cursor control).

No pytest import: the pytest side hands in how to write (the real terminal stream, with
pytest's capture suspended around each write) and how wide the current line is.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager

SAVE, RESTORE, ERASE_TO_END = "\x1b7", "\x1b8", "\x1b[K"


def wanted(isatty: bool, environ: dict[str, str] | None = None) -> bool:
    """Progress only for a person at an interactive terminal: a tty, not CI, a TERM with cursor control."""
    environ = os.environ if environ is None else environ
    ci = environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return isatty and not ci and environ.get("TERM", "") != "dumb"


class TerminalProgress:
    """`progress(case_id, image, images, step, steps)` per denoising step; `clear()` after a case."""

    def __init__(self, write: Callable[[str], None], suspend: Callable[[], AbstractContextManager],
                 room: Callable[[], int]):
        self._write = write  # writes and flushes the real terminal stream
        self._suspend = suspend  # a context in which pytest's output capture is off
        self._room = room  # columns left on the current line
        self._shown = False

    def __call__(self, case_id: str, image: int, images: int, step: int, steps: int) -> None:
        text = f" {case_id}: image {image + 1}/{images}, step {step}/{steps}"
        room = self._room() - 1
        if room < 12:  # the line is full: a wrapped line would move the saved cursor
            return
        if len(text) > room:
            text = text[:room - 3] + "..."
        self._emit(SAVE + text + ERASE_TO_END + RESTORE)
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._emit(ERASE_TO_END)
            self._shown = False

    def _emit(self, text: str) -> None:
        with self._suspend():
            self._write(text)
