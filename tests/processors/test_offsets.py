"""The offset guard between Faust and the processor: a partition's hits are taken in order, and a hole
is re-read, never skipped on a timer."""
from processors.offsets import DUPLICATE, RESEEK_AFTER_S, SEEK, SKIP, TAKE, OffsetGuard


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_missing_offset_is_re_read_and_nothing_after_it_is_taken_first():
    clock = Clock()
    g = OffsetGuard(clock)
    assert [g.admit("p2", o) for o in range(21)] == [TAKE] * 21
    # 21 never came: 22 asks for a re-read from 21, the rest of the old fetch is dropped
    assert g.admit("p2", 22) == SEEK and g.expected("p2") == 21
    assert [g.admit("p2", o) for o in (23, 24)] == [SKIP, SKIP]
    # the re-read: 21 first, then everything after it exactly once
    assert [g.admit("p2", o) for o in (21, 22, 23, 24)] == [TAKE] * 4
    assert g.admit("p2", 22) == DUPLICATE
    assert g.holes_refilled == 1


def test_a_slow_re_read_is_asked_again_but_the_hole_is_never_skipped():
    clock = Clock()
    g = OffsetGuard(clock)
    g.admit("p", 9)
    assert g.admit("p", 15) == SEEK
    verdicts = []
    for _ in range(5):
        clock.now += RESEEK_AFTER_S + 0.1  # still the old fetch coming through
        verdicts += [g.admit("p", 16), g.admit("p", 17)]
    assert verdicts == [SEEK, SKIP] * 5
    assert g.expected("p") == 10 and g.admit("p", 10) == TAKE


def test_only_offsets_the_broker_no_longer_has_are_given_up():
    g = OffsetGuard(Clock())
    g.admit("p", 3)
    assert g.admit("p", 90) == SEEK
    g.moved_start("p", 50)  # retention removed 4-49
    assert g.admit("p", 90) == SEEK and g.expected("p") == 50
    assert [g.admit("p", o) for o in (50, 51)] == [TAKE, TAKE] and g.holes_gone == 1


def test_partitions_are_independent_and_start_afresh_when_revoked():
    g = OffsetGuard(Clock())
    assert g.admit("a", 0) == TAKE and g.admit("b", 0) == TAKE
    assert g.admit("b", 3) == SEEK
    g.forget(["b"])
    assert g.admit("b", 700) == TAKE and g.admit("a", 1) == TAKE


def test_a_hole_whose_re_read_was_lost_is_asked_again_on_the_timer_without_any_later_message():
    # Faust's fetch loop can swallow the re-read (its read position moved past the hole on the rest of the
    # old fetch); once the partition's last message has come, only the timer can ask again.
    clock = Clock()
    g = OffsetGuard(clock)
    g.admit("p3", 899)
    assert g.admit("p3", 1504) == SEEK
    clock.now += 1
    assert g.reseeks_due() == []
    clock.now += RESEEK_AFTER_S
    assert g.reseeks_due() == ["p3"] and g.reseeks_due() == []  # asked now: not again at once
    assert g.admit("p3", 1505) == SKIP  # the timer's seek counts: a late message does not ask a third time
    assert [g.admit("p3", o) for o in (900, 901)] == [TAKE, TAKE] and g.holes_refilled == 1
    clock.now += 10 * RESEEK_AFTER_S
    assert g.reseeks_due() == []


def test_after_an_assignment_the_first_message_must_be_the_committed_offset():
    g = OffsetGuard(Clock())
    g.starts_at("p3", 0)  # nothing committed: reading starts at the log start
    assert g.admit("p3", 899) == SEEK and g.expected("p3") == 0
    assert [g.admit("p3", o) for o in range(3)] == [TAKE] * 3
    g.forget(["p3"])
    g.starts_at("p3", 500)  # committed by the previous owner
    assert g.admit("p3", 480) == DUPLICATE  # a message of the old assignment, already stored
    assert g.admit("p3", 500) == TAKE
    g.starts_at("p3", 400)  # a late start does not move a partition already read from
    assert g.expected("p3") == 501
