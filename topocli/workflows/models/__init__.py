"""``topo models``: every name ``--model`` accepts, installed or not, and what it needs."""
