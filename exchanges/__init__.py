"""Exchange integrations. ``exchanges.clients`` is the only module that imports ccxt."""
