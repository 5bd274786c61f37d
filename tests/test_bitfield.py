"""Bitfield against a plain set of ints, and its wire/page layout."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperfs.tree.bitfield import PAGE_BITS, PAGE_BYTES, Bitfield

ops = st.lists(
    st.tuples(st.sampled_from(["add", "discard", "range"]), st.integers(0, 3 * PAGE_BITS),
              st.integers(0, 70)),
    max_size=60,
)


@given(ops)
def test_matches_a_set(operations: list[tuple[str, int, int]]) -> None:
    field, ref = Bitfield(), set()
    for op, index, span in operations:
        if op == "add":
            assert field.add(index) == (index not in ref)
            ref.add(index)
        elif op == "discard":
            assert field.discard(index) == (index in ref)
            ref.discard(index)
        else:
            new = set(range(index, index + span)) - ref
            assert field.add_range(index, index + span) == len(new)
            ref |= new
        assert field.count == len(ref)
    for index in range(0, 3 * PAGE_BITS + 80, 7):
        assert (index in field) == (index in ref)
    assert list(field.iter_set()) == sorted(ref)
    assert list(field.iter_set(100, 200)) == sorted(i for i in ref if 100 <= i < 200)
    missing = next((i for i in range(50, 400) if i not in ref), None)
    assert field.first_missing(50, 400) == missing
    copy = Bitfield(field.to_bytes())
    assert copy.count == field.count and list(copy.iter_set()) == sorted(ref)
    paged = Bitfield()
    for page in range(4):
        paged.load_page(page, field.page(page))
    assert list(paged.iter_set()) == sorted(ref) and paged.count == len(ref)


def test_wire_layout_most_significant_bit_first() -> None:
    field = Bitfield()
    field.add(0)
    field.add(9)
    assert field.to_bytes() == bytes([0x80, 0x40])
    assert field.page(0) == bytes([0x80, 0x40]).ljust(PAGE_BYTES, b"\0")
    assert len(field.page(5)) == PAGE_BYTES


def test_load_page_replaces_and_recounts() -> None:
    field = Bitfield()
    field.add_range(0, 20)
    field.load_page(0, bytes([0x01]).ljust(PAGE_BYTES, b"\0"))
    assert field.count == 1 and 7 in field and 0 not in field
