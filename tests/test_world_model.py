"""World model: straight-through latents, KL balancing, observe / imagine, overfitting real
pixel CartPole frames, checkpoint round trip and the mixed-precision step. Tiny `debug` sizes."""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from ditto_tf import dists
from ditto_tf.checkpoints import Checkpointer
from ditto_tf.config import Config, load_config
from ditto_tf.data.episodes import load_episodes, save_episode
from ditto_tf.envs import make_env
from ditto_tf.driver import RandomActor, drive
from ditto_tf.errors import UserError
from ditto_tf.world_model import WorldModel, WorldModelTrainer


def write_cartpole_episodes(config: Config, directory: pathlib.Path, count: int, seed: int,
                            actor: Callable[[Any], Any] = lambda env: RandomActor(env.act_space),
                            first_index: int = 0) -> None:
    """Real pixel CartPole episodes of `actor(env)` (random by default), recorded by the driver
    collect uses, in the episode file format, indexed from `first_index`."""
    env = make_env(config, seed=seed)
    drive([env], actor(env), [count], seeds=lambda _, index: seed * 1000 + index, record=True,
          on_episode=lambda e: save_episode(directory, e.data, first_index + e.number))
    env.close()


def batch_from(episodes: list[dict[str, np.ndarray]], length: int, starts: list[tuple[int, int]]) -> dict:
    keys = ("image", "action", "reward", "is_first", "is_terminal")
    batch = {k: np.stack([episodes[e][k][s:s + length] for e, s in starts]) for k in keys}
    batch["is_first"][:, 0] = True
    return batch


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(["debug"], ["--precision", "float32"])


@pytest.fixture(scope="module")
def cartpole(config: Config, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, np.ndarray]]:
    directory = tmp_path_factory.mktemp("cartpole")
    write_cartpole_episodes(config, directory, count=3, seed=1)
    return load_episodes(directory)


def test_straight_through_sample_is_onehot_and_passes_gradients() -> None:
    logits = tf.Variable(tf.random.normal([64, 3, 5]))
    weights = tf.random.normal([64, 3, 5])
    with tf.GradientTape(persistent=True) as tape:
        dist = dists.OneHotDist(logits, event_dims=1)
        sample = dist.sample()
        objective = tf.reduce_sum(sample * weights)
        reference = tf.reduce_sum(dist.probs * weights)
    values = sample.numpy()
    assert set(np.unique(values)) <= {0.0, 1.0}
    np.testing.assert_array_equal(values.sum(-1), np.ones([64, 3]))
    grad = tape.gradient(objective, logits)
    assert grad is not None and np.abs(grad.numpy()).max() > 0
    np.testing.assert_allclose(grad.numpy(), tape.gradient(reference, logits).numpy(), rtol=1e-5, atol=1e-7)


def _hand_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(p || q) of independent categoricals, summed over the S axis, with numpy."""
    p = np.exp(p_logits - p_logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.exp(q_logits - q_logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    return (p * (np.log(p) - np.log(q))).sum((-2, -1))


def test_kl_balancing_equals_hand_computation() -> None:
    rng = np.random.default_rng(0)
    post_np = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    prior_np = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    hand = _hand_kl(post_np.astype(np.float64), prior_np.astype(np.float64))
    post, prior = tf.Variable(post_np), tf.Variable(prior_np)
    with tf.GradientTape(persistent=True) as tape:
        loss, value = dists.kl_balance(post, prior, balance=0.8, free=0.0)
        plain = tf.reduce_mean(dists.OneHotDist(post, 1).kl(dists.OneHotDist(prior, 1)))
    np.testing.assert_allclose(value.numpy(), hand, rtol=1e-5)
    np.testing.assert_allclose(loss.numpy(), hand.mean(), rtol=1e-5)  # both terms share a value
    # Balancing: the prior gets 0.8 of the plain KL gradient, the posterior 0.2.
    np.testing.assert_allclose(tape.gradient(loss, prior).numpy(),
                               0.8 * tape.gradient(plain, prior).numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(tape.gradient(loss, post).numpy(),
                               0.2 * tape.gradient(plain, post).numpy(), rtol=1e-4, atol=1e-7)
    # Free nats clip the batch-mean KL of each term: below the threshold there is no gradient.
    free = float(hand.mean()) + 1.0
    with tf.GradientTape() as tape:
        clipped, _ = dists.kl_balance(post, prior, balance=0.8, free=free)
    assert clipped.numpy() == pytest.approx(free)
    assert all(g is None or not np.any(g.numpy()) for g in tape.gradient(clipped, [post, prior]))


def test_observe_imagine_shapes_and_reset(config: Config, cartpole: list) -> None:
    model = WorldModel(config, action_size=2)
    rssm, r = model.rssm, config.world_model.rssm
    batch = batch_from(cartpole, 8, [(0, 0), (1, 2)])
    data = model.preprocess(batch)
    embed = model.encoder(data["image"])
    assert embed.shape == (2, 8, model.embed_size)
    is_first = data["is_first"].numpy().copy()
    is_first[:, 3] = True  # a new episode starts at t=3
    post, prior = rssm.observe(embed, data["action"], is_first, sample=False)
    for state in (post, prior):
        assert state["deter"].shape == (2, 8, r.deter)
        assert state["stoch"].shape == (2, 8, r.stoch, r.discrete)
        assert state["logit"].shape == (2, 8, r.stoch, r.discrete)
    np.testing.assert_array_equal(post["stoch"].numpy().sum(-1), 1.0)
    assert rssm.get_feat(post).shape == (2, 8, r.stoch * r.discrete + r.deter)
    # Reset: from t=3 on, the filter equals a fresh filter started at t=3.
    fresh, _ = rssm.observe(embed[:, 3:], data["action"][:, 3:], is_first[:, 3:], sample=False)
    for key in ("deter", "logit"):
        np.testing.assert_allclose(post[key][:, 3:].numpy(), fresh[key].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(post["deter"][:, 2].numpy(), post["deter"][:, 3].numpy())

    start = {k: v[:, -1] for k, v in post.items()}
    policy = lambda feat: tf.one_hot(tf.random.uniform([tf.shape(feat)[0]], 0, 2, tf.int32), 2)
    seq = tf.function(lambda s: rssm.imagine(policy, s, 5))(start)
    assert seq["deter"].shape == (6, 2, r.deter) and seq["stoch"].shape == (6, 2, r.stoch, r.discrete)
    assert seq["feat"].shape == (6, 2, rssm.feat_size) and seq["action"].shape == (6, 2, 2)
    np.testing.assert_array_equal(seq["action"][0].numpy(), 0.0)
    np.testing.assert_array_equal(seq["action"][1:].numpy().sum(-1), 1.0)
    np.testing.assert_allclose(seq["deter"][0].numpy(), start["deter"].numpy())

    @tf.function
    def own_loop(state: dict, horizon: int) -> tf.Tensor:  # the agents' pattern: img_step in a loop
        def body(i: tf.Tensor, state: dict) -> tuple:
            return i + 1, rssm.img_step(state, tf.one_hot(tf.zeros([2], tf.int32), 2))
        return tf.while_loop(lambda i, s: i < horizon, body, (tf.constant(0), state))[1]["deter"]

    assert own_loop(start, 4).shape == (2, r.deter)


def test_loss_falls_when_overfitting_real_episodes(config: Config, cartpole: list) -> None:
    model = WorldModel(config, action_size=2)
    trainer = WorldModelTrainer(model, config)
    batches = [batch_from(cartpole, 8, [(e, s) for e in range(3) for s in (0, offset)][:4])
               for offset in (1, 3)]
    losses = [float(trainer.train(batches[i % 2])["model_loss"]) for i in range(150)]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert np.isfinite(losses).all()
    assert last < 0.9 * first, (first, last)


def test_checkpoint_round_trip_is_exact(config: Config, cartpole: list, tmp_path: pathlib.Path) -> None:
    model = WorldModel(config, action_size=2)
    trainer = WorldModelTrainer(model, config)
    batch = batch_from(cartpole, 8, [(0, 0), (1, 0), (2, 0), (0, 2)])
    for _ in range(2):
        trainer.train(batch)
    Checkpointer(tmp_path, model=model, optimizer=trainer.optimizer).save(2)
    # A model-only checkpoint holds every model variable (layers kept in lists are tracked too).
    model_only = tf.train.Checkpoint(model=model).save(str(tmp_path / "model_only" / "ckpt"))
    saved = [n for n, _ in tf.train.list_variables(model_only) if n.startswith("model/")]
    assert len(saved) == len(model.variables)

    other = WorldModel(config, action_size=2)
    other_trainer = WorldModelTrainer(other, config)
    step = Checkpointer(tmp_path, model=other, optimizer=other_trainer.optimizer).restore()
    assert step == 2
    assert len(model.variables) == len(other.variables) > 0
    for a, b in zip(model.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(trainer.optimizer.variables, other_trainer.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    data = model.preprocess(batch)
    out_a = model.rssm.observe(model.encoder(data["image"]), data["action"], data["is_first"], sample=False)
    out_b = other.rssm.observe(other.encoder(data["image"]), data["action"], data["is_first"], sample=False)
    np.testing.assert_array_equal(out_a[0]["logit"].numpy(), out_b[0]["logit"].numpy())


def test_mixed_precision_step_runs(cartpole: list) -> None:
    config = load_config(["debug"], ["--precision", "mixed"])
    model = WorldModel(config, action_size=2)
    assert model.compute_dtype == "float16" and model.rssm.compute_dtype == "float16"
    assert all(v.dtype == "float32" for v in model.variables)
    trainer = WorldModelTrainer(model, config)
    batch = batch_from(cartpole, 8, [(0, 0), (1, 0), (2, 0), (0, 2)])
    # Dynamic loss scaling skips the first steps while it halves a scale that overflows float16.
    metrics = [trainer.train(batch) for _ in range(8)]
    before = [v.numpy().copy() for v in model.trainable_variables]
    metrics.append(trainer.train(batch))
    assert all(np.isfinite(float(m["model_loss"])) for m in metrics)
    assert 0 < float(metrics[-1]["loss_scale"]) <= 32768
    assert int(trainer.optimizer.iterations.numpy()) >= 1  # applied (not skipped) updates
    embed = model.encoder(model.preprocess(batch)["image"])
    assert embed.dtype == tf.float16
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert all(changed)  # the unscaled gradients reached every weight, biases included


def test_decoder_kernels_must_give_the_image_size() -> None:
    config = load_config(["debug"], ["--env.size", "64,64"])
    with pytest.raises(UserError, match="decoder.kernels"):
        WorldModel(config, action_size=2)


# ----------------------------------------------------------------------------- vector observations

@pytest.fixture(scope="module")
def vector_config() -> Config:
    return load_config(["cartpole", "vector", "debug"], ["--precision", "float32"])


@pytest.fixture(scope="module")
def vector_dir(vector_config: Config, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("vector_cartpole")
    write_cartpole_episodes(vector_config, directory, count=3, seed=1)
    return directory


def test_vector_world_model_shapes_loss_and_standardisation(vector_config: Config,
                                                            vector_dir: pathlib.Path,
                                                            tmp_path: pathlib.Path) -> None:
    """MLP encoder and decoder on the CartPole state: shapes, the Normal(mean, 1) NLL on
    standardised vectors computed by hand, statistics saved with the model, and the loss falls."""
    from ditto_tf.wm_data import vector_statistics

    keras.utils.set_random_seed(0)
    episodes = load_episodes(vector_dir)
    assert "image" not in episodes[0] and episodes[0]["vector"].shape[1:] == (4,)
    model = WorldModel(vector_config, action_size=2, shapes={"vector": (4,)})
    assert model.encoder is None and model.decoder is None
    units = vector_config.world_model.encoder.mlp_units
    assert model.embed_size == units
    stats = vector_statistics([vector_dir], ["vector"])
    states = np.concatenate([e["vector"] for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["vector"][0], states.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["vector"][1], np.maximum(states.std(0), 1e-2), rtol=1e-4)
    model.set_statistics(stats)

    keys = ("vector", "action", "is_first")
    batch = {k: np.stack([e[k][s:s + 8] for e in episodes for s in (0, 2)]) for k in keys}
    batch["is_first"][:, 0] = True
    data = model.preprocess(batch)
    standardised = (batch["vector"] - stats["vector"][0]) / stats["vector"][1]
    np.testing.assert_allclose(data["vector"].numpy(), standardised, rtol=1e-5, atol=1e-5)
    embed = model.embed(data)
    assert embed.shape == (6, 8, units)
    loss, outs, metrics = model.model_loss(data)
    assert "image_loss" not in metrics and outs["embed"].shape == (6, 8, units)
    mean = model.mlp_decoder(outs["feat"]).numpy()
    assert mean.shape == (6, 8, 4)
    hand = (0.5 * np.square(standardised - mean) + 0.5 * np.log(2 * np.pi)).sum(-1).mean()
    assert float(metrics["vector_loss"]) == pytest.approx(hand, rel=1e-4)
    kl = float(metrics["kl_loss"]) * vector_config.world_model.kl_scale
    assert float(loss) == pytest.approx(hand + kl, rel=1e-4)

    trainer = WorldModelTrainer(model, vector_config)
    losses = [float(trainer.train(batch)["vector_loss"]) for _ in range(60)]
    floor = 4 * 0.5 * np.log(2 * np.pi)  # the NLL of a perfect mean: the squared error falls
    assert np.mean(losses[-5:]) - floor < 0.6 * (np.mean(losses[:5]) - floor), losses[::10]

    Checkpointer(tmp_path, model=model, optimizer=trainer.optimizer).save(1)
    other = WorldModel(vector_config, action_size=2, shapes={"vector": (4,)})
    assert Checkpointer(tmp_path, model=other, optimizer=WorldModelTrainer(other, vector_config).optimizer).restore() == 1
    np.testing.assert_array_equal(other.standardizers[0].mean.numpy(), stats["vector"][0])
    np.testing.assert_array_equal(other.standardizers[0].std.numpy(), stats["vector"][1])
    np.testing.assert_array_equal(other.embed(other.preprocess(batch)).numpy(), model.embed(data).numpy())


def test_keys_select_by_regex_and_rank(vector_config: Config) -> None:
    """DreamerV2's selection: cnn keys are rank-3 matches, mlp keys rank-1 matches, '$^' none."""
    from ditto_tf.obs_keys import needs_image, select

    shapes = {"image": (32, 32, 1), "vector": (4,)}
    default = select(load_config(["debug"]), shapes)
    assert default.encoder_cnn == ["image"] and default.encoder_mlp == [] and default.stored == ["image"]
    vector = select(vector_config, shapes)
    assert vector.encoder_cnn == [] and vector.encoder_mlp == ["vector"] and vector.stored == ["vector"]
    assert needs_image(load_config(["debug"])) and not needs_image(vector_config)
    both = load_config(["debug"], ["--world_model.encoder.mlp_keys", "vec.*"])
    assert select(both, shapes).encoder_mlp == ["vector"] and select(both, shapes).decoder_mlp == []
    with pytest.raises(UserError, match=r"world_model.encoder.cnn_keys: '\[' is not a regular"):
        select(load_config(["debug"], ["--world_model.encoder.cnn_keys", "["]), shapes)


def test_binary_vector_head_on_the_minatar_grid(vector_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """`decoder.mlp_dist: binary` on real MinAtar Breakout grids: the grid is read as is (identity
    statistics), the loss is the Bernoulli NLL computed by hand and falls; a vector outside
    [0, 1] (CartPole's state) and an unknown dist are one-line errors naming the file or key."""
    from ditto_tf.wm_data import vector_statistics

    keras.utils.set_random_seed(0)
    flags = ["--world_model.decoder.mlp_dist", "binary", "--precision", "float32"]
    config = load_config(["minatar", "minatar_breakout", "vector", "debug"], flags)
    write_cartpole_episodes(config, tmp_path, count=4, seed=3)  # any config's env: here MinAtar
    episodes = load_episodes(tmp_path)
    size = episodes[0]["vector"].shape[1]
    assert size == 400 and set(np.unique(episodes[0]["vector"])) == {0.0, 1.0}
    model = WorldModel(config, action_size=6, shapes={"vector": (size,)})
    stats = vector_statistics([tmp_path], ["vector"], binary=True)
    np.testing.assert_array_equal(stats["vector"][0], np.zeros(size))
    np.testing.assert_array_equal(stats["vector"][1], np.ones(size))
    model.set_statistics(stats)

    keys = ("vector", "action", "is_first")
    batch = {k: np.stack([e[k][:6] for e in episodes]) for k in keys}  # random play: short episodes
    batch["is_first"][:, 0] = True
    data = model.preprocess(batch)
    np.testing.assert_array_equal(data["vector"].numpy(), batch["vector"])
    _, outs, metrics = model.model_loss(data)
    logits = model.mlp_decoder(outs["feat"]).numpy().astype(np.float64)
    target = batch["vector"]
    hand = (np.logaddexp(0.0, logits) - target * logits).sum(-1).mean()  # -log Bernoulli
    assert float(metrics["vector_loss"]) == pytest.approx(hand, rel=1e-4)
    trainer = WorldModelTrainer(model, config)
    losses = [float(trainer.train(batch)["vector_loss"]) for _ in range(80)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses[::8]

    with pytest.raises(UserError, match=r"vector_cartpole\d*/.*\.npz: key 'vector' holds values in "
                                         r"\[.*\], but world_model.decoder.mlp_dist binary needs"):
        vector_statistics([vector_dir], ["vector"], binary=True)
    with pytest.raises(UserError, match=r"^world_model.decoder.mlp_dist: 'bernoulli' is not one of mse, binary$"):
        WorldModel(load_config(["minatar", "minatar_breakout", "vector", "debug"],
                               ["--world_model.decoder.mlp_dist", "bernoulli"]), 6, {"vector": (size,)})
