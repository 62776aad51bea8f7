"""Human evaluation: pairwise judging runs (DialoGPT's turns, ACUTE-Eval's conversations).

`create.py` makes a run's items, `store.py` keeps runs, judges and judgments in the
session database, `api.py` serves the judging page and its API, and `commands.py` holds
the `rejoinder judge` verbs. The statistics and the report are
`rejoinder.evaluation.stats` and `rejoinder.evaluation.human`.
"""
