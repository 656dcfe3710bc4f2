"""chaosbench.signals: SIGTERM/SIGINT raise while a run is live, are held back during a rollback, and survive
libraries that replace the handlers."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from chaosbench import signals


def test_sigterm_and_sigint_raise_inside_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(signals.Terminated), signals.interrupts_raise():
        os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), signals.interrupts_raise():
        os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_handler_already_set_is_kept_unless_overridden():
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with signals.interrupts_raise(override=False):
            os.kill(os.getpid(), signal.SIGTERM)  # the runner's own handler stays in charge
        assert seen == [signal.SIGTERM]
        with pytest.raises(signals.Terminated), signals.interrupts_raise():
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_held_signal_arrives_after_the_rollback():
    done: list[str] = []
    with pytest.raises(signals.Terminated), signals.interrupts_raise():
        with signals.held():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("rollback ran to its end")
        done.append("not reached")
    assert done == ["rollback ran to its end"]


def test_handlers_replaced_by_a_library_are_given_back():
    with signals.interrupts_raise():
        ours = signal.getsignal(signal.SIGTERM)
        with signals.handlers_kept():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what ray.init / ansible-runner do
        assert signal.getsignal(signal.SIGTERM) is ours


def test_outside_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            with signals.interrupts_raise(), signals.handlers_kept():
                assert signal.getsignal(signal.SIGTERM) is before
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert not errors
