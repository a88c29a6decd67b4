"""Ray placement and scheduling of the core (which itself never imports Ray)."""
