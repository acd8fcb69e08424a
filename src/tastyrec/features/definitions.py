"""The Feast objects of the tastyrec feature repository: entities and versioned feature views.

The seed's Snowflake Feature Store views were named with a "V1" version; here every view carries
the tag `version: v1` instead (names stay stable so serving code does not change with a version).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, String

from tastyrec.columns import CITY, CUSTOMER_ID, ITEM, TIMESTAMP

VERSION = "v1"

customer = Entity(name="customer", join_keys=[CUSTOMER_ID], value_type=ValueType.INT64,
                  description="A Tasty Bytes loyalty customer.")
menu_item = Entity(name="menu_item", join_keys=[ITEM], value_type=ValueType.STRING,
                   description="A non-beverage menu item, by name.")

# view name -> (entities, [(feature, type)], description); the Parquet file is <name>.parquet
VIEWS: dict[str, tuple[list[Entity], list[tuple[str, object]], str]] = {
    "customer_features": ([customer], [
        (CITY, String), ("country", String), ("gender", String), ("marital_status", String),
        ("favourite_brand", String), ("children_count", String), ("age", Float64)],
        "Customer attributes (the seed's, plus favourite brand and children); age on the snapshot day."),
    "menu_features": ([menu_item], [
        ("menu_type", String), ("truck_brand_name", String), ("item_category", String),
        ("item_subcategory", String), ("sale_price_usd", Float64)],
        "The seed's menu item features, non-beverage items only."),
    "purchase_features": ([customer], [
        ("avg_yearly_purchase_amount", Float64), ("avg_monthly_purchase_amount", Float64),
        ("avg_weekly_purchase_amount", Float64), ("order_count", Float64), ("days_since_last_order", Float64)],
        "The seed's average spend per week / month / year, order count and recency, as of the snapshot."),
    "customer_history": ([customer], [
        ("history_items", Array(String)), ("history_item_orders", Array(Float64)),
        ("history_item_days", Array(Float64)), ("history_item_recent", Array(Float64)),
        ("history_item_interval", Array(Float64)), ("history_item_share", Array(Float64)),
        ("history_item_decay", Array(Float64)), ("history_item_last", Array(Float64)),
        ("history_brands", Array(String)),
        ("history_brand_shares", Array(Float64))],
        "Items bought before the snapshot (with orders, days since the last, recency-weighted orders, "
        "mean days between orders and basket-weighted shares), brands (with spend share)."),
    "item_collaborative": ([menu_item], [
        ("item_recent_popularity", Float64), ("collab_items", Array(String)), ("collab_ease", Array(Float64)),
        ("collab_cosine", Array(Float64))],
        "What all customers bought before the snapshot: the item's share of those who ordered in the last "
        "window, and its EASE weights and cosine similarities from each other item."),
}


def feature_views(data_dir: Path) -> list[FeatureView]:
    """The feature views over the Parquet files in data_dir."""
    views = []
    for name, (entities, fields, description) in VIEWS.items():
        source = FileSource(name=f"{name}_source", path=str(Path(data_dir) / f"{name}.parquet"),
                            timestamp_field=TIMESTAMP)
        views.append(FeatureView(
            name=name, entities=entities, schema=[Field(name=f, dtype=t) for f, t in fields],
            source=source, ttl=timedelta(0), online=True, description=description,
            tags={"version": VERSION, "owner": "tastyrec"}))
    return views


def objects(data_dir: Path) -> list:
    """Everything `feast apply` registers."""
    return [customer, menu_item, *feature_views(data_dir)]


def feature_refs() -> list[str]:
    """All features as Feast references ("view:feature"), in VIEWS order."""
    return [f"{name}:{field}" for name, (_, fields, _) in VIEWS.items() for field, _ in fields]
