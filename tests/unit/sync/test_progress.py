"""The terminal progress line: drawn in place, ends on the last step, wiped when the work ends."""

from __future__ import annotations

import io

import pytest

from opswatch.sync.progress import CLEAR_LINE, progress_bar, terminal_line


def test_terminal_line_draws_the_last_step_and_wipes_itself() -> None:
    stream = io.StringIO()
    with terminal_line("syncing", stream) as advance:
        for done in range(1, 51):
            advance(done, 50)
    text = stream.getvalue()
    assert f"{CLEAR_LINE}syncing [" in text
    assert text.rstrip(CLEAR_LINE).endswith("] 50/50")
    assert "#" * 30 + "]" in text  # the bar is full on the last step
    assert text.endswith(CLEAR_LINE)  # nothing stays behind on the terminal


def test_terminal_line_is_wiped_when_the_work_fails() -> None:
    stream = io.StringIO()
    try:
        with terminal_line("verifying", stream) as advance:
            advance(1, 40)
            raise RuntimeError("cut")
    except RuntimeError:
        pass
    assert stream.getvalue().endswith(CLEAR_LINE)


def test_small_jobs_show_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("syncing", 5) as advance:
        advance(5, 5)
    assert capsys.readouterr().err == ""
