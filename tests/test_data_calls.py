"""The literal-call reader shared by the preprocessing and augmentation specs."""

import pytest

from convjax.data.calls import parse_call


def test_names_and_literal_calls_are_read():
    assert parse_call(" flip_lr ", "bad") == ("flip_lr", (), {})
    assert parse_call("resize_small(256)", "bad") == ("resize_small", (256,), {})
    assert parse_call("crop(size=(224, 224), pad=[1, 2])", "bad") == (
        "crop",
        (),
        {"size": (224, 224), "pad": [1, 2]},
    )


@pytest.mark.parametrize(
    "text", ["resize(", "a.b(1)", "f(x)", "f(__import__('os'))", "1 + 2", "f(1)(2)"]
)
def test_anything_but_a_literal_call_is_refused_with_the_callers_line(text):
    with pytest.raises(ValueError, match="^Cannot read op; valid: a, b$"):
        parse_call(text, "Cannot read op; valid: a, b")
