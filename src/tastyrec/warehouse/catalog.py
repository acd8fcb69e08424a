"""Static Tasty Bytes dimensions: countries and cities, truck brands and their menus.

These mirror the shape of the real Tasty Bytes data (15 brands, 30 cities in 15 countries,
about 100 menu items of which 55 are not beverages). Everything random is drawn in
`synthetic.py` from a seeded generator; this module holds only fixed facts.
"""

from __future__ import annotations

from dataclasses import dataclass

# (country, iso_country, iso_currency, language, [(city, region, population)])
COUNTRIES: list[tuple[str, str, str, str, list[tuple[str, str, int]]]] = [
    ("United States", "US", "USD", "English", [
        ("San Mateo", "California", 105_661), ("Seattle", "Washington", 737_015),
        ("New York City", "New York", 8_804_190), ("Boston", "Massachusetts", 675_647),
        ("Denver", "Colorado", 715_522)]),
    ("Canada", "CA", "CAD", "English", [
        ("Toronto", "Ontario", 2_794_356), ("Vancouver", "British Columbia", 662_248),
        ("Montreal", "Quebec", 1_762_949)]),
    ("England", "GB", "GBP", "English", [
        ("London", "England", 8_799_800), ("Manchester", "England", 552_000)]),
    ("France", "FR", "EUR", "French", [
        ("Paris", "Ile-de-France", 2_102_650), ("Nice", "Provence-Alpes-Cote d'Azur", 342_669)]),
    ("Poland", "PL", "PLN", "Polish", [
        ("Warsaw", "Masovia", 1_863_056), ("Krakow", "Lesser Poland", 804_237)]),
    ("India", "IN", "INR", "Hindi", [
        ("Mumbai", "Maharashtra", 12_442_373), ("Delhi", "Delhi", 11_034_555)]),
    ("Japan", "JP", "JPY", "Japanese", [("Tokyo", "Kanto", 13_960_236)]),
    ("South Korea", "KR", "KRW", "Korean", [("Seoul", "Seoul Capital Area", 9_411_260)]),
    ("Australia", "AU", "AUD", "English", [
        ("Sydney", "New South Wales", 5_231_147), ("Melbourne", "Victoria", 5_078_193)]),
    ("Brazil", "BR", "BRL", "Portuguese", [
        ("Rio de Janeiro", "Rio de Janeiro", 6_775_561), ("Sao Paulo", "Sao Paulo", 12_396_372)]),
    ("Germany", "DE", "EUR", "German", [
        ("Berlin", "Berlin", 3_677_472), ("Hamburg", "Hamburg", 1_853_935),
        ("Munich", "Bavaria", 1_487_708)]),
    ("Sweden", "SE", "SEK", "Swedish", [("Stockholm", "Stockholm County", 984_748)]),
    ("Spain", "ES", "EUR", "Spanish", [
        ("Madrid", "Community of Madrid", 3_305_408), ("Barcelona", "Catalonia", 1_636_193)]),
    ("Egypt", "EG", "EGP", "Arabic", [("Cairo", "Cairo Governorate", 10_230_350)]),
    ("South Africa", "ZA", "ZAR", "English", [("Cape Town", "Western Cape", 4_710_000)]),
]


@dataclass(frozen=True)
class Item:
    name: str
    category: str  # Main, Snack, Dessert, Beverage
    subcategory: str  # Hot Option, Warm Option, Cold Option
    price: float  # sale price in USD


def _main(name: str, price: float, sub: str = "Hot Option") -> Item:
    return Item(name, "Main", sub, price)


# The style tags of the brands; the purchase model (synthetic.py) shifts utilities per style, in this order.
STYLES = ("sweet", "hearty", "fresh", "comfort", "adventurous")

# (menu_type, truck_brand_name, style tag used by the purchase model, non-beverage items)
BRANDS: list[tuple[str, str, str, list[Item]]] = [
    ("Ice Cream", "Freezing Point", "sweet", [
        Item("Sugar Cone", "Dessert", "Cold Option", 6.0), Item("Waffle Cone", "Dessert", "Cold Option", 6.0),
        Item("Two Scoop Bowl", "Dessert", "Cold Option", 7.0), Item("Lemonade Sorbet", "Dessert", "Cold Option", 5.0)]),
    ("BBQ", "Smoky BBQ", "hearty", [
        _main("Rack of Pork Ribs", 21.0), _main("Pulled Pork Sandwich", 12.0),
        _main("Two Meat Plate", 17.0), Item("Fried Pickles", "Snack", "Hot Option", 6.0)]),
    ("Tacos", "Guac n' Roll", "fresh", [
        _main("Three Taco Combo Plate", 11.0), _main("Fish Burrito", 12.0),
        _main("Veggie Taco Bowl", 10.0, "Warm Option"), Item("Chips & Guacamole", "Snack", "Cold Option", 5.0)]),
    ("Mac & Cheese", "The Mac Shack", "comfort", [
        _main("Lobster Mac & Cheese", 15.0), _main("Standard Mac & Cheese", 8.0),
        _main("Buffalo Mac & Cheese", 10.0)]),
    ("Ramen", "Kitakata Ramen Bar", "fresh", [
        _main("Creamy Chicken Ramen", 17.25), _main("Spicy Miso Vegetable Ramen", 17.25),
        _main("Tonkotsu Ramen", 17.25), Item("Gyoza", "Snack", "Hot Option", 6.5)]),
    ("Grilled Cheese", "The Mega Melt", "comfort", [
        _main("Miss Piggie", 11.0), _main("The Ranch", 12.0), _main("The Original", 9.0)]),
    ("Hot Dogs", "Not the Wurst Hot Dogs", "hearty", [
        _main("New York Dog", 8.0), _main("Chicago Dog", 9.0), _main("Coney Dog", 9.0),
        Item("Chili Fries", "Snack", "Hot Option", 5.5)]),
    ("Vegetarian", "Plant Palace", "fresh", [
        _main("Veggie Burger", 11.0), _main("Seitan Buffalo Wings", 11.0),
        _main("The Garden Wrap", 10.0, "Cold Option")]),
    ("Crepes", "Le Coin des Crepes", "sweet", [
        Item("Crepe Suzette", "Dessert", "Warm Option", 12.0), _main("Galette Complete", 13.0),
        _main("The Salad of All Salads", 12.0, "Cold Option"), Item("Nutella Crepe", "Dessert", "Warm Option", 9.0)]),
    ("Ethiopian", "Tasty Tibs", "adventurous", [
        _main("Lean Beef Tibs", 13.0), _main("Veggie Combo", 11.0), _main("Lean Chicken Tibs", 12.0)]),
    ("Gyros", "Cheeky Greek", "fresh", [
        _main("Gyro Plate", 12.0), _main("The King Combo", 16.0),
        _main("Greek Salad", 10.0, "Cold Option"), Item("Spanakopita", "Snack", "Warm Option", 6.0)]),
    ("Chinese", "Peking Truck", "adventurous", [
        _main("Combo Fried Rice", 13.0), _main("Combination Lo Mein", 13.0),
        _main("Wonton Soup", 9.0), Item("Spring Rolls", "Snack", "Hot Option", 6.0)]),
    ("Poutine", "Revenge of the Curds", "comfort", [
        _main("Mothers Favorite", 12.5), _main("The Kitchen Sink", 14.5), _main("Pastrami Poutine", 13.0)]),
    ("Indian", "Nani's Kitchen", "adventurous", [
        _main("Tandoori Mixed Grill", 18.0), _main("Lean Chicken Tikka Masala", 14.0),
        _main("Combination Curry", 15.0), Item("Samosa Pair", "Snack", "Hot Option", 5.0)]),
    ("Sandwiches", "Better Off Bread", "hearty", [
        _main("Hot Ham & Cheese", 11.0), _main("Italian", 11.0),
        _main("Turkey Club", 12.0, "Cold Option"), Item("Cookie Duo", "Dessert", "Cold Option", 4.0)]),
]

# Every brand also sells these; beverage names repeat across brands, as in the seed's data.
BEVERAGES: list[Item] = [
    Item("Bottled Water", "Beverage", "Cold Option", 2.0),
    Item("Bottled Soda", "Beverage", "Cold Option", 3.0),
    Item("Ice Tea", "Beverage", "Cold Option", 3.0),
]

FIRST_NAMES = ["Alex", "Maria", "Jun", "Priya", "Lukas", "Sofia", "Omar", "Emma", "Kenji", "Ana",
               "Noah", "Chloe", "Ravi", "Lea", "Mateo", "Hana", "Liam", "Zara", "Felix", "Amara",
               "Ivan", "Julia", "Tom", "Nadia", "Diego", "Mina", "Oskar", "Aisha", "Paul", "Yuna"]
LAST_NAMES = ["Smith", "Garcia", "Tanaka", "Sharma", "Muller", "Rossi", "Hassan", "Martin", "Kim",
              "Silva", "Nowak", "Dubois", "Johansson", "Lopez", "Brown", "Patel", "Schmidt",
              "Costa", "Khan", "Wilson", "Nguyen", "Ivanova", "Lee", "Fischer", "Moreau"]
TRUCK_MAKES = [("Ford", "Step Van"), ("Freightliner", "MT45 Utilimaster"), ("Chevrolet", "P30"),
               ("Nissan", "NV200"), ("Mercedes", "Sprinter"), ("Isuzu", "NPR")]
