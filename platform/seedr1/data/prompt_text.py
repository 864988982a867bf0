"""The SEED-Bench-R1 prompt text, in one place.

The official evaluation/training code builds the user text as the question, the four lettered options, and an
instruction asking for ``<think>`` reasoning and an ``<answer>`` tag. Both templates are configurable
(``DataConfig.question_template`` / ``DataConfig.instruction``); these are the defaults.
"""

QUESTION_TEMPLATE = "{question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n"

OFFICIAL_INSTRUCTION = (
    " Output the thinking process in <think> </think> and final answer in <answer> </answer> tags, i.e., "
    "<think> reasoning process here </think><answer> answer here </answer>. "
)

LETTERS = ("A", "B", "C", "D")


def build_prompt_text(question: str, options: list[str], question_template: str = QUESTION_TEMPLATE,
                      instruction: str = OFFICIAL_INSTRUCTION) -> str:
    """Question, lettered options, instruction. Four options use the (configurable) official template."""
    if len(options) == 4:
        a, b, c, d = options
        body = question_template.format(question=question, a=a, b=b, c=c, d=d)
    else:
        body = question + "\n" + "".join(f"{chr(ord('A') + i)}. {o}\n" for i, o in enumerate(options))
    return body + instruction
