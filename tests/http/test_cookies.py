"""The ``sse_token`` cookie reader (issue 11, item 2): what ``SimpleCookie`` read on well-formed
headers, in time linear in the header whatever its shape (``SimpleCookie`` is quadratic in
backslashes on CPython 3.11.7, CVE-2024-7592)."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.cookies import SimpleCookie

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sse.http.cookies import cookie_value

NAME = "sse_token"
#: RFC 6265 token characters that SimpleCookie also takes in a name ("$" starts its
#: attributes, so it is left out).
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#%&'*+-.^_`|~"
#: RFC 6265 cookie-octets that SimpleCookie also takes in an unquoted value.
VALUE_CHARS = NAME_CHARS + "$()/:<=>?@[]{}"
#: Names SimpleCookie reads as attributes of the cookie before them, not as cookies.
RESERVED = {"expires", "path", "comment", "domain", "max-age", "secure", "httponly", "version", "samesite"}

names = st.one_of(
    st.just(NAME),
    st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda name: name.lower() not in RESERVED),
)
values = st.text(VALUE_CHARS, max_size=40)
spaces = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def cookie_headers(draw: st.DrawFn) -> str:
    """A well-formed ``Cookie`` header: ``name=value`` pairs, values quoted or not, ``;``
    between them, optional whitespace where SimpleCookie and RFC 6265 section 5.4 allow it."""
    pairs = draw(st.lists(st.tuples(names, values, st.booleans(), spaces, spaces), max_size=8))
    parts = []
    for name, value, quoted, before, after in pairs:
        shown = f'"{value}"' if quoted else value
        parts.append(f"{before}{name}{after}={after}{shown}{before}")
    return draw(st.sampled_from([";", "; ", " ; "])).join(parts)


def simple_cookie_value(header: str) -> str | None:
    jar: SimpleCookie = SimpleCookie(header)
    return jar[NAME].value if NAME in jar else None


@given(header=cookie_headers())
def test_the_reader_agrees_with_simplecookie_on_well_formed_cookie_headers(header: str) -> None:
    assert cookie_value([header], NAME) == simple_cookie_value(header)


@given(first=cookie_headers(), second=cookie_headers())
def test_cookie_fields_split_by_http2_read_as_the_one_header_they_make(first: str, second: str) -> None:
    joined = "; ".join(part for part in (first, second) if part)
    assert cookie_value([first, second], NAME) == cookie_value([joined], NAME)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("sse_token=abc.def.ghi", "abc.def.ghi"),
        ('a=1; sse_token="abc.def"; b=2', "abc.def"),
        ("sse_token=one; sse_token=two", "two"),  # the last wins, as with SimpleCookie
        ("sse_token=", ""),
        ("sse_tokens=x; xsse_token=y; sse_token", None),  # other names, and a pair without "="
        ('sse_token="\\\\\\"', "\\\\\\"),  # no backslash unescaping: a JWT has none
        ("", None),
    ],
)
def test_the_reader_on_examples(header: str, expected: str | None) -> None:
    assert cookie_value([header], NAME) == expected


#: Header shapes of a given length in characters, the hostile ones first: quoted runs of
#: backslashes (quadratic in SimpleCookie), a quote never closed, and many tiny pairs.
SHAPES: dict[str, Callable[[int], str]] = {
    "quoted backslashes": lambda n: 'sse_token="' + "\\" * ((n - 12) // 2 * 2) + '"',
    "unclosed quote with backslashes": lambda n: 'sse_token="' + "\\" * (n - 11),
    "escaped quotes": lambda n: 'sse_token="' + '\\"' * ((n - 12) // 2) + '"',
    "semicolons": lambda n: ";" * n,
    "equals signs": lambda n: "sse_token" + "=" * (n - 9),
    "many pairs": lambda n: "sse_token=a; " * (n // 13),
}


def cost_per_char(header: str) -> float:
    """Seconds per character to read ``header`` in one trial that repeats the read for at
    least 10 ms, so that short inputs are timed as precisely as long ones."""
    repeats, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < 0.01:
        cookie_value([header], NAME)
        repeats += 1
    return elapsed / repeats / len(header)


SIZES = (16 * 1024, 64 * 1024, 256 * 1024)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_reading_time_is_linear_in_the_header_length(shape: str) -> None:
    # Relative, not absolute: the cost per character of 64 and 256 KB against 16 KB.
    # Linear reading keeps it flat; a quadratic one multiplies it by 4 and 16. The bound
    # (2.5 times the per-character cost, so < 40x the time for 16x the input) leaves room
    # for a loaded machine: the sizes are timed in turn, seven rounds, and each keeps its
    # best, so all of them get the machine's quiet moments. A reader so slow that the
    # rounds overrun 5 s is judged on what was timed (a quadratic one: 8 s for 64 KB).
    headers = {size: SHAPES[shape](size) for size in SIZES}
    best = dict.fromkeys(SIZES, float("inf"))
    deadline = time.perf_counter() + 5.0
    for _ in range(7):
        for size in SIZES:
            if time.perf_counter() > deadline:
                break
            best[size] = min(best[size], cost_per_char(headers[size]))
    for size in SIZES[1:]:
        ratio = best[size] / best[SIZES[0]]
        assert ratio < 2.5, f"{shape}: {size // 1024} KB costs {ratio:.1f}x per character what 16 KB does"
