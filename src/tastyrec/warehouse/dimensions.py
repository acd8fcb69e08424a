"""The seeded dimensions of the synthetic data set: cities, menus, franchises, trucks, locations.

The fixed facts come from `catalog.py`; what is random (costs of goods, item popularity, which
brands serve which city, the trucks, franchisees and locations) is drawn here from the seed, once
per data set. `synthetic.py` generates the customers and their orders on top of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from tastyrec.config import DATA_START
from tastyrec.warehouse.catalog import (BEVERAGES, BRANDS, COUNTRIES, FIRST_NAMES, LAST_NAMES, STYLES,
                                        TRUCK_MAKES)

LATENT_DIM = 4
LATENT_SCALE = 0.55


@dataclass
class Dimensions:
    """The small tables, plus the arrays the purchase model needs."""

    tables: dict[str, pa.Table]
    item_ids: np.ndarray          # (I,) menu_item_id of the non-beverage items
    item_names: np.ndarray        # (I,)
    item_brand: np.ndarray        # (I,) brand index
    item_price: np.ndarray        # (I,) sale price
    item_pop: np.ndarray          # (I,) base utility
    item_latent: np.ndarray       # (I, LATENT_DIM)
    bev_ids: np.ndarray           # (B, 3) menu_item_id of each brand's beverages
    bev_price: np.ndarray         # (3,)
    brand_style: np.ndarray       # (B,) style index
    city_brands: np.ndarray       # (C, B) bool: a truck of the brand serves the city
    city_trucks: list[list[np.ndarray]]  # [city][brand] -> truck ids
    city_locations: list[np.ndarray]     # [city] -> location ids
    city_weight: np.ndarray       # (C,) share of customers
    city_names: np.ndarray
    city_country: np.ndarray
    city_language: np.ndarray


def build_dimensions(seed: int) -> Dimensions:
    """Countries, cities, menus, franchises, trucks and locations, from the seed."""
    rng = np.random.default_rng([seed, 0])
    country_rows, city_names, city_country, city_lang, city_pop = [], [], [], [], []
    for k, (country, iso, currency, language, cities) in enumerate(COUNTRIES, start=1):
        for city, _region, population in cities:
            city_id = len(city_names) + 1
            country_rows.append((k, country, currency, iso, city_id, city, population))
            city_names.append(city)
            city_country.append(country)
            city_lang.append(language)
            city_pop.append(population)
    country = pd.DataFrame(country_rows, columns=[
        "country_id", "country", "iso_currency", "iso_country", "city_id", "city", "city_population"])
    region_of = {c[0]: c[1] for _, _, _, _, cs in COUNTRIES for c in cs}
    iso_of = {name: iso for name, iso, *_ in COUNTRIES}

    menu_rows, item_ids, item_names, item_brand, item_price, item_pop = [], [], [], [], [], []
    bev_ids = np.zeros((len(BRANDS), len(BEVERAGES)), dtype=np.int64)
    brand_style = np.array([STYLES.index(style) for _, _, style, _ in BRANDS])
    category_effect = {"Main": 0.3, "Snack": -0.3, "Dessert": -0.1}
    next_id = 10
    for b, (menu_type, brand, _style, items) in enumerate(BRANDS):
        for k, item in enumerate(items + BEVERAGES):
            cost = round(item.price * rng.uniform(0.3, 0.55), 2)
            health = ('{"menu_item_health_metrics": [{"is_dairy_free_flag": "%s", "is_nut_free_flag": "Y"}]}'
                      % ("N" if item.category == "Dessert" else "Y"))
            menu_rows.append((next_id, b + 1, menu_type, next_id, item.name, item.category,
                              item.subcategory, cost, item.price, health, brand))
            if item.category == "Beverage":
                bev_ids[b, k - len(items)] = next_id
            else:
                item_ids.append(next_id)
                item_names.append(item.name)
                item_brand.append(b)
                item_price.append(item.price)
                item_pop.append(rng.normal(0.0, 0.5) + category_effect[item.category])
            next_id += 1
    menu = pd.DataFrame(menu_rows, columns=[
        "menu_id", "menu_type_id", "menu_type", "menu_item_id", "menu_item_name", "item_category",
        "item_subcategory", "cost_of_goods_usd", "sale_price_usd", "menu_item_health_metrics_obj",
        "truck_brand_name"])
    assert len(set(item_names)) == len(item_names), "non-beverage item names must be unique"

    # Each city is served by 9 to 13 of the 15 brands, one or two trucks each.
    n_cities, n_brands = len(city_names), len(BRANDS)
    brand_weight = rng.uniform(0.5, 1.5, n_brands)
    city_brands = np.zeros((n_cities, n_brands), dtype=bool)
    franchise_rows = [(1, "Tasty", "Bytes", "Denver", "United States", "corporate@tastybytes.example", "555-0100")]
    truck_rows, location_rows = [], []
    city_trucks: list[list[np.ndarray]] = []
    city_locations: list[np.ndarray] = []
    truck_id = 1
    for c in range(n_cities):
        k = rng.integers(9, 14)
        chosen = rng.choice(n_brands, size=k, replace=False, p=brand_weight / brand_weight.sum())
        city_brands[c, chosen] = True
        name, ctry = city_names[c], city_country[c]
        franchisees = []
        for _ in range(rng.integers(2, 5)):
            fid = len(franchise_rows) + 1
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            franchise_rows.append((fid, first, last, name, ctry, f"{first}.{last}{fid}@franchise.example".lower(),
                                   f"{rng.integers(200, 999)}-{rng.integers(100, 999)}-{rng.integers(1000, 9999)}"))
            franchisees.append(fid)
        per_brand = []
        for b in range(n_brands):
            ids = []
            if city_brands[c, b]:
                for _ in range(1 + int(city_pop[c] > 3_000_000)):
                    franchised = rng.random() < 0.4
                    fid = int(rng.choice(franchisees)) if franchised else 1
                    make, model = TRUCK_MAKES[rng.integers(len(TRUCK_MAKES))]
                    opened = DATA_START - timedelta(days=int(rng.integers(30, 1500)))
                    truck_rows.append((truck_id, b + 1, name, region_of[name], region_of[name], ctry, iso_of[ctry],
                                       int(franchised), int(rng.integers(2005, 2020)), make, model,
                                       int(rng.random() < 0.2), fid, opened))
                    ids.append(truck_id)
                    truck_id += 1
            per_brand.append(np.array(ids, dtype=np.int64))
        city_trucks.append(per_brand)
        first_loc = len(location_rows) + 1
        for j in range(25):
            lid = first_loc + j
            placekey = f"zz{lid:03d}-{rng.integers(100, 999)}@{rng.integers(100, 999)}-{rng.integers(100, 999)}"
            location_rows.append((lid, placekey, f"{name} Stop {j + 1}", name, region_of[name], iso_of[ctry], ctry))
        city_locations.append(np.arange(first_loc, first_loc + 25, dtype=np.int64))

    franchise = pd.DataFrame(franchise_rows, columns=[
        "franchise_id", "first_name", "last_name", "city", "country", "e_mail", "phone_number"])
    truck = pd.DataFrame(truck_rows, columns=[
        "truck_id", "menu_type_id", "primary_city", "region", "iso_region", "country", "iso_country_code",
        "franchise_flag", "year", "make", "model", "ev_flag", "franchise_id", "truck_opening_date"])
    location = pd.DataFrame(location_rows, columns=[
        "location_id", "placekey", "location", "city", "region", "iso_country_code", "country"])
    weight = np.sqrt(np.array(city_pop, dtype=float))
    return Dimensions(
        tables={"raw_pos.country": country, "raw_pos.franchise": franchise, "raw_pos.location": location,
                "raw_pos.menu": menu, "raw_pos.truck": truck},
        item_ids=np.array(item_ids), item_names=np.array(item_names), item_brand=np.array(item_brand),
        item_price=np.array(item_price), item_pop=np.array(item_pop),
        item_latent=rng.normal(0.0, LATENT_SCALE, (len(item_ids), LATENT_DIM)),
        bev_ids=bev_ids, bev_price=np.array([b.price for b in BEVERAGES]), brand_style=brand_style,
        city_brands=city_brands, city_trucks=city_trucks, city_locations=city_locations,
        city_weight=weight / weight.sum(), city_names=np.array(city_names),
        city_country=np.array(city_country), city_language=np.array(city_lang))
