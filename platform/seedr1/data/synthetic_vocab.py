"""Words of the synthetic SEED-Bench-R1-mini: environments, cue colours, task families per domain.

Kept apart from the generator so the tiny tokenizer can be trained on the same text without importing media code.
"""

# The visual cue: one object colour per sample; each option names one colour, so only vision can decide.
CUE_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
}

# Environments = visual appearance (background tint and stripe pattern). L1 and training share the first group;
# L2 and L3 use the second (unseen) group.
TRAIN_ENVIRONMENTS = ("kitchen_a", "kitchen_b", "kitchen_c", "kitchen_d")
HELDOUT_ENVIRONMENTS = ("garage_e", "office_f")

# Task families: (domain, scenario, task goal, question, option template with {colour}).
# Training/L1/L2 use TRAIN_TASKS; L3 uses HELDOUT_TASKS (other families, the four official L3 domains).
TRAIN_TASKS = (
    ("Daily life", "kitchen", "make a cup of tea", "What is the next action to complete the task?",
     "pick up the {colour} cup"),
    ("Daily life", "kitchen", "wash the dishes", "What is the next action to complete the task?",
     "rinse the {colour} plate"),
)
HELDOUT_TASKS = (
    ("Daily life", "garden", "water the plants", "What should be done next?", "water the {colour} plant"),
    ("Hobbies", "studio", "paint a picture", "What should be done next?", "dip the {colour} brush"),
    ("Recreation", "park", "play a ball game", "What should be done next?", "kick the {colour} ball"),
    ("Work", "office", "sort the paperwork", "What should be done next?", "file the {colour} folder"),
)

NARRATIONS = ("open the cupboard", "walk to the counter", "look at the table", "reach forward", "turn around")

CUE_THOUGHT = "I see the {colour} object."


def corpus_lines() -> list[str]:
    """Every phrase the synthetic data can produce (for training the tiny tokenizer)."""
    lines = list(NARRATIONS)
    for domain, scenario, goal, question, option in TRAIN_TASKS + HELDOUT_TASKS:
        lines += [domain, scenario, goal, question]
        lines += [option.format(colour=c) for c in CUE_COLOURS]
    lines += [CUE_THOUGHT.format(colour=c) for c in CUE_COLOURS]
    return lines


# How each environment looks: a muted (low-saturation) base colour and a brightness pattern with its period in
# pixels. Distinct per environment; desaturated so the saturated cue colours stand out.
ENVIRONMENT_LOOKS = {
    "kitchen_a": ((150, 140, 125), "rows", 6),
    "kitchen_b": ((125, 135, 148), "cols", 8),
    "kitchen_c": ((138, 150, 130), "diag", 10),
    "kitchen_d": ((165, 152, 152), "checks", 7),
    "garage_e": ((108, 108, 98), "antidiag", 5),
    "office_f": ((172, 168, 180), "grid", 12),
}
