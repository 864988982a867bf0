import pytest

from seedr1.algo.rewards import (REWARDS, accuracy_reward, combine_rewards, extract_answer, format_reward,
                                 get_reward, is_correct, register_reward)

GOOD = "<think>the man opens the fridge</think><answer>B</answer>"


@pytest.mark.parametrize("completion, expected", [
    (GOOD, "B"),
    ("<answer>\n B. pick</answer>", "B. pick"),            # leading newline/space stripped
    ("<answer>A</answer> then <answer>B</answer>", "A"),   # first tag wins
    ("<answer>  </answer>", ""),                            # empty after strip
    ("<answer>B", None),                                    # no closing tag
    ("</answer>B<answer>", None),                           # tags in the wrong order
    ("<answer><answer>B</answer></answer>", "<answer>B"),  # nested: lazy match from the first opener
    ("<answer>line1\nline2</answer>", "line1\nline2"),      # DOTALL: spans lines
    ("no tags at all", None),
])
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize("completion, gold, score", [
    (GOOD, "B", 1.0),
    (GOOD, "A", 0.0),
    ("<answer>\n B. pick</answer>", "B", 1.0),          # stripped, first char 'B'
    ("<answer>b</answer>", "B", 0.0),                   # case-sensitive
    ("<answer>A</answer><answer>B</answer>", "B", 0.0), # only the first tag counts
    ("<answer>A</answer><answer>B</answer>", "A", 1.0),
    ("<answer>  </answer>", "B", 0.0),                  # empty answer
    ("<answer>B", "B", 0.0),                            # missing closing tag
    ("B", "B", 0.0),                                    # bare letter, no tag
    ("<answer><answer>B</answer></answer>", "B", 0.0),  # first char is '<'
    ("<answer>(B)</answer>", "B", 0.0),                 # first char is '(' under the official rule
    ("<answer>Bicycle</answer>", "B", 1.0),             # only the first character is compared
])
def test_accuracy_reward(completion, gold, score):
    assert accuracy_reward([completion], [gold]) == [score]
    assert is_correct(completion, gold) is (score == 1.0)


def test_accuracy_reward_batch_and_length_mismatch():
    assert accuracy_reward([GOOD, "<answer>C</answer>", ""], ["B", "C", "C"]) == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        accuracy_reward([GOOD], ["B", "C"])


@pytest.mark.parametrize("completion, score", [
    (GOOD, 1.0),
    ("<think>step 1\nstep 2\n</think><answer>B</answer>", 1.0),   # multiline think
    ("<think>x</think> \n\t <answer>B</answer>", 1.0),            # whitespace between the blocks
    ("<think>x</think><answer>B</answer> trailing text", 1.0),    # re.match anchors the start only
    ("Sure. <think>x</think><answer>B</answer>", 0.0),            # text before <think>
    ("<think>x</think> so <answer>B</answer>", 0.0),              # non-whitespace between the blocks
    ("<think>x</think>", 0.0),                                    # no answer
    ("<answer>B</answer>", 0.0),                                  # no think
    ("<think>x</think><answer>B", 0.0),                           # answer not closed
    ("<think>x<answer>B</answer>", 0.0),                          # think not closed
    ("<answer>B</answer><think>x</think>", 0.0),                  # wrong order
    ("", 0.0),
])
def test_format_reward(completion, score):
    assert format_reward([completion], ["B"]) == [score]


def test_registry():
    assert get_reward("accuracy") is accuracy_reward and get_reward("format") is format_reward
    with pytest.raises(ValueError, match=r"unknown reward 'nope'.*accuracy.*format"):
        get_reward("nope")

    @register_reward("_test_len")
    def _len_reward(completions, golds):
        return [float(len(c)) for c in completions]

    try:
        assert REWARDS["_test_len"] is _len_reward
        with pytest.raises(ValueError, match="already registered"):
            register_reward("_test_len")(_len_reward)
    finally:
        del REWARDS["_test_len"]


def test_combine_rewards_weighted():
    completions = [GOOD, "<answer>B</answer>", "<think>x</think><answer>C</answer>", "nothing"]
    golds = ["B", "B", "B", "B"]
    total, per, failures = combine_rewards(completions, golds, {"accuracy": 1.0, "format": 0.5})
    assert per == {"accuracy": [1.0, 1.0, 0.0, 0.0], "format": [1.0, 0.0, 1.0, 0.0]}
    # total = 1.0 * accuracy + 0.5 * format: [1+0.5, 1+0, 0+0.5, 0]
    assert total == pytest.approx([1.5, 1.0, 0.5, 0.0])
    assert failures == {"accuracy": 0, "format": 0}


def test_combine_rewards_falls_back_per_sample(monkeypatch):
    calls = []

    def flaky(completions, golds):
        calls.append(len(completions))
        if len(completions) > 1:
            raise RuntimeError("batch path broken")
        if "boom" in completions[0]:
            raise RuntimeError("bad sample")
        return [2.0]

    monkeypatch.setitem(REWARDS, "flaky", flaky)
    total, per, failures = combine_rewards(["a", "boom", "c"], ["A", "A", "A"], {"flaky": 0.5, "accuracy": 1.0})
    assert calls == [3, 1, 1, 1]                   # one batch try, then one call per sample
    assert per["flaky"] == [2.0, 0.0, 2.0]         # the raising sample scores 0.0
    assert total == pytest.approx([1.0, 0.0, 1.0])  # 0.5 * flaky + 1.0 * accuracy(=0)
    assert failures == {"flaky": 1, "accuracy": 0}


def test_combine_rewards_all_samples_fail(monkeypatch):
    def broken(completions, golds):
        raise KeyError("x")

    monkeypatch.setitem(REWARDS, "broken", broken)
    total, per, failures = combine_rewards([GOOD, GOOD], ["B", "B"], {"broken": 1.0, "accuracy": 2.0})
    assert per["broken"] == [0.0, 0.0] and failures["broken"] == 2
    assert total == [2.0, 2.0]


def test_combine_rewards_wrong_length_is_an_error(monkeypatch):
    monkeypatch.setitem(REWARDS, "short", lambda completions, golds: [1.0])
    with pytest.raises(ValueError, match="'short'"):
        combine_rewards(["a", "b"], ["A", "B"], {"short": 1.0})


def test_combine_rewards_wrong_length_in_fallback_is_an_error(monkeypatch):
    def bad(completions, golds):
        if len(completions) > 1:
            raise RuntimeError("batch path broken")
        return [1.0, 1.0]

    monkeypatch.setitem(REWARDS, "bad", bad)
    with pytest.raises(ValueError, match="'bad'"):
        combine_rewards(["a", "b"], ["A", "B"], {"bad": 1.0})


def test_combine_rewards_argument_errors():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        combine_rewards([GOOD], ["B"], {"nope": 1.0})
    with pytest.raises(ValueError):
        combine_rewards([GOOD], ["B", "C"], {"accuracy": 1.0})
    with pytest.raises(ValueError):
        combine_rewards([GOOD], ["B"], {})
