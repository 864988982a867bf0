"""GRPO policy loss (token-level clipped surrogate + optional KL to a reference) and log-prob helpers."""
from __future__ import annotations

from typing import Literal

import torch

KLKind = Literal["k3", "k1"]
Aggregation = Literal["seq_mean_token_mean", "token_mean", "dr_grpo"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` where `mask` is set (0 where nothing is set, never NaN)."""
    m = mask.bool()
    # where(), not x * mask: a NaN/inf at a masked-out position must not leak into the sum.
    total = torch.where(m, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / m.sum().clamp(min=1)
    return total.sum(dim) / m.sum(dim).clamp(min=1)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLKind = "k3", clamp: float = 0.0) -> torch.Tensor:
    """Per-token KL(policy || ref) estimate from samples of the policy. k3 (Schulman) is unbiased and always >= 0;
    k1 is plain ``logp - ref``: its value estimates the KL, but as a loss term its expected gradient is zero, so it
    regularises nothing (a metric, not a penalty). ``clamp`` > 0 bounds ``ref - logp`` to +-clamp first, as the
    official SEED-Bench-R1 trainer does (11)."""
    d = ref_logp - logp
    if clamp > 0:
        d = torch.clamp(d, -clamp, clamp)
    if kind == "k3":
        return torch.exp(d) - d - 1
    if kind == "k1":
        return -d
    raise ValueError(f"unknown kl kind {kind!r}; expected 'k3' or 'k1'")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    kl_kind: KLKind = "k3",
    aggregation: Aggregation = "seq_mean_token_mean",
    weights: torch.Tensor | None = None,
    denominator: float | None = None,
    kl_clamp: float = 0.0,
    kl_bias_correction: bool = False,
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped-surrogate GRPO loss over completion tokens.

    logp/old_logp/ref_logp/mask: [B, T] (mask 1 on completion tokens); advantages: [B].
    "seq_mean_token_mean" averages each sequence's tokens, then sequences (GRPO paper);
    sequences without masked tokens are left out of that mean. "token_mean" averages all masked tokens (DAPO).
    "dr_grpo" sums the tokens and divides by sequences x ``max_length`` (the longest completion allowed, default T).
    kl_clamp: bounds ``ref - logp`` before the estimator (``kl_penalty``). kl_bias_correction: the KL term times the
    importance ratio (TRL's ``use_bias_correction_kl``), whose gradient follows KL(policy || ref).
    weights: [B] per-sequence weight; 0 leaves a sequence out of the loss and its count (dropped groups); default 1.
    denominator: what the summed per-sequence (or per-token) terms are divided by; default this batch's own count
    (``loss_denominator``). A batch split over micro-batches and ranks passes the whole batch's count (see
    ``PolicyTrainer.train_step``), so every sequence or token weighs the same wherever it landed.
    Returns (scalar loss, metrics as python floats).
    """
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(f"logp, old_logp, mask must share one [B, T] shape, got "
                         f"{tuple(logp.shape)}, {tuple(old_logp.shape)}, {tuple(mask.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B]={tuple(logp.shape[:1])}, got {tuple(advantages.shape)}")
    if ref_logp is not None and ref_logp.shape != logp.shape:
        raise ValueError(f"ref_logp shape {tuple(ref_logp.shape)} != logp shape {tuple(logp.shape)}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    if aggregation not in ("seq_mean_token_mean", "token_mean", "dr_grpo"):
        raise ValueError(f"unknown aggregation {aggregation!r}")

    w = torch.ones_like(advantages, dtype=torch.float32) if weights is None else weights.float()
    if w.shape != advantages.shape:
        raise ValueError(f"weights must be [B]={tuple(advantages.shape)}, got {tuple(w.shape)}")
    m = mask.bool()
    kept = m & (w > 0).unsqueeze(1)  # what the metrics describe
    logp = logp.float()  # ratios in bf16 are too coarse for clipping decisions
    adv = advantages.float().unsqueeze(1)
    # Differences zeroed outside the mask before exp(): an overflow at a padded position would be 0 * inf = NaN
    # in the backward pass, and that NaN would reach every parameter.
    ratio = torch.exp(torch.where(m, logp - old_logp.float(), torch.zeros_like(logp)))
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps_low, 1 + clip_eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)

    kl = None
    if ref_logp is not None:
        kl = kl_penalty(logp, torch.where(m, ref_logp.float(), logp.detach()), kl_kind, kl_clamp)
        if beta > 0:
            per_token = per_token + beta * (kl * ratio if kl_bias_correction else kl)

    if aggregation == "seq_mean_token_mean":
        per_seq = masked_mean(per_token, m, dim=1)  # 0 for a sequence without tokens
    else:  # token_mean, dr_grpo: token sums (the denominator differs)
        per_seq = torch.where(m, per_token, torch.zeros_like(per_token)).sum(dim=1)
    if denominator is None:
        denominator = loss_denominator(m.sum(dim=1).tolist(), w.tolist(), aggregation,
                                       logp.shape[1] if max_length is None else max_length)
    loss = (per_seq * w).sum() / float(denominator)

    with torch.no_grad():
        clip_active = clipped < unclipped  # the min took the clipped branch and it differs
        metrics = {
            "clip_fraction": masked_mean(clip_active.float(), kept).item(),
            "kl": masked_mean(kl, kept).item() if kl is not None else 0.0,
            "ratio_mean": masked_mean(ratio, kept).item(),
            "loss": loss.item(),
        }
    return loss, metrics


def loss_denominator(lengths, weights, aggregation: Aggregation, max_length: int | None = None) -> float:
    """What ``policy_loss`` divides by: the weighted count of sequences with tokens ("seq_mean_token_mean"), of
    their tokens ("token_mean"), or of all sequences times ``max_length``, the longest completion allowed
    ("dr_grpo", Dr. GRPO's constant normaliser); 1 when nothing counts. ``lengths``: completion tokens per sequence."""
    if aggregation == "dr_grpo":
        if not max_length:
            raise ValueError("the dr_grpo aggregation needs max_length (the rollout's max_tokens)")
        total = sum(weights) * max_length
    else:
        pairs = [(n, w) for n, w in zip(lengths, weights) if n > 0]
        total = sum(w for _, w in pairs) if aggregation == "seq_mean_token_mean" else sum(n * w for n, w in pairs)
    return float(total) if total > 0 else 1.0


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens[b, t]) under logits[b, t] (already aligned: logits[:, t] predicts tokens[:, t]), float32 [B, T]."""
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree on [B, T]")
    logits = logits.float()
    # gather - logsumexp avoids materialising a second [B, T, V] log_softmax tensor.
    picked = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax at each position, float32 [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    # where(): a -inf logit (banned token) gives 0 * -inf = NaN otherwise; its true contribution is 0.
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


def sft_loss(logp: torch.Tensor, mask: torch.Tensor, denominator: float | None = None) -> torch.Tensor:
    """Negative log-likelihood of the target (assistant) tokens; prompt and padding positions are outside ``mask``
    and carry no loss. Divided by ``denominator`` (default: this batch's target tokens): a batch split over
    micro-batches and ranks passes the whole batch's count, so every target token weighs the same."""
    if denominator is None:
        return -masked_mean(logp, mask)
    return -torch.where(mask.bool(), logp, torch.zeros_like(logp)).sum() / float(denominator)
