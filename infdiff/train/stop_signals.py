"""Turn ``Ctrl-C`` / ``SIGTERM`` into a request to stop at the next safe point of a training loop."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Dict, Sequence

from tqdm import tqdm


class TrainingStopped(SystemExit):
    """A run stopped early on request, after writing its checkpoint.

    Raised by the training loop so that nothing after it (a later stage, sampling) runs on a
    half-trained model.  It is a ``SystemExit`` with status 0: a command-line program ends
    cleanly, without a traceback, and re-running it resumes.  Library callers may catch it;
    :attr:`step` is the step of the checkpoint written.
    """

    def __init__(self, step: int):
        super().__init__(0)
        self.step = step


class StopWithoutCheckpoint(KeyboardInterrupt):
    """A second stop signal: the run ends at once, keeping the checkpoints already written.

    A checkpoint write it cuts short leaves nothing behind (:mod:`infdiff.io` removes the partial file).
    """


class GracefulStop:
    """While active, the first SIGINT or SIGTERM sets :attr:`requested`; a second raises
    :class:`StopWithoutCheckpoint` (a ``KeyboardInterrupt``).

    The training loop polls ``stop.requested`` after each step, writes a checkpoint and
    exits. The previous handlers are restored on exit. Signal handlers can only be
    installed from the main thread, so elsewhere this is a no-op (``requested`` stays
    ``False``). In a multi-process run each process sees its own signals: reduce the
    flag across processes before acting on it so that all of them stop at the same step.
    """

    def __init__(self, signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
        self.requested = False
        self._previous: Dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        """First signal: ask the loop to stop; any further one: interrupt at once."""
        name = signal.Signals(signum).name
        if self.requested:
            raise StopWithoutCheckpoint(f"second {name}: stopping without a checkpoint (the last one written is kept)")
        self.requested = True
        tqdm.write(
            f"{name} received: a checkpoint will be written at the end of the current step, then the run stops "
            "(send it again to stop immediately without one)",
            file=sys.stderr,
        )

    def __enter__(self) -> "GracefulStop":
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            try:
                for sig in self.signals:
                    self._previous[sig] = signal.signal(sig, self._handle)
            except BaseException:
                self._restore()
                raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def _restore(self) -> None:
        """Reinstall the handlers that were active before :meth:`__enter__`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}
