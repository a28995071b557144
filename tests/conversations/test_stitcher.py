"""Putting a reply's text back together from frames that cross processes (replies.fanout.Stitcher)."""

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from conversations.replies.fanout import Stitcher

TEXT = "The quick brown fox jumps over the lazy dog."


def pieces(*cuts: int) -> list[tuple[int, str]]:
    """TEXT cut at these offsets, as (start, piece) frames."""
    bounds = [0, *cuts, len(TEXT)]
    return [(start, TEXT[start:end]) for start, end in pairwise(bounds)]


def test_frames_in_order_make_the_text():
    stitcher = Stitcher()

    added = [stitcher.add(start, piece) for start, piece in pieces(4, 10, 20)]

    assert added == ["The ", "quick ", "brown fox ", "jumps over the lazy dog."]
    assert stitcher.text == TEXT
    assert not stitcher.has_gap


def test_frames_out_of_order_wait_for_the_text_before_them():
    stitcher = Stitcher()
    first, second, third = pieces(4, 10)

    assert stitcher.add(*third) == ""
    assert stitcher.add(*second) == ""
    assert stitcher.has_gap
    assert stitcher.add(*first) == TEXT
    assert stitcher.text == TEXT
    assert not stitcher.has_gap


def test_a_frame_that_comes_twice_adds_nothing_the_second_time():
    stitcher = Stitcher()
    first, second = pieces(10)

    stitcher.add(*first)
    stitcher.add(*second)

    assert stitcher.add(*first) == ""
    assert stitcher.add(*second) == ""
    assert stitcher.text == TEXT


def test_overlapping_frames_add_only_what_is_new():
    stitcher = Stitcher()

    stitcher.add(0, TEXT[:10])
    assert stitcher.add(4, TEXT[4:16]) == TEXT[10:16]
    assert stitcher.add(2, TEXT[2:12]) == ""
    assert stitcher.text == TEXT[:16]


def test_a_frame_before_the_snapshot_is_kept_until_the_snapshot_comes():
    """A watching process may hear a frame before the text so far it asked for."""
    stitcher = Stitcher()

    assert stitcher.add(20, TEXT[20:30]) == ""
    assert stitcher.add(0, TEXT[:20]) == TEXT[:30]  # the snapshot, then the frame that overtook it
    assert stitcher.add(30, TEXT[30:]) == TEXT[30:]
    assert stitcher.text == TEXT


def test_a_gap_is_filled_later_by_a_snapshot_that_covers_it():
    """A frame lost on the way: a new snapshot (the text so far) fills the gap and joins what came after."""
    stitcher = Stitcher()
    stitcher.add(0, TEXT[:5])
    stitcher.add(12, TEXT[12:20])  # the frame 5..12 went missing
    assert stitcher.text == TEXT[:5]
    assert stitcher.has_gap

    assert stitcher.add(0, TEXT[:15]) == TEXT[5:20]
    assert not stitcher.has_gap


def test_an_empty_snapshot_is_harmless():
    stitcher = Stitcher()

    assert stitcher.add(0, "") == ""
    assert stitcher.text == ""
    assert not stitcher.has_gap


@st.composite
def frames_of_a_text(draw):
    """A text, the frames it is sent in (any cuts, some repeated as snapshots would be), in any order."""
    text = draw(st.text(min_size=0, max_size=200))
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(1, len(text) - 1)), max_size=20)))
    bounds = [0, *[cut for cut in cuts if cut < len(text)], len(text)]
    frames = [(start, text[start:end]) for start, end in pairwise(bounds)]
    # Snapshots: the text from the start up to some frame's end, as a process asking again gets.
    snapshots = draw(st.lists(st.sampled_from(bounds), max_size=3))
    frames += [(0, text[:end]) for end in snapshots]
    return text, draw(st.permutations(frames))


@given(frames_of_a_text())
def test_whatever_the_order_the_text_is_a_prefix_and_whole_once_every_frame_arrived(case):
    text, frames = case
    stitcher = Stitcher()
    delivered = ""

    for start, piece in frames:
        delivered += stitcher.add(start, piece)
        assert text.startswith(stitcher.text)
        assert delivered == stitcher.text  # nothing repeated, nothing skipped

    assert stitcher.text == text
    assert not stitcher.has_gap
