from __future__ import annotations

from schemas.naming import ColumnDiff, diff_columns


def test_identical_columns_are_ok():
    diff = diff_columns(["Code", "Date"], ["Code", "Date"])
    assert diff == ColumnDiff(missing=(), unexpected=(), case_only=())
    assert diff.ok
    assert diff.describe() == ""


def test_order_is_not_considered():
    assert diff_columns(["Date", "Code"], ["Code", "Date"]).ok


def test_missing_column():
    diff = diff_columns(["Code"], ["Code", "Date"])
    assert not diff.ok
    assert diff.missing == ("Date",)
    assert diff.unexpected == ()
    assert diff.describe() == "missing ['Date']"


def test_unexpected_column():
    diff = diff_columns(["Code", "Date", "Extra"], ["Code", "Date"])
    assert not diff.ok
    assert diff.unexpected == ("Extra",)
    assert diff.describe() == "unexpected ['Extra']"


def test_case_only_difference_is_described_as_such():
    diff = diff_columns(["code", "Date"], ["Code", "Date"])
    assert not diff.ok
    assert diff.missing == ("Code",)
    assert diff.unexpected == ("code",)
    assert diff.case_only == (("Code", "code"),)
    # Named once, as a case difference, not also as missing and unexpected.
    assert diff.describe() == "'code' found where 'Code' was expected (names are case-sensitive)"


def test_case_only_together_with_missing_and_unexpected():
    diff = diff_columns(["code", "Date", "X"], ["Code", "Date", "Open"])
    assert diff.describe() == (
        "'code' found where 'Code' was expected (names are case-sensitive); missing ['Open']; unexpected ['X']"
    )


def test_comparison_is_exact_not_folded():
    # Same letters in a different case are never treated as a match.
    diff = diff_columns(["CLOSE"], ["Close"])
    assert not diff.ok
    assert diff.case_only == (("Close", "CLOSE"),)
