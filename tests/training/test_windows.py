"""Long dialogues become windows of whole turns that learn every response once."""

import numpy as np

from rejoinder.dialogue import Dialogue
from rejoinder.formats import IGNORE, get_format
from rejoinder.training.examples import examples_of


def test_a_long_dialogue_is_windowed_even_when_the_format_has_a_budget(gpt2):
    # Training gives the format the same budget as the windows (--model.max_tokens):
    # the windows must still be measured untruncated, or all but the last turns are lost.
    fmt = get_format("dialogpt", gpt2, max_tokens=32)
    turns = [f"turn number {i} says something short" for i in range(20)]
    examples = examples_of(Dialogue.from_turns(turns, "d"), fmt, "responses", 32)
    assert len(examples) > 1 and all(len(e) <= 32 for e in examples)
    learnt = sum(int(np.sum(e.labels != IGNORE)) for e in examples)
    # Every response once: its tokens and the end-of-text after it.
    assert learnt == sum(len(ids) + 1 for ids in fmt.tokenize_turns(turns[1:]))
