"""Ctrl-C during a run is noticed whoever handled it: Dagster swaps the handlers during a run
and may turn the interrupt into a failed step, after which a backfill worker went on to its next
range until it was killed."""

from __future__ import annotations

import os
import signal

from phlo_core.runs.progress import signals_noted


def test_a_signal_handled_by_someone_else_is_noted() -> None:
    swallowed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: swallowed.append(signum))
    try:
        with signals_noted() as received:
            os.kill(os.getpid(), signal.SIGINT)  # handled (and swallowed) by the handler above
        assert swallowed == [signal.SIGINT]
        assert signal.SIGINT in received
        with signals_noted() as quiet:
            pass
        assert quiet == set()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signal.set_wakeup_fd(-1) == -1  # put back as it was
