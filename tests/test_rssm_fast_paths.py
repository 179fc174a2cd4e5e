"""The fast paths of issue 17 compute what the plain step-by-step code computes.

`RSSM.observe` precomputes, outside its scan, the action's share of `img_in` and the
embedding's share of `obs_out`; here it is compared with a Python loop over `obs_step` (the
one-step code the policy and the DreamerV2 parity test use): outputs and gradients within 1e-5.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ditto_tf.rssm import RSSM

B, T, E, A = 3, 7, 24, 5


def inputs(seed: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    embed = tf.constant(rng.normal(size=(B, T, E)), tf.float32)
    action = tf.constant(np.eye(A)[rng.integers(A, size=(B, T))], tf.float32)
    is_first = np.zeros((B, T), bool)
    is_first[:, 0] = True
    is_first[1, T // 2] = True  # a reset inside a sequence
    return embed, action, tf.constant(is_first)


def step_by_step(rssm: RSSM, embed: tf.Tensor, action: tf.Tensor, is_first: tf.Tensor,
                 stochs: tf.Tensor | None = None) -> tuple[dict, dict]:
    """obs_step at every t; with `stochs` (B, T, S, K), the next step starts from those samples."""
    state, posts, priors = rssm.initial(B), [], []
    for t in range(T):
        post, prior = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t],
                                    sample=False)
        posts.append(post)
        priors.append(prior)
        state = dict(post, stoch=stochs[:, t]) if stochs is not None else post
    stack = lambda seq: {k: tf.stack([s[k] for s in seq], 1) for k in seq[0]}  # noqa: E731
    return stack(posts), stack(priors)


def make_rssm(dtype: str = "float32") -> RSSM:
    keras.utils.set_random_seed(1)
    rssm = RSSM(A, deter=16, hidden=12, stoch=4, discrete=3, dtype=dtype)
    embed, action, is_first = inputs(0)
    rssm.obs_step(rssm.initial(B), action[:, 0], embed[:, 0], is_first[:, 0])  # build
    return rssm


def test_observe_equals_obs_step_loop_outputs_and_gradients() -> None:
    rssm = make_rssm()
    embed, action, is_first = inputs(2)
    weights = {k: tf.constant(np.random.default_rng(3).normal(size=(B, T, *s)), tf.float32)
               for k, s in (("deter", [16]), ("logit", [4, 3]))}

    def loss_and_grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([embed, action])
            post, prior = fn(embed, action, is_first)
            loss = sum(tf.reduce_sum(s[k] * w) for s in (post, prior) for k, w in weights.items())
        variables = rssm.trainable_variables
        grads = tape.gradient(loss, [embed, action, *variables])
        return post, prior, grads, [v.path for v in variables]

    fast = loss_and_grads(lambda e, a, f: rssm.observe(e, a, f, sample=False))
    slow = loss_and_grads(lambda e, a, f: step_by_step(rssm, e, a, f))
    for ours, theirs in zip(fast[:2], slow[:2]):
        assert set(ours) == set(theirs) == {"deter", "stoch", "logit"}
        for key in ours:
            np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=key)
    assert len(fast[2]) == len(slow[2]) == 2 + len(rssm.trainable_variables)
    for name, ours, theirs in zip(["embed", "action", *fast[3]], fast[2], slow[2]):
        assert ours is not None and theirs is not None, name
        assert float(tf.reduce_max(tf.abs(theirs))) > 0.0, name  # every input takes part
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=name)


def test_sampled_observe_replays_through_obs_step() -> None:
    """With samples, each step's logits are what obs_step gives from the previous sample."""
    rssm = make_rssm()
    embed, action, is_first = inputs(4)
    post, prior = rssm.observe(embed, action, is_first, sample=True)
    stoch = post["stoch"].numpy()
    assert np.array_equal(stoch.sum(-1), np.ones(stoch.shape[:-1]))  # one-hot samples
    ref_post, ref_prior = step_by_step(rssm, embed, action, is_first, stochs=post["stoch"])
    np.testing.assert_allclose(post["logit"], ref_post["logit"], atol=1e-5)
    np.testing.assert_allclose(prior["logit"], ref_prior["logit"], atol=1e-5)
    np.testing.assert_allclose(post["deter"], ref_post["deter"], atol=1e-5)


def test_observe_under_mixed_precision_matches_obs_step() -> None:
    rssm = make_rssm("mixed_float16")
    embed, action, is_first = inputs(5)
    post, _ = rssm.observe(embed, action, is_first, sample=False)
    ref, _ = step_by_step(rssm, embed, action, is_first)
    assert post["deter"].dtype == tf.float16 and post["logit"].dtype == tf.float32
    np.testing.assert_allclose(post["logit"], ref["logit"], atol=1e-2)
