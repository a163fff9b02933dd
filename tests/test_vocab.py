import math

import pytest

from immunegym.data import THERAPIES, format_regimen, parse_regimen, parse_response


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("anti_pd1", ("anti_pd1",)),
        ("anti_pd1+anti_ctla4", ("anti_pd1", "anti_ctla4")),
        ("anti_ctla4+anti_pd1", ("anti_pd1", "anti_ctla4")),
        ("PD1", ("anti_pd1",)),
        ("Combo", ("anti_pd1", "anti_ctla4")),
        ("nivolumab + ipilimumab", ("anti_pd1", "anti_ctla4")),
        ("chemo+anti_pd1", ("anti_pd1", "chemo")),
        ("none", ()),
        (None, None),
        (float("nan"), None),
    ],
)
def test_parse_regimen(text, expected):
    assert parse_regimen(text) == expected


def test_unknown_therapy_message_names_field_and_value():
    with pytest.raises(ValueError,
                       match=r"therapy: got 'anti_pd1\+magic'.*'magic' is not a therapy"):
        parse_regimen("anti_pd1+magic")


def test_format_is_inverse_of_parse():
    for r in [(), ("anti_pd1",), THERAPIES]:
        assert parse_regimen(format_regimen(r)) == r


@pytest.mark.parametrize(("text", "value"), [("R", 1.0), ("NR", 0.0), ("CRPR", 1.0),
                                             ("PR", 1.0), ("SD", 0.0), ("PD", 0.0),
                                             ("non-responder", 0.0), (True, 1.0)])
def test_parse_response(text, value):
    assert parse_response(text) == value


def test_missing_and_bad_response():
    assert math.isnan(parse_response(None))
    with pytest.raises(ValueError, match="response: value 'maybe'"):
        parse_response("maybe")
