"""The paper's study: base vs SFT vs GRPO on SEED-Bench-R1 L1/L2/L3, in one command."""
