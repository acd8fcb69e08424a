"""Filter values spelt as the data spells them: `hamburg` selects Hamburg's customers, and
`Hamburgg` is refused with "did you mean 'Hamburg'?" instead of quietly selecting no one.

Values are matched on a key that ignores case, accents and repeated spaces. A value with no
matching key but a close one (difflib) is a likely typo: RecommendError naming the close one. A
value that resembles nothing known is kept as given and selects nothing, as before: the result's
message says that no customer matches (a valid city can have no loyalty customer yet).
"""

from __future__ import annotations

import difflib
import unicodedata
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import replace

from tastyrec.columns import BRAND, CITY
from tastyrec.recommend import Directory, Filters, RecommendError

FIELDS = ("country", "city", "brand")  # the Filters fields that hold values of the data
CUTOFF = 0.6  # similarity (difflib's ratio; its default) from which a value is taken for a typo

# Each directory's countries and cities, read once: a directory holds every customer (one scan of
# it per request would cost as much as the selection), and a reload brings a new one.
_places: weakref.WeakKeyDictionary[Directory, dict[str, list[str]]] = weakref.WeakKeyDictionary()


def key(value: str) -> str:
    """What two spellings of one value share: "  SÃO paulo " and "Sao Paulo" -> "sao paulo"."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c))
    return " ".join(plain.split()).casefold()


def match_filters(filters: Filters, known: Mapping[str, Iterable[str]]) -> Filters:
    """`filters` with each country, city and brand value in its known spelling.

    `known`: field ("country", "city", "brand") -> the values the data has. RecommendError for
    values that are close to a known value without being one, naming it; the first of several
    known values that share a key (the data's own spellings) is the one used."""
    changes, errors = {}, []
    for field in FIELDS:
        values = getattr(filters, field)
        if not values:
            continue
        spelling: dict[str, str] = {}
        for value in known.get(field, ()):
            spelling.setdefault(key(value), value)
        matched = []
        for value in values:
            k = key(value)
            if k in spelling:
                matched.append(spelling[k])
            elif close := difflib.get_close_matches(k, spelling, n=1, cutoff=CUTOFF):
                errors.append(f"unknown {field} {value!r}: did you mean {spelling[close[0]]!r}?")
            else:
                matched.append(value)
        changes[field] = tuple(dict.fromkeys(matched))  # "Hamburg" and "hamburg" are one value
    if errors:
        raise RecommendError("; ".join(errors))
    return replace(filters, **changes) if changes else filters


def known_values(directory: Directory, online) -> dict[str, list[str]]:
    """The countries and cities of the directory's customers, the brands of the features run's
    menu (`online`: features.online.OnlineFeatures): what `match_filters` takes as `known`."""
    places = _places.get(directory)
    if places is None:
        frame = directory.frame
        places = {"country": frame["country"].dropna().unique().tolist(),
                  "city": frame[CITY].dropna().unique().tolist()}
        _places[directory] = places
    return places | {"brand": online.menu[BRAND].dropna().unique().tolist()}
