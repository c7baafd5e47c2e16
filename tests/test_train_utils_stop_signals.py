import os
import signal
import threading

import pytest

from infdiff.train.stop_signals import GracefulStop, StopWithoutCheckpoint


def _send(signum):
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_sets_the_flag_and_prints(signum, capsys):
    with GracefulStop() as stop:
        assert not stop.requested
        _send(signum)
        assert stop.requested
    assert "checkpoint will be written" in capsys.readouterr().err


def test_second_signal_interrupts():
    with pytest.raises(StopWithoutCheckpoint, match="second SIGTERM: stopping without a checkpoint"):
        with GracefulStop():
            _send(signal.SIGTERM)
            _send(signal.SIGTERM)


def test_handlers_are_restored_on_exit():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with GracefulStop():
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_handlers_are_restored_after_an_exception():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError):
        with GracefulStop():
            raise RuntimeError
    assert signal.getsignal(signal.SIGTERM) == before


def test_no_op_off_the_main_thread():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def run():
        with GracefulStop() as stop:
            seen.append(signal.getsignal(signal.SIGTERM))
            seen.append(stop.requested)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before, False]


def test_a_signal_that_cannot_be_caught_fails_without_leaking_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises((OSError, ValueError)):
        with GracefulStop(signals=(signal.SIGTERM, signal.SIGKILL)):
            pass
    assert signal.getsignal(signal.SIGTERM) == before
