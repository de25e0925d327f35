"""Settings: the one rule that decides what every command runs with (``resolve.py``), the Hydra
composition of the shipped config tree (``compose.py``) and the value checks (``schema.py``)."""
