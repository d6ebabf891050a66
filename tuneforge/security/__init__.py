"""Safe defaults: API keys, rate limits, the Host allowlist, paths kept inside the data folder."""
