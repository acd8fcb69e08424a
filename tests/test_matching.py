"""Filter values matched to the data's spellings (tastyrec.matching), on a few known values."""

from __future__ import annotations

import pandas as pd
import pytest

from tastyrec.matching import known_values, match_filters
from tastyrec.recommend import Directory, Filters, RecommendError

KNOWN = {"country": ["Germany", "Australia", "Brazil"], "city": ["Hamburg", "Berlin", "Sao Paulo"],
         "brand": ["Freezing Point", "Smoky BBQ", "Le Coin des Crepes"]}


def test_case_accents_and_spaces_give_the_known_spelling() -> None:
    asked = Filters(country=("germany", "BRAZIL"), city=("hamburg", "  SÃO   paulo ", "Hamburg"),
                    brand=("le coin des crêpes",), items_not_ordered=True)
    assert match_filters(asked, KNOWN) == Filters(country=("Germany", "Brazil"), city=("Hamburg", "Sao Paulo"),
                                                  brand=("Le Coin des Crepes",), items_not_ordered=True)


def test_a_value_close_to_a_known_one_is_an_error_naming_it() -> None:
    with pytest.raises(RecommendError) as e:
        match_filters(Filters(country=("Germany", "Austria"), city=("Hamburgg",), brand=("freezing pint",)), KNOWN)
    assert str(e.value) == ("unknown country 'Austria': did you mean 'Australia'?; "
                            "unknown city 'Hamburgg': did you mean 'Hamburg'?; "
                            "unknown brand 'freezing pint': did you mean 'Freezing Point'?")


def test_a_value_like_none_is_kept_and_selects_nothing() -> None:
    """Not a typo of a known value: the engine's empty selection says that no customer matches."""
    asked = Filters(city=("Atlantis", "x' OR '1'='1"), brand=("No Such Brand",))
    assert match_filters(asked, KNOWN) == asked
    assert match_filters(Filters(), {}) == Filters()


def test_known_values_come_from_the_directory_and_the_menu() -> None:
    directory = Directory(pd.DataFrame({"customer_id": [1, 2, 3], "city": ["Hamburg", "Berlin", None],
                                        "country": ["Germany", "Germany", None]}))

    class Online:  # features.online.OnlineFeatures' menu: one row per item
        menu = pd.DataFrame({"truck_brand_name": ["Smoky BBQ", "Smoky BBQ", None]})

    assert known_values(directory, Online()) == {"country": ["Germany"], "city": ["Hamburg", "Berlin"],
                                                 "brand": ["Smoky BBQ"]}
