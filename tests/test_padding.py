"""pad_batch: the one padding of training, scoring and generation."""

import numpy as np
import pytest

from rejoinder.formats import IGNORE, Encoding
from rejoinder.padding import pad_batch


def rows():
    return [
        Encoding([5, 6, 7], token_type_ids=[0, 1, 1], labels=[IGNORE, 6, 7]),
        Encoding([8], token_type_ids=[1], labels=[8]),
    ]


def test_right_padding_for_training_and_scoring():
    b = pad_batch(rows(), pad_id=0, labels=True)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["token_type_ids"].tolist() == [[0, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_left_padding_for_generation_keeps_every_row_ending_at_the_last_position():
    b = pad_batch(rows(), pad_id=0, side="left")
    assert b["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b["token_type_ids"].tolist() == [[0, 1, 1], [0, 0, 1]]
    assert "labels" not in b


def test_arrays_and_untyped_rows_pad_alike():
    class Row:
        def __init__(self, ids):
            self.input_ids, self.labels, self.token_type_ids = (
                np.asarray(ids),
                np.asarray(ids),
                None,
            )

    b = pad_batch([Row([1, 2]), Row([3])], pad_id=9, labels=True)
    assert b["input_ids"].tolist() == [[1, 2], [3, 9]] and "token_type_ids" not in b
    with pytest.raises(ValueError, match="side"):
        pad_batch([Row([1])], pad_id=0, side="middle")
