"""immunegym."""
