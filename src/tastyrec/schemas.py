"""The REST service's request and response bodies (the schema /docs shows) and its limits.

Kept apart from service.py so the routes read as routes; pydantic models, no logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from tastyrec.columns import DENSE, MULTI_HOT, SPARSE
from tastyrec.recommend import DEFAULT_TOP_K, MAX_TOP_K

MAX_FILTER_VALUES = 100  # values per filter (there are 15 countries, 30 cities, 15 brands)
CUSTOMER_ID_RANGE = {"ge": 0, "le": 2**63 - 1}  # int64: larger ids are malformed, not unknown


@dataclass(frozen=True)
class Limits:
    """How much one request may ask for (the documented defaults; tests shrink them), and how
    many requests one worker lets into the engine at once."""

    customer_ids: int = 1_000  # ids per /recommendations request; more -> 413
    filter_customers: int = 1_000  # customers served per filter selection; more -> truncated
    score_rows: int = 10_000  # rows per /score request; more -> 413
    # Bytes per request body; more -> 413 before the body is read (a few MB at most: each request
    # in flight holds its body, and parsing takes ~6x that). A /score row is ~1 KB of JSON: 10,000
    # candidate rows of the test workspace took 9.7 MiB, its 10,000 largest 10.4 MiB (33 items
    # bought). A row listing all 58 menu items is 2 KB: 10,000 such rows (19.5 MiB) must be split.
    score_bytes: int = 12 * 2**20
    recommendations_bytes: int = 2**20  # 1,000 ids of 19 digits + full filters take ~30 KB
    body_bytes: int = 16 * 2**10  # any other route: none reads a body
    # Seconds for a request's body to arrive once its headers have (more -> 408, connection closed):
    # a client that sends it slowly, or never, holds a task and a connection. 12 MiB in 30 s
    # needs 0.4 MB/s.
    body_seconds: float = 30.0
    # The engine's work is mostly Python holding the GIL: 16 requests let in together took turns
    # with it at 0.7x the throughput of 2 at a time (bench/serve.py's load, 2 cores). Two, not one,
    # so that a large filter selection does not hold up every small request. Scale with --workers.
    engine_concurrency: int = 2


LIMITS = Limits()


# ---- request and response bodies (the schema /docs shows) ---------------------------------------
class FiltersBody(BaseModel):
    """Several values of one filter are OR, different filters AND; empty = no restriction. Values
    are matched ignoring case and accents ("hamburg" is Hamburg; the response names them as the
    data spells them); a value close to a known one but not it ("Hamburgg") is a 422 that names
    the known one; a value like none selects nothing."""

    model_config = ConfigDict(extra="forbid")
    country: list[str] = Field(default=[], max_length=MAX_FILTER_VALUES, description="customers of these countries")
    city: list[str] = Field(default=[], max_length=MAX_FILTER_VALUES, description="customers of these cities")
    brand: list[str] = Field(default=[], max_length=MAX_FILTER_VALUES, description="only items of these truck brands")
    trucks_not_visited: bool = Field(False, description="only items of brands the customer never bought from")
    items_not_ordered: bool = Field(False, description="only items the customer never bought")


class RecommendRequest(BaseModel):
    """Exactly one of `customer_ids` and `filters`."""

    model_config = ConfigDict(extra="forbid")
    customer_ids: list[Annotated[int, Field(**CUSTOMER_ID_RANGE)]] | None = Field(
        None, min_length=1, description=f"at most {LIMITS.customer_ids:,} ids (413 above); unknown ids are listed "
                                        "in unknown_customers (404 when none is known)")
    filters: FiltersBody | None = Field(
        None, description=f"a selection of more than {LIMITS.filter_customers:,} customers is served for the "
                          "first ones by id, with truncated: true")
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K, description="items per customer")

    @model_validator(mode="after")
    def one_selection(self) -> "RecommendRequest":
        if (self.customer_ids is None) == (self.filters is None):
            raise ValueError("give exactly one of customer_ids and filters")
        return self


class ModelRef(BaseModel):
    name: str
    version: int
    alias: str | None
    label_days: int = Field(description="the label window: a score is the chance of a purchase within these days")


class HistoryEntry(BaseModel):
    menu_item_name: str
    orders: int
    last_purchase: str = Field(description="ISO date")


class Recommendation(BaseModel):
    rank: int
    menu_item_name: str
    truck_brand_name: str | None
    item_category: str | None
    sale_price_usd: float | None
    score: float = Field(description="P(purchase in the next window)")
    reason: str = Field(description="why this item, in plain words (bought before, often bought with, popular "
                                    "in the city)")


class CustomerRecommendations(BaseModel):
    customer_id: int
    city: str | None
    country: str | None
    history: list[HistoryEntry] = Field(description="food purchases, most recent first")
    recommendations: list[Recommendation]


class WithoutRecommendations(BaseModel):
    customer_id: int
    city: str | None
    code: str = Field(description="not_in_online_store, no_trucks, brand, trucks_not_visited or items_not_ordered")
    reason: str = Field(description="why this selected customer got no recommendation, in plain words")


class RecommendResponse(BaseModel):
    """`tastyrec recommend --json`'s shape (Recommendations.to_dict)."""

    model: ModelRef
    filters: FiltersBody = Field(description="the request's filters, values spelt as the data spells them")
    top_k: int
    customers: list[CustomerRecommendations]
    unknown_customers: list[int] = Field(description="requested ids that no customer has (the others are answered)")
    without_recommendations: list[WithoutRecommendations] = Field(
        description="selected customers who got no recommendation, each with the reason")
    without_counts: dict[str, int] = Field(description="how many selected customers got no recommendation, per code")
    selected: int = Field(description="customers the selection matched (with and without recommendations)")
    truncated: bool = Field(description="the selection matched more customers than were served")
    served: int = Field(description="customers with recommendations (those in `customers`)")
    message: str | None = Field(description="why some or all selected customers got nothing, in plain words")
    seconds: float


# One optional, typed field per feature column of columns.py: a wrong type is a 422, not a 500.
# Which columns are required depends on the loaded model (the seed's DLRM reads fewer): checked
# in the route. Other keys (customer_id, label, ...) are ignored. NaN and Infinity (Python's json
# reads them) are refused too: the model would turn them into NaN scores.
FeatureRow = create_model(
    "FeatureRow", __config__=ConfigDict(extra="ignore", allow_inf_nan=False),
    **{name: (str | int | None, None) for name in SPARSE},
    **{name: (float | None, None) for name in DENSE},
    **{name: (list[str] | None, None) for name in MULTI_HOT},
)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[FeatureRow] = Field(  # type: ignore[valid-type]
        min_length=1, description=f"feature rows with the columns the model reads (GET /metadata; a training "
                                  f"set's columns); at most {LIMITS.score_rows:,} (413 above)")


class ScoreResponse(BaseModel):
    scores: list[float] = Field(description="P(purchase) per row, in order")


class Health(BaseModel):
    status: str
    model: str
    version: int
    alias: str | None
    kind: str
    loaded_at: str
    device: str
    features: str = Field(description="the features run served (tastyrec features; /admin/reload moves to the newest)")
    scores: str = Field(description="how requests are scored: 'precomputed' (every customer's scores, computed once "
                                    "per model version and features run), 'precomputing' (the model runs per request "
                                    "until they are ready) or 'per request'")


class Features(BaseModel):
    sparse: list[str]
    dense: list[str]
    multi_hot: list[str]


class Metadata(BaseModel):
    model: ModelRef
    kind: str
    features: Features = Field(description="the columns the model reads, in tensor order")
    config: dict[str, Any] = Field(description="the model's saved hyperparameters")
    test_metrics: dict[str, float | None] = Field(description="the version's metrics on the test window")
