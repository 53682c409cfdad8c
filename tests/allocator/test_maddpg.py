import numpy as np
import pytest
import torch

from dwcp.allocator.cluster import default_cluster
from dwcp.allocator.env import COST_UNIT, MISS_PENALTY, AllocationEnv
from dwcp.allocator.evaluate import replay
from dwcp.allocator.features import HOST_F, JOB_F
from dwcp.allocator.maddpg import Maddpg, MaddpgConfig, load_checkpoint
from dwcp.allocator.networks import NEG, NumpyActor, NumpyActors, joint_choice
from dwcp.allocator.policy import MaddpgPolicy
from dwcp.allocator.replay import ReplayBuffer
from dwcp.allocator.traces import generate
from dwcp.allocator.train import TRAIN_SERIES, TrainConfig, train


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_env_rewards_sum_to_minus_the_cost_and_never_overcommit():
    env = AllocationEnv(default_cluster(), lambda s: generate("google2019", s, hours=1.0), n_agents=4)
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    total, misses = 0.0, 0
    done = False
    while not done:
        _, _, mask = env.arrays()
        acts = {a: rng.dirichlet(np.ones(mask.shape[1] + 1)) for a in env.agents}
        _, rewards, terms, _, infos = env.step(acts)
        misses += env.sim.misses_since_last
        env.sim.state.check()
        total += rewards["group_0"]
        done = terms["group_0"]
    out = env.sim.out
    assert out.placed > 50 and misses == out.missed
    assert total == pytest.approx(-out.active_core_seconds / COST_UNIT - MISS_PENALTY * out.missed, rel=1e-6)


def test_numpy_actor_matches_torch_and_checkpoint_round_trips(tmp_path):
    m = Maddpg(MaddpgConfig(), seed=1)
    rng = np.random.default_rng(0)
    job = rng.random(JOB_F).astype(np.float32)
    hosts = rng.random((4, HOST_F)).astype(np.float32)
    mask = np.array([True, False, True, True])
    with torch.no_grad():
        ref = m.actors[2](torch.tensor(job)[None], torch.tensor(hosts)[None], torch.tensor(mask)[None])[0].numpy()
    np.testing.assert_allclose(NumpyActor(m.actors[2].state_dict()).logits(job, hosts, mask), ref, rtol=1e-5,
                               atol=1e-5)
    m.save(tmp_path / "ck.pt", include_critics=True)
    ck = load_checkpoint(tmp_path / "ck.pt")  # weights_only=True: tensors and plain values only
    back = Maddpg.load(tmp_path / "ck.pt")
    for a, b in zip(m.actors + m.critics, back.actors + back.critics, strict=True):
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), k
    assert ck["config"]["n_agents"] == 4
    torch.save({"format": "something-else"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a dwcp MADDPG checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_batched_numpy_actors_match_torch_per_agent():
    m = Maddpg(MaddpgConfig(), seed=2)
    rng = np.random.default_rng(1)
    job = rng.random(JOB_F).astype(np.float32)
    hosts = rng.random((4, 5, HOST_F)).astype(np.float32)
    mask = rng.random((4, 5)) < 0.6
    mask[3] = False  # an agent with no feasible host
    got = NumpyActors([a.state_dict() for a in m.actors]).logits(job, hosts, mask)
    with torch.no_grad():
        for i, actor in enumerate(m.actors):
            ref = actor(torch.tensor(job)[None], torch.tensor(hosts[i])[None], torch.tensor(mask[i])[None])[0]
            np.testing.assert_allclose(got[i], ref.numpy(), rtol=1e-5, atol=1e-4)
    assert np.all(got[3, :-1] == NEG)


def test_joint_choice_takes_the_highest_bid_over_feasible_hosts():
    acts = np.array([[0.5, 0.1, 0.4], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    mask = np.array([[True, True], [True, True], [False, False]])
    assert joint_choice(acts, mask) == (1, 1)  # bids: 0.5-0.4, 0.7-0.1; agent 2 has nothing feasible
    assert joint_choice(acts, np.array([[False, True], [False, False], [False, False]])) == (0, 1)
    assert joint_choice(acts, np.zeros((3, 2), dtype=bool)) is None


def test_update_moves_targets_softly():
    cfg = MaddpgConfig(batch=8, tau=0.5)
    m = Maddpg(cfg, seed=0)
    buf = ReplayBuffer(32, JOB_F, 4, 4, HOST_F)
    rng = np.random.default_rng(0)
    for _ in range(16):
        obs = (rng.random(JOB_F).astype(np.float32), rng.random((4, 4, HOST_F)).astype(np.float32),
               rng.random((4, 4)) < 0.7)
        buf.add(obs, m.act(obs, explore=True), -1.0, obs, False)
    before = [p.clone() for p in m.target_critics[0].parameters()]
    online_before = [p.clone() for p in m.critics[0].parameters()]
    losses = m.update(buf.sample(8, rng))
    assert np.isfinite(losses["critic_loss"]) and np.isfinite(losses["actor_loss"])
    for t, b, o, ob in zip(m.target_critics[0].parameters(), before, m.critics[0].parameters(), online_before,
                           strict=True):
        assert not torch.equal(o, ob)  # the online critic learned
        torch.testing.assert_close(t, 0.5 * b + 0.5 * o)  # Polyak step with tau = 0.5


@pytest.mark.slow
def test_short_training_run_beats_random(tmp_path):
    cfg = TrainConfig(episodes=6, seed=0, hours=1.0, warmup_steps=200, validate_every=3, validation_traces=1)
    result = train(cfg, tmp_path / "ck.pt")
    assert result.curve[-1]["random"] > 0
    assert result.best_cost < 0.8 * result.curve[-1]["random"]
    # Training, not a lucky initialisation: the same actors before any update do worse on validation.
    Maddpg(MaddpgConfig(), seed=0).save(tmp_path / "init.pt")
    val = generate(TRAIN_SERIES[0], 5_000, hours=1.0)
    untrained = replay(default_cluster(), val, MaddpgPolicy(tmp_path / "init.pt"))[0].cost_core_hours
    assert result.best_cost < untrained
    held_out = generate("azure_v2", 1_000_123, hours=2.0)
    learned = replay(default_cluster(), held_out, MaddpgPolicy(tmp_path / "ck.pt"))[0]
    from dwcp.allocator.baselines import RandomFit

    rand = replay(default_cluster(), held_out, RandomFit(0))[0]
    assert learned.cost_core_hours < rand.cost_core_hours
    assert (tmp_path / "ck.pt").stat().st_size < 200_000
