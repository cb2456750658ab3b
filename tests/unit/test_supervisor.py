"""The run command's restart policy: a crash loop slows down, a service that ran a while is restarted at once."""

from tools.supervisor import Backoff, describe_exit


def test_restart_delays_double_up_to_the_cap_and_reset_after_a_stable_run():
    backoff = Backoff(first=1, cap=30, stable=30)
    assert [backoff.next_delay(ran_for=0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next_delay(ran_for=45) == 1  # it ran long enough: this crash is not part of a loop
    assert backoff.next_delay(ran_for=2) == 2


def test_exits_are_named_with_their_signal():
    assert describe_exit(1) == "code 1"
    assert describe_exit(-9) == "code -9 (SIGKILL)"
