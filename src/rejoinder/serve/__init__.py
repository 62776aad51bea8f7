"""`rejoinder serve`: the HTTP API, its session store, batching across users, the chat page."""
