"""CSV export neutralises spreadsheet formulas (SPEC §6, README): no exported
cell starts with =, +, -, @, a tab or a carriage return, and import gives the
text back unchanged, whatever the text (hypothesis)."""

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from directory.csv_format import _unneutralise, neutralise

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CELLS = st.one_of(
    st.text(),
    st.builds("".join, st.lists(st.sampled_from(["'", *FORMULA_START, "1", "A", ";", '"']))),
)


@settings(max_examples=2000, deadline=None)
@given(CELLS)
def test_no_exported_cell_can_start_a_formula_and_import_gives_it_back(text):
    cell = neutralise(text)
    assert not cell.startswith(FORMULA_START)
    assert _unneutralise(cell) == text


@settings(max_examples=500, deadline=None)
@given(st.lists(CELLS, min_size=1, max_size=7))
def test_through_a_csv_file_too(row):
    out = io.StringIO()
    csv.writer(out).writerow([neutralise(cell) for cell in row])
    (read,) = csv.reader(io.StringIO(out.getvalue(), newline=""))
    assert not any(cell.startswith(FORMULA_START) for cell in read)
    assert [_unneutralise(cell) for cell in read] == row
