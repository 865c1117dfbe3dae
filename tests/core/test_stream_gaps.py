"""The Redis reader's gap check, sans-IO: never silent about a skipped entry, exact when it can be."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_sse.core.stream_gaps import lost_in_restart, missed_before_read


def test_a_position_still_stored_after_the_read_proves_nothing_was_trimmed_before_it() -> None:
    assert not missed_before_read(was_stored=True, still_stored=True, trimmed_then=0, trimmed_now=None)


def test_a_position_that_was_stored_and_is_gone_is_a_gap() -> None:
    # Trimmed (the reader is a whole MAXLEN behind) or lost by Redis: the entries right
    # after it may be gone too, and nothing tells which.
    assert missed_before_read(was_stored=True, still_stored=False, trimmed_then=0, trimmed_now=None)


def test_a_floor_is_judged_by_what_the_stream_trimmed_since_it_was_taken() -> None:
    assert not missed_before_read(was_stored=False, still_stored=False, trimmed_then=7, trimmed_now=7)
    assert missed_before_read(was_stored=False, still_stored=False, trimmed_then=7, trimmed_now=8)
    # Redis before 7 cannot say (no entries-added): assume the worst.
    assert missed_before_read(was_stored=False, still_stored=False, trimmed_then=0, trimmed_now=None)


def test_a_stream_back_older_than_an_entry_read_or_missing_lost_entries() -> None:
    position = (1000, 5)
    assert lost_in_restart(position, was_stored=True, last_generated=None)  # came back empty
    assert lost_in_restart(position, was_stored=True, last_generated=(1000, 4))  # from an older AOF
    assert not lost_in_restart(position, was_stored=True, last_generated=(1000, 5))  # all there
    assert not lost_in_restart(position, was_stored=True, last_generated=(2000, 0))
    assert not lost_in_restart(position, was_stored=False, last_generated=None)  # a floor loses nothing


# A model of the stream: entries 1, 2, 3, ... (ids in order); a trim removes a prefix.
# Steps: ("add", k) appends k entries; ("trim", keep) keeps the newest `keep`; ("read",
# late) is one reader round: XREAD from the position, then `late` more entries are added
# and trimmed to one node (what other publishers do between the XREAD and the check),
# then the check. The check must report every entry removed before the XREAD that the
# reader was owed, and nothing when its position survived.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 50)),
        st.tuples(st.just("trim"), st.integers(1, 60)),
        st.tuples(st.just("read"), st.integers(0, 80)),
    ),
    max_size=40,
)


@given(steps, st.booleans())
def test_the_check_reports_every_entry_trimmed_before_the_reader_read_it(script, start_on_entry) -> None:
    stream: list[int] = []
    added = 0

    def add(count: int) -> None:
        nonlocal added
        stream.extend(range(added + 1, added + count + 1))
        added += count

    def trim(keep: int) -> None:
        del stream[: max(0, len(stream) - keep)]

    if start_on_entry:
        add(3)  # the instance starts on the newest entry older than itself
        position, was_stored, trimmed_then = stream[-1], True, 0
    else:
        position, was_stored, trimmed_then = 0, False, 0  # a floor: nothing older stored
    for step, value in script:
        if step == "add":
            add(value)
        elif step == "trim":
            trim(value)
        else:
            reply = [entry for entry in stream if entry > position]
            if not reply:
                continue
            skipped = reply[0] - position - 1  # entries between the position and the reply
            add(value)
            trim(20 if value else len(stream))
            gap = missed_before_read(
                was_stored=was_stored,
                still_stored=position in stream,
                trimmed_then=trimmed_then,
                trimmed_now=added - len(stream),
            )
            if skipped:
                assert gap, (position, reply[0])
            if was_stored and position in stream:
                assert not gap
            position, was_stored = reply[-1], True
