"""From raw corpora to filtered multi-turn dialogue datasets (`rejoinder data`)."""
