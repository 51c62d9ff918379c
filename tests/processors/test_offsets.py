"""The offset guard between Faust and the processor: a partition's hits are taken in order, a hole is
re-read instead of skipped, and only a hole that survives several re-reads is accepted."""
from processors.offsets import DUPLICATE, MAX_RESEEKS, RESEEK_AFTER_S, SEEK, SKIP, TAKE, OffsetGuard


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_missing_offset_is_re_read_and_nothing_after_it_is_taken_first():
    clock = Clock()
    g = OffsetGuard(clock)
    g.start_at({"p2": 0})
    assert [g.admit("p2", o) for o in range(21)] == [TAKE] * 21
    # 21 never came: 22 asks for a re-read from 21, the rest of the old fetch is dropped
    assert g.admit("p2", 22) == SEEK and g.expected("p2") == 21
    assert [g.admit("p2", o) for o in (23, 24)] == [SKIP, SKIP]
    # the re-read: 21 first, then everything after it exactly once
    assert [g.admit("p2", o) for o in (21, 22, 23, 24)] == [TAKE] * 4
    assert g.admit("p2", 22) == DUPLICATE
    assert g.holes_refilled == 1 and g.holes_accepted == 0


def test_the_first_message_after_an_assignment_must_be_the_committed_offset():
    g = OffsetGuard(Clock())
    g.start_at({"p0": 500, "p1": None})
    assert g.admit("p0", 501) == SEEK
    assert g.admit("p1", 7) == TAKE  # start unknown: the first one is taken as it comes
    g.start_at({"p0": 501})          # reassigned after a commit of 501
    assert g.admit("p0", 501) == TAKE


def test_a_hole_that_stays_after_several_re_reads_is_accepted_once():
    clock = Clock()
    g = OffsetGuard(clock)
    g.start_at({"p": 10})
    verdicts = [g.admit("p", 15)]
    for _ in range(MAX_RESEEKS):
        clock.now += RESEEK_AFTER_S + 0.1  # each re-read starts past the hole again
        verdicts.append(g.admit("p", 15))
    assert verdicts == [SEEK] * MAX_RESEEKS + [TAKE]
    assert g.expected("p") == 16 and g.holes_accepted == 1
    assert g.admit("p", 16) == TAKE


def test_partitions_are_independent_and_forgotten_when_revoked():
    g = OffsetGuard(Clock())
    g.start_at({"a": 0, "b": 0})
    assert g.admit("a", 0) == TAKE and g.admit("b", 3) == SEEK
    g.forget(["b"])
    assert g.admit("b", 3) == TAKE and g.admit("a", 1) == TAKE
