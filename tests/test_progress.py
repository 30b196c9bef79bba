"""Progress lines: a line each N% off a terminal, the runner's progress file, tqdm on a terminal."""

import io
import sys

from aresnb import progress
from aresnb.progress import PROGRESS_FILE_ENV, Progress, say


def test_a_line_each_quarter_and_the_last_item_always():
    lines = []
    bar = Progress(150, "baseline SFT", unit="steps", every_percent=25, emit=lines.append)
    for step in range(1, 151):
        bar.update(1, loss=1.0 / step)
    assert [line.split(":")[1].split()[0] for line in lines] == ["38/150", "75/150", "113/150", "150/150"]
    assert lines[-1] == "baseline SFT: 150/150 steps (100%) loss 0.007"


def test_jumps_report_once_and_a_resumed_loop_starts_where_it_was():
    lines = []
    bar = Progress(8, "sampling", initial=4, every_percent=25, emit=lines.append)
    bar.callback()(8, 8)  # the Teacher client reports (done, total) as replies arrive
    assert lines == ["sampling: 8/8 (100%)"]
    silent = Progress(10, "off", enabled=False, emit=lines.append)
    silent.update(10)
    assert len(lines) == 1


def test_say_appends_to_the_runners_file(tmp_path, monkeypatch, capsys):
    f = tmp_path / "progress.log"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(f))
    say("first\nline")
    say("second")
    assert f.read_text() == "first line\nsecond\n"
    assert capsys.readouterr().out == "first\nline\nsecond\n"  # the notebook keeps them too


def test_a_terminal_gets_a_tqdm_bar_and_no_lines(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    lines = []
    bar = Progress(4, "loop", emit=lines.append)
    for _ in range(4):
        bar.update(1)
    bar.close()
    assert lines == [] and bar._bar is None


def test_configure_sets_the_default_share(monkeypatch):
    monkeypatch.setattr(progress, "_every_percent", progress.DEFAULT_EVERY_PERCENT)
    progress.configure(50)
    lines = []
    bar = Progress(4, "x", emit=lines.append)
    for _ in range(4):
        bar.update(1)
    assert lines == ["x: 2/4 (50%)", "x: 4/4 (100%)"]
