"""The statistics of pairwise judgments, against values worked out by hand."""

import math

import pytest

from rejoinder.evaluation.stats import (
    binomial_test,
    fleiss_kappa,
    holm,
    percent_agreement,
    wilson,
)

Z2 = 1.96**2


def test_binomial_test_sums_the_outcomes_no_more_likely_than_the_observed_one():
    # all five go one way: only 0 and 5 are that unlikely, 2 * 0.5**5
    assert binomial_test(0, 5) == pytest.approx(0.0625)
    assert binomial_test(5, 5) == pytest.approx(0.0625)
    # 7 of 10: outcomes 0-3 and 7-10, 2 * (C(10,7) + C(10,8) + C(10,9) + C(10,10)) / 2**10
    assert binomial_test(7, 10) == pytest.approx(2 * (120 + 45 + 10 + 1) / 1024)
    assert binomial_test(5, 10) == 1.0
    assert binomial_test(0, 0) == 1.0


def test_binomial_test_with_an_uneven_p_is_not_twice_one_tail():
    # p = 1/6, n = 6: P(k) = C(6,k) 5**(6-k) / 6**6 = 15625, 18750, 9375, 2500, 375, 30, 1
    # (over 46656). k = 3: outcomes 3-6 are no more likely, (2500 + 375 + 30 + 1) / 46656
    assert binomial_test(3, 6, 1 / 6) == pytest.approx(2906 / 46656)
    # k = 0: every outcome but k = 1 (18750) is no more likely than 15625
    assert binomial_test(0, 6, 1 / 6) == pytest.approx(1 - 18750 / 46656)


def test_binomial_test_handles_tens_of_thousands_of_votes():
    # 20400 of 40000: 4 standard deviations (sd = 100) out; the continuity-corrected
    # normal approximation is within a fraction of a percent at this n
    normal = math.erfc((400 - 0.5) / 100 / math.sqrt(2))
    assert binomial_test(20400, 40000) == pytest.approx(normal, rel=0.01)
    assert binomial_test(20000, 40000) == 1.0
    assert binomial_test(19600, 40000) == pytest.approx(binomial_test(20400, 40000))


@pytest.mark.parametrize("k, n, p", [(-1, 5, 0.5), (6, 5, 0.5), (1, 5, 1.5)])
def test_binomial_test_refuses_impossible_inputs(k, n, p):
    with pytest.raises(ValueError):
        binomial_test(k, n, p)


def test_holm_multiplies_by_the_tests_left_and_stays_monotone():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.02]) == [0.02]
    assert holm([]) == []


def test_fleiss_kappa_of_the_wikipedia_example():
    # 10 items, 14 raters, 5 categories (Fleiss' kappa on Wikipedia): P-bar = 0.378,
    # P-e = 0.213, kappa = (0.378 - 0.213) / (1 - 0.213) = 0.210
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    ratings = [[j for j, count in enumerate(row) for _ in range(count)] for row in table]
    assert fleiss_kappa(ratings) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_with_unequal_numbers_of_ratings():
    # item 1 (a, a): P = 1; item 2 (a, b, b): P = (0 + 2) / 6 = 1/3; item 3 has one
    # rating and is skipped. P-bar = 2/3; pooled a 3/5, b 2/5: P-e = 13/25;
    # kappa = (2/3 - 13/25) / (12/25) = 11/36. Agreeing pairs: 1 of 1, then 1 of 3.
    ratings = [["a", "a"], ["a", "b", "b"], ["c"]]
    assert fleiss_kappa(ratings) == pytest.approx(11 / 36)
    assert percent_agreement(ratings) == pytest.approx(2 / 4)


def test_agreement_is_undefined_without_two_ratings_or_with_one_category():
    assert fleiss_kappa([]) is None and percent_agreement([]) is None
    assert fleiss_kappa([["a"], ["b"]]) is None and percent_agreement([["a"], ["b"]]) is None
    assert fleiss_kappa([["a", "a"], ["a", "a", "a"]]) is None
    assert percent_agreement([["a", "a"], ["a", "a", "a"]]) == 1.0
    assert fleiss_kappa([["a", "a"], ["b", "b"]]) == 1.0


def test_wilson_known_values():
    # 68 of 100: centre (0.68 + Z2/200) / (1 + Z2/100) = 0.6734, half-width 0.0900
    low, high = wilson(68, 100)
    assert (low, high) == pytest.approx((0.5834, 0.7633), abs=1e-4)
    # none of n: the interval is [0, z^2 / (n + z^2)], not the empty [0, 0]
    assert wilson(0, 10) == pytest.approx((0.0, Z2 / (10 + Z2)))
    assert wilson(3, 10) == pytest.approx(tuple(1 - x for x in reversed(wilson(7, 10))))
    assert wilson(0, 0) == (0.0, 1.0)


def test_rankers_use_the_same_wilson():
    from rejoinder.evaluation import rankers

    assert rankers.wilson is wilson
