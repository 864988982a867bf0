import math

import pytest
import torch

from seedr1.algo.losses import (entropy_from_logits, kl_penalty, loss_denominator, masked_mean, policy_loss,
                                token_logprobs)

LN2 = math.log(2.0)


def _example(requires_grad=False):
    """The [2, 3] example: old_logp = 0, so ratio = exp(logp) is set directly.

    ratios  row 0: [1.0, 1.5, 0.5]  A = +1
            row 1: [1.1, 0.7, 5.0]  A = -2, last token masked out (its 5.0 would change every number)
    eps_low = 0.2, eps_high = 0.3 -> clip range [0.8, 1.3]
    per-token loss = -min(r*A, clip(r)*A):
      row 0: r=1.0 -> -1.0 | r=1.5 -> -min(1.5, 1.3) = -1.3 (clipped) | r=0.5 -> -min(0.5, 0.8) = -0.5
      row 1: r=1.1 -> -min(-2.2, -2.2) = 2.2 | r=0.7 -> -min(-1.4, -1.6) = 1.6 (clipped) | masked
    """
    ratios = torch.tensor([[1.0, 1.5, 0.5], [1.1, 0.7, 5.0]])
    logp = ratios.log().clone().requires_grad_(requires_grad)
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, old, adv, mask


KW = dict(clip_eps_low=0.2, clip_eps_high=0.3)


def test_seq_mean_token_mean():
    logp, old, adv, mask = _example()
    loss, m = policy_loss(logp, old, adv, mask, **KW)
    # row means: (-1.0 - 1.3 - 0.5) / 3 = -0.933333 ; (2.2 + 1.6) / 2 = 1.9 ; mean = (-2.8/3 + 1.9) / 2 = 2.9/6
    assert loss.item() == pytest.approx(2.9 / 6, abs=1e-6)  # 0.483333
    assert m["loss"] == pytest.approx(0.483333, abs=1e-6)
    assert m["clip_fraction"] == pytest.approx(2 / 5)       # r=1.5 (A>0) and r=0.7 (A<0) of 5 masked tokens
    assert m["ratio_mean"] == pytest.approx(4.8 / 5, abs=1e-6)  # (1.0 + 1.5 + 0.5 + 1.1 + 0.7) / 5 = 0.96
    assert m["kl"] == 0.0                                   # beta = 0, ref None: no KL
    assert all(isinstance(v, float) for v in m.values())


def test_token_mean():
    logp, old, adv, mask = _example()
    loss, m = policy_loss(logp, old, adv, mask, aggregation="token_mean", **KW)
    # (-2.8 + 3.8) / 5 masked tokens = 0.2
    assert loss.item() == pytest.approx(0.2, abs=1e-6)
    assert m["clip_fraction"] == pytest.approx(0.4)


@pytest.mark.parametrize("agg, whole", [("seq_mean_token_mean", 2.9 / 6), ("token_mean", 0.2)])
def test_micro_batches_with_the_batch_denominator_sum_to_the_whole_batch_loss(agg, whole):
    # The example's rows in two micro-batches (3 and 2 tokens). Each divided by its own count, they would give
    # -2.8/3 + 3.8/2 = 0.967 for either aggregation; divided by the whole batch's count (2 sequences / 5 tokens),
    # they sum to the whole-batch loss, and so do their gradients.
    logp, old, adv, mask = _example(requires_grad=True)
    full, _ = policy_loss(logp, old, adv, mask, aggregation=agg, **KW)
    (g_full,) = torch.autograd.grad(full, logp)
    denominator = loss_denominator([3, 2], [1.0, 1.0], agg)
    assert denominator == (2.0 if agg == "seq_mean_token_mean" else 5.0)
    parts = [policy_loss(logp[i:i + 1], old[i:i + 1], adv[i:i + 1], mask[i:i + 1], aggregation=agg,
                         denominator=denominator, **KW)[0] for i in range(2)]
    assert sum(p.item() for p in parts) == pytest.approx(whole, abs=1e-6)
    (g_parts,) = torch.autograd.grad(sum(parts), logp)
    torch.testing.assert_close(g_parts, g_full)


def test_zero_weight_sequence_is_out_of_loss_count_and_gradient():
    # Row 1 weighted 0 (a dropped group): the loss is row 0's alone (-2.8/3 either way), KL included, and row 1
    # gets no gradient; metrics describe row 0's tokens only.
    logp, old, adv, mask = _example(requires_grad=True)
    ref = torch.full((2, 3), -0.5)
    for agg in ("seq_mean_token_mean", "token_mean"):
        loss, m = policy_loss(logp, old, adv, mask, ref_logp=ref, beta=0.1, aggregation=agg,
                              weights=torch.tensor([1.0, 0.0]), **KW)
        alone, m0 = policy_loss(logp[:1], old[:1], adv[:1], mask[:1], ref_logp=ref[:1], beta=0.1, aggregation=agg, **KW)
        assert loss.item() == pytest.approx(alone.item(), abs=1e-6)
        assert m["clip_fraction"] == pytest.approx(m0["clip_fraction"]) and m["kl"] == pytest.approx(m0["kl"])
        (g,) = torch.autograd.grad(loss, logp)
        assert (g[1] == 0).all() and (g[0] != 0).all()
    assert loss_denominator([3, 2, 0], [1.0, 0.0, 1.0], "token_mean") == 3.0
    assert loss_denominator([3, 2, 0], [1.0, 0.0, 1.0], "seq_mean_token_mean") == 1.0
    assert loss_denominator([0], [1.0], "token_mean") == 1.0  # nothing counts: no division by zero


def test_overflow_at_a_masked_position_leaves_gradients_finite():
    # exp(ref - logp) overflows at the padded position (1, 2); masked out, it must not turn the backward into NaN
    # (0 * inf), nor must a huge ratio there.
    logp, old, adv, mask = _example(requires_grad=True)
    ref = torch.zeros(2, 3)
    ref[1, 2] = 500.0
    old = old.clone()
    old[1, 2] = -500.0
    loss, _ = policy_loss(logp, old, adv, mask, ref_logp=ref, beta=0.1, **KW)
    (g,) = torch.autograd.grad(loss, logp)
    assert torch.isfinite(loss) and torch.isfinite(g).all() and g[1, 2] == 0


def test_clipping_asymmetric_eps():
    # eps_low = 0.1, eps_high = 0.3 -> clip range [0.9, 1.3]; one token per row
    ratios = torch.tensor([[1.4], [0.5], [0.5], [1.4], [1.25], [0.5]])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0, 0.0])
    #  A=+1 r=1.4 : -min(1.4, 1.3)   = -1.3  clipped (above 1 + eps_high)
    #  A=+1 r=0.5 : -min(0.5, 0.9)   = -0.5  not clipped (A>0 is never clipped below)
    #  A=-1 r=0.5 : -min(-0.5, -0.9) =  0.9  clipped (below 1 - eps_low = 0.9; symmetric 0.3 would give 0.7)
    #  A=-1 r=1.4 : -min(-1.4, -1.3) =  1.4  not clipped (A<0 is never clipped above)
    #  A=+1 r=1.25: -min(1.25, 1.25) = -1.25 not clipped (inside eps_high=0.3 though outside eps_low)
    #  A=0        : 0, not clipped
    # mean over 6 sequences: (-1.3 - 0.5 + 0.9 + 1.4 - 1.25 + 0) / 6 = -0.75 / 6 = -0.125
    loss, m = policy_loss(ratios.log(), torch.zeros(6, 1), adv, torch.ones(6, 1), clip_eps_low=0.1, clip_eps_high=0.3)
    assert loss.item() == pytest.approx(-0.125, abs=1e-6)
    assert m["clip_fraction"] == pytest.approx(2 / 6)
    # with symmetric eps 0.3 the third row gives 0.7 and the r=1.25 row is still unclipped: -0.95 / 6
    loss_sym, m_sym = policy_loss(ratios.log(), torch.zeros(6, 1), adv, torch.ones(6, 1),
                                  clip_eps_low=0.3, clip_eps_high=0.3)
    assert loss_sym.item() == pytest.approx(-0.95 / 6, abs=1e-6)
    assert m_sym["clip_fraction"] == pytest.approx(2 / 6)


def test_kl_penalty_values():
    logp = torch.zeros(3)
    ref = torch.tensor([LN2, -LN2, 0.0])
    # k3: d = ref - logp; exp(d) - d - 1 -> [2 - ln2 - 1, 0.5 + ln2 - 1, 0] = [0.306853, 0.193147, 0]
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), torch.tensor([0.306853, 0.193147, 0.0]),
                               atol=1e-6, rtol=0)
    # k1: logp - ref
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), torch.tensor([-LN2, LN2, 0.0]))
    with pytest.raises(ValueError, match="k2"):
        kl_penalty(logp, ref, "k2")


def _ref_for(logp):
    # ref - logp = +ln2 on row 0, -ln2 on row 1 -> k3 = 0.306853 (row 0), 0.193147 (row 1)
    return logp.detach() + torch.tensor([[LN2], [-LN2]])


def test_kl_k3_seq_mean():
    logp, old, adv, mask = _example()
    loss, m = policy_loss(logp, old, adv, mask, ref_logp=_ref_for(logp), beta=0.1, **KW)
    # row 0 adds 0.1 * 0.306853, row 1 adds 0.1 * 0.193147; their mean adds 0.1 * (0.306853 + 0.193147) / 2
    # and 0.306853 + 0.193147 = (1 - ln2) + (ln2 - 0.5) = 0.5 exactly -> 2.9/6 + 0.025 = 0.508333
    assert loss.item() == pytest.approx(2.9 / 6 + 0.025, abs=1e-6)
    # kl metric: masked token mean = (3 * 0.306853 + 2 * 0.193147) / 5 = (2 - ln2) / 5 = 0.261371
    assert m["kl"] == pytest.approx((2 - LN2) / 5, abs=1e-6)


def test_kl_k3_token_mean():
    logp, old, adv, mask = _example()
    loss, _ = policy_loss(logp, old, adv, mask, ref_logp=_ref_for(logp), beta=0.1, aggregation="token_mean", **KW)
    # 0.2 + 0.1 * (2 - ln2) / 5 = 0.2 + 0.026137 = 0.226137
    assert loss.item() == pytest.approx(0.2 + 0.1 * (2 - LN2) / 5, abs=1e-6)
    # beta scales linearly: 0.2 + 0.5 * 0.261371 = 0.330685
    loss, _ = policy_loss(logp, old, adv, mask, ref_logp=_ref_for(logp), beta=0.5, aggregation="token_mean", **KW)
    assert loss.item() == pytest.approx(0.330685, abs=1e-6)


def test_kl_k1():
    logp, old, adv, mask = _example()
    loss, m = policy_loss(logp, old, adv, mask, ref_logp=_ref_for(logp), beta=0.1, kl_kind="k1", **KW)
    # k1 = logp - ref: -ln2 on row 0, +ln2 on row 1: row means cancel -> loss unchanged 2.9/6
    assert loss.item() == pytest.approx(2.9 / 6, abs=1e-6)
    # token mean of k1 = (-3 ln2 + 2 ln2) / 5 = -ln2 / 5 = -0.138629
    assert m["kl"] == pytest.approx(-LN2 / 5, abs=1e-6)


def test_beta_zero_with_ref_reports_kl_but_does_not_add_it():
    logp, old, adv, mask = _example()
    loss, m = policy_loss(logp, old, adv, mask, ref_logp=_ref_for(logp), beta=0.0, **KW)
    assert loss.item() == pytest.approx(2.9 / 6, abs=1e-6)
    assert m["kl"] == pytest.approx((2 - LN2) / 5, abs=1e-6)


def test_beta_positive_needs_ref():
    logp, old, adv, mask = _example()
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old, adv, mask, beta=0.1)


def test_gradient_only_through_masked_unclipped_tokens():
    logp, old, adv, mask = _example(requires_grad=True)
    loss, _ = policy_loss(logp, old, adv, mask, aggregation="token_mean", **KW)
    loss.backward()
    # d/dlogp of -r*A/N with r = exp(logp) is -A*r/N (N = 5); clipped tokens and masked tokens get 0
    # row 0: -1*1.0/5 = -0.2, clipped -> 0, -1*0.5/5 = -0.1 ; row 1: 2*1.1/5 = 0.44, clipped -> 0, masked -> 0
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.2, 0.0, -0.1], [0.44, 0.0, 0.0]]))
    assert logp.grad[1, 2] == 0.0


def test_gradient_seq_mean():
    logp, old, adv, mask = _example(requires_grad=True)
    loss, _ = policy_loss(logp, old, adv, mask, **KW)
    loss.backward()
    # seq mean: row 0 weight 1/(2*3), row 1 weight 1/(2*2)
    # row 0: -1.0/6 = -0.166667, 0, -0.5/6 = -0.083333 ; row 1: 2*1.1/4 = 0.55, 0, 0
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 6, 0.0, -0.5 / 6], [0.55, 0.0, 0.0]]))


def test_masked_positions_may_hold_garbage():
    logp, old, adv, mask = _example()
    logp = logp.clone()
    logp[1, 2] = float("nan")  # e.g. padding
    for agg in ("seq_mean_token_mean", "token_mean"):
        loss, m = policy_loss(logp, old, adv, mask, aggregation=agg, **KW)
        assert not math.isnan(loss.item()) and not math.isnan(m["ratio_mean"])


def test_zero_mask_row_gives_no_nan():
    logp, old, adv, _ = _example(requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    loss, m = policy_loss(logp, old, adv, mask, **KW)
    # the empty row is left out of the sequence mean: loss = row 0 mean = -2.8 / 3
    assert loss.item() == pytest.approx(-2.8 / 3, abs=1e-6)
    loss_tok, _ = policy_loss(logp, old, adv, mask, aggregation="token_mean", **KW)
    assert loss_tok.item() == pytest.approx(-2.8 / 3, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[1] == 0).all()
    assert m["clip_fraction"] == pytest.approx(1 / 3)  # only r=1.5 of row 0's 3 tokens


def test_all_masked_out():
    logp, old, adv, _ = _example(requires_grad=True)
    mask = torch.zeros(2, 3)
    for agg in ("seq_mean_token_mean", "token_mean"):
        loss, m = policy_loss(logp, old, adv, mask, aggregation=agg, **KW)
        assert loss.item() == 0.0
        assert m == {"clip_fraction": 0.0, "kl": 0.0, "ratio_mean": 0.0, "loss": 0.0}
        loss.backward()  # still a graph: a rank with nothing to learn can join the all-reduce
    assert (logp.grad == 0).all()


def test_shape_validation():
    logp, old, adv, mask = _example()
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, old, adv[:1], mask)
    with pytest.raises(ValueError, match="shape"):
        policy_loss(logp, old[:, :2], adv, mask)
    with pytest.raises(ValueError, match="aggregation"):
        policy_loss(logp, old, adv, mask, aggregation="sum")


def test_bf16_inputs_computed_in_float32():
    logp, old, adv, mask = _example()
    loss, _ = policy_loss(logp.bfloat16(), old.bfloat16(), adv, mask, **KW)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(2.9 / 6, abs=1e-2)  # bf16 logp rounding only


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 0, 1], [0, 0, 0]])
    # all: (1 + 3) / 2 = 2 ; per row: [2, 0 (empty row)] ; per column: [1, 0, 3]
    assert masked_mean(x, mask).item() == 2.0
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(masked_mean(x, mask, dim=0), torch.tensor([1.0, 0.0, 3.0]))


def test_token_logprobs():
    # logits [1, 2, 3]: logsumexp = ln(e + e^2 + e^3) = 3.407606 -> log p = [-2.407606, -1.407606, -0.407606]
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]], dtype=torch.bfloat16)
    tokens = torch.tensor([[2, 1]])
    out = token_logprobs(logits, tokens)
    assert out.dtype == torch.float32 and out.shape == (1, 2)
    # uniform over 3 -> -ln 3 = -1.098612
    torch.testing.assert_close(out, torch.tensor([[-0.407606, -math.log(3)]]), atol=1e-5, rtol=0)
    # agrees with log_softmax + gather
    ref = torch.log_softmax(logits.float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError):
        token_logprobs(logits, torch.tensor([[2]]))


def test_entropy_from_logits():
    # uniform over 4 -> ln 4 = 1.386294 ; [1, 2, 3] -> 0.832396 ; one -inf (banned) logit of 3 with 2 equal -> ln 2
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, float("-inf")], [0.0, 0.0, float("-inf"), float("-inf")]]])
    ent = entropy_from_logits(logits)
    assert ent.dtype == torch.float32 and ent.shape == (1, 3)
    torch.testing.assert_close(ent, torch.tensor([[math.log(4), 0.832396, LN2]]), atol=1e-5, rtol=0)


def test_sft_loss_only_counts_target_tokens():
    from seedr1.algo.losses import sft_loss

    logp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -7.0, -8.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(sft_loss(logp, mask)) == pytest.approx((1.0 + 2.0 + 0.5) / 3)
    # whatever sits outside the mask (prompt, padding) changes nothing, not even a NaN
    noisy = torch.where(mask, logp, torch.full_like(logp, float("nan")))
    assert float(sft_loss(noisy, mask)) == pytest.approx((1.0 + 2.0 + 0.5) / 3)


def test_sft_micro_batches_over_the_batch_token_count_make_the_batch_mean():
    # Rows of 2 and 1 target tokens: per-row means would average (1.5 + 0.5) / 2 = 1.0; over the batch's 3 tokens
    # the micro-batches sum to the whole batch's token mean, 3.5 / 3.
    from seedr1.algo.losses import sft_loss

    logp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -7.0, -8.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    parts = [float(sft_loss(logp[i:i + 1], mask[i:i + 1], denominator=3)) for i in range(2)]
    assert sum(parts) == pytest.approx(3.5 / 3) == pytest.approx(float(sft_loss(logp, mask)))


def test_kl_clamp_bounds_ref_minus_logp_before_the_estimator():
    logp, ref = torch.zeros(3), torch.tensor([20.0, -20.0, 1.0])
    # d clamped to [11, -11, 1]: exp(11) - 12, exp(-11) + 10, e - 2
    torch.testing.assert_close(kl_penalty(logp, ref, "k3", clamp=11.0),
                               torch.tensor([math.exp(11) - 12, math.exp(-11) + 10, math.e - 2]))
    assert kl_penalty(logp, ref, "k3")[0].item() == pytest.approx(math.exp(20) - 21, rel=1e-6)  # off by default
    torch.testing.assert_close(kl_penalty(logp, ref, "k1", clamp=11.0), torch.tensor([-11.0, 11.0, -1.0]))


def test_kl_bias_correction_weighs_the_kl_term_by_the_ratio():
    logp, old, adv, mask = _example()
    loss, _ = policy_loss(logp, old, adv, mask, ref_logp=_ref_for(logp), beta=0.1, kl_bias_correction=True, **KW)
    # row 0: ratios 1.0, 1.5, 0.5 (mean 1.0) x k3 0.306853; row 1: ratios 1.1, 0.7 (mean 0.9) x k3 0.193147
    # (-2.8 / 3 + 0.1 * 0.306853 + 3.8 / 2 + 0.1 * 0.193147 * 0.9) / 2 = 0.5073676
    assert loss.item() == pytest.approx(0.5073676, abs=1e-6)
    # TRL's formula: the per-token KL times exp(logp - old_logp), inside the same aggregation
    ratio = torch.exp(logp - old)
    kl = kl_penalty(logp, _ref_for(logp))
    trl = -torch.minimum(ratio * adv[:, None], torch.clamp(ratio, 0.8, 1.3) * adv[:, None]) + 0.1 * kl * ratio
    assert loss.item() == pytest.approx(masked_mean(trl, mask, dim=1).mean().item(), abs=1e-6)


def test_dr_grpo_divides_token_sums_by_sequences_times_the_longest_completion():
    logp, old, adv, mask = _example()
    # token sums: row 0 -2.8, row 1 3.8 -> 1.0; / (2 sequences x max_length)
    assert policy_loss(logp, old, adv, mask, aggregation="dr_grpo", **KW)[0].item() == pytest.approx(1.0 / 6)
    loss, _ = policy_loss(logp, old, adv, mask, aggregation="dr_grpo", max_length=10, **KW)
    assert loss.item() == pytest.approx(1.0 / 20)
    assert loss_denominator([3, 2], [1.0, 1.0], "dr_grpo", 10) == 20.0
    assert loss_denominator([3, 0], [1.0, 0.0], "dr_grpo", 10) == 10.0  # a weight-0 sequence is out of the count
    with pytest.raises(ValueError, match="max_length"):
        loss_denominator([3, 2], [1.0, 1.0], "dr_grpo")
