"""Feature and label column names, defined once and imported everywhere.

The seed's notebook and app each kept their own lists, in different orders, which silently
broke inference. Here the order of every tuple is the order of the model's input tensors.
"""

from __future__ import annotations

CUSTOMER_ID = "customer_id"
ITEM = "menu_item_name"
TIMESTAMP = "event_timestamp"
LABEL = "label"
CITY = "city"
ITEM_PURCHASE_COUNT = "item_purchase_count"  # times the customer bought the item before the timestamp
ITEM_RECENT_ORDERS = "item_recent_orders"  # the same orders, each weighted exp(-its age / window length)

# The seed's 9 label-encoded features and 5 dense features, in the seed's order.
SEED_SPARSE: tuple[str, ...] = (
    "menu_item_name", "menu_type", "truck_brand_name", "item_category", "item_subcategory",
    "city", "country", "gender", "marital_status",
)
SEED_DENSE: tuple[str, ...] = (
    "sale_price_usd", "age",
    "avg_yearly_purchase_amount", "avg_monthly_purchase_amount", "avg_weekly_purchase_amount",
)

# tastyrec adds customer attributes the seed left out and history features that make it personal.
SPARSE: tuple[str, ...] = SEED_SPARSE + ("favourite_brand", "children_count")
DENSE: tuple[str, ...] = SEED_DENSE + (
    "order_count",              # customer's orders before the timestamp
    "days_since_last_order",    # recency of the customer
    "item_purchase_count",      # times this customer bought this item before the timestamp
    "days_since_item_purchase",  # recency of this item for this customer (large when never)
    "brand_spend_share",        # share of the customer's spend at this item's brand
    "item_recent_orders",       # recency-weighted item_purchase_count (recent orders count most)
    "item_interval_days",       # mean days between the customer's orders of this item (large when < 2)
    # TIFU-KNN's own vector, as inputs: the share of the customer's food orders (baskets) that
    # held the item, each basket weighted 1, 0.9^b and 0.5^b (b = baskets placed after it)
    "item_order_share", "item_basket_decay", "item_last_baskets",
    # what every customer bought, as of the same snapshot (tastyrec.collaborative): the item's
    # share of the customers who ordered in the last window, and the EASE score of the
    # customer's history bag, and its item-kNN score (cosine, bag items weighted ln(1 + orders)
    # as the item-kNN baseline does; item_popularity and item_knn_score are fitted with the model)
    "item_recent_popularity", "item_ease_score", "item_cosine_score",
)
# Multi-hot bags: the set of items / brands the customer bought before the timestamp.
# Each is a list of strings; the model embeds them with an EmbeddingBag.
MULTI_HOT: tuple[str, ...] = ("history_items", "history_brands")

BRAND = "truck_brand_name"
# What a missing history value means: no purchase yet. Days default to more than the data spans.
NEVER_DAYS = 2000.0
DENSE_DEFAULTS: dict[str, float] = {
    "avg_yearly_purchase_amount": 0.0, "avg_monthly_purchase_amount": 0.0, "avg_weekly_purchase_amount": 0.0,
    "order_count": 0.0, "days_since_last_order": NEVER_DAYS, "item_purchase_count": 0.0,
    "days_since_item_purchase": NEVER_DAYS, "brand_spend_share": 0.0,
    "item_recent_orders": 0.0, "item_interval_days": NEVER_DAYS,
    "item_order_share": 0.0, "item_basket_decay": 0.0, "item_last_baskets": 0.0,
    "item_recent_popularity": 0.0, "item_ease_score": 0.0, "item_cosine_score": 0.0,
}
# the per customer x item scores summed over the customer's history bag from the item's
# collaborative lists (tastyrec.collaborative): feature -> (the item's list of weights, the
# customer's list aligned with history_items whose ln(1 + value) weighs each bag item, or None: 1)
BAG_SCORES: dict[str, tuple[str, str | None]] = {
    "item_ease_score": ("collab_ease", None),
    "item_cosine_score": ("collab_cosine", "history_item_orders"),
}
COLLAB_ITEMS = "collab_items"  # the item's list of history items those weights belong to
