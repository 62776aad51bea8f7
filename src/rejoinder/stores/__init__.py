"""What the server and human evaluation keep in the database (`db.Database`): chat
sessions and what users said of replies (`sessions`), judging runs and their judgments
(`judgments`, with a run's records in `runs`).

Low in the package order: the stores know tables and rows only, so the data pipeline
(pairs from feedback), judging and serving all read them, and none of them reads the
others through a store.
"""
