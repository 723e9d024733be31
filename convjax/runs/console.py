"""What the drivers print while they work: stage lines and progress through batches.

Drivers take ``announce: Callable[[str], None] | None`` (``print`` from the scripts,
``None`` to stay silent in notebooks and tests); these helpers speak through it::

    announce("Restored step 600 of /runs/yolo")
    for batch in counted(batches, total=12, what="eval batches", announce=announce):
        ...
    # eval batches 5/12 (42%) | 3.0 s | ETA 0:00:04
    # eval batches 12/12 (100%) | 7.1 s
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from convjax.train.loop import format_duration

Announce = Callable[[str], None]
T = TypeVar("T")


def say(announce: Announce | None, message: str) -> None:
    """``announce(message)`` unless ``announce`` is None."""
    if announce is not None:
        announce(message)


def counted(
    items: Iterable[T],
    *,
    total: int,
    what: str,
    announce: Announce | None,
    every_seconds: float = 5.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[T]:
    """Yields ``items`` and announces ``what done/total (pct) | elapsed | ETA`` at most
    every ``every_seconds`` and after the last item (the ETA from the mean time per item
    after the first, whose time includes compiling)."""
    start = last_said = clock()
    first_done = None
    done = said = 0
    for item in items:
        yield item
        done += 1
        now = clock()
        first_done = now if first_done is None else first_done
        if announce is not None and (now - last_said >= every_seconds or done == total):
            line = (
                f"{what} {done}/{total} ({100 * done / max(total, 1):.0f}%) | {now - start:.1f} s"
            )
            if 1 < done < total:
                left = (now - first_done) / (done - 1) * (total - done)
                line += f" | ETA {format_duration(left)}"
            announce(line)
            last_said, said = now, done
    if announce is not None and said != done:  # fewer (or more) items than announced
        announce(f"{what} {done} | {clock() - start:.1f} s")
