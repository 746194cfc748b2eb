"""One module per comparison; :data:`COMPARISONS` is the order of the table."""

COMPARISONS = ("coder", "classical", "wide", "check", "sae", "speed")
