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
