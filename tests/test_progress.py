"""The progress bar's count, rate and ETA, including for a resumed job."""

from __future__ import annotations

import io
import re
import time

from streamtrack.progress import Progress


def rates(text: str) -> list[float]:
    return [float(r) for r in re.findall(r"([0-9.]+)/s", text)]


def test_a_resumed_bar_counts_done_items_but_not_in_its_rate():
    out = io.StringIO()
    with Progress("training", 1000, stream=out, done=900) as bar:
        time.sleep(0.2)
        bar.update()
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith(f"training [{'#' * 27}   ] 901/1000")
    # 1 item in >= 0.2 s: at most 5 per second (900 would be counted as thousands per second).
    assert 0 < rates(lines[-1])[0] <= 5.0


def test_the_eta_is_unknown_until_an_item_is_done():
    out = io.StringIO()
    Progress("evaluating", 10, stream=out)._draw()
    assert out.getvalue().strip().endswith("0/10 0.0/s eta ?")
