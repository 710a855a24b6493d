"""Client-level DP: Flower's fixed-clipping wrappers with fedecg's accounting across rounds."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi
from opacus.accountants import RDPAccountant

from fedecg.config.privacy import DPConfig
from fedecg.errors import PrivacyError
from fedecg.federated.inprocess import InProcessGrid
from fedecg.privacy.accounting import epsilon_of
from fedecg.privacy.client_dp import RELEASES, ClientLevelDP
from fedecg.privacy.clipping import client_clipping_mod
from fedecg.privacy.sample_dp import EPSILON

ROUNDS = {"pretrain": 2, "lab": 1, "diagnosis": 2}
SITES = 4
UPDATES = [np.array([3.0, 4.0]), np.array([0.3, 0.4]), np.array([-6.0, 0.0]), np.array([0, 1.0])]
SIZES = [500.0, 20.0, 20.0, 20.0]  # very unequal sites: uniform weighting must ignore this


def hand_epsilon(noise: float, releases: int, delta: float) -> float:
    """Gaussian mechanism composed ``releases`` times: RDP α·T/(2σ²), converted to (ε, δ)
    with Balle et al. 2020 (Theorem 21) over Opacus's default orders."""
    orders = np.array(RDPAccountant.DEFAULT_ALPHAS, dtype=float)
    rdp = releases * orders / (2 * noise**2)
    eps = rdp - (np.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)
    return float(np.min(eps))


def config(clipping: str = "server", noise: float | None = 2.0, target: float = 8.0) -> DPConfig:
    return DPConfig(mode="client", target_epsilon=target,
                    client={"clipping_norm": 1.0, "noise_multiplier": noise,
                            "clipping": clipping})


def weights(values: np.ndarray) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.asarray(values, dtype=np.float64))})


def fake_site(message: Message, context) -> Message:
    """A site whose update is fixed; replies with example counts like fedecg sites."""
    index = context.node_id - 100
    received = message.content["arrays"]["w"].numpy()
    metrics = MetricRecord({"num-examples": SIZES[index]})
    if message.metadata.message_type.startswith("train"):
        arrays = weights(received + UPDATES[index])
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


def clipped_mean() -> np.ndarray:
    clipped = [u * min(1.0, 1.0 / np.linalg.norm(u)) for u in UPDATES]
    return np.mean(clipped, axis=0)


def test_client_epsilon_equals_the_hand_computation():
    dp = ClientLevelDP.start(config(noise=2.0), ROUNDS, SITES)
    assert dp.ledger.delta == pytest.approx(0.01)  # 0.1/4 rounded down to a power of ten
    for _ in range(5):
        dp.ledger.step(dp.noise_multiplier, 1.0)
    assert dp.metrics()[EPSILON] == pytest.approx(hand_epsilon(2.0, 5, 0.01), rel=1e-9)
    assert dp.metrics()[RELEASES] == 5


def test_calibrated_noise_spends_at_most_the_target_over_all_planned_rounds():
    dp = ClientLevelDP.start(config(noise=None, target=3.0), ROUNDS, SITES)
    planned = epsilon_of(dp.plan.history(dp.noise_multiplier), dp.ledger.delta)
    assert planned <= 3.0 and planned == pytest.approx(hand_epsilon(dp.noise_multiplier, 5, 0.01))
    assert hand_epsilon(dp.noise_multiplier * 0.995, 5, 0.01) > 3.0


def test_too_little_noise_for_the_planned_rounds_fails_at_start():
    with pytest.raises(PrivacyError, match=r"noise_multiplier 0\.5: the planned .* spend epsilon"):
        ClientLevelDP.start(config(noise=0.5, target=1.0), ROUNDS, SITES)
    with pytest.raises(PrivacyError, match="at least 2 sites"):
        ClientLevelDP.start(config(), ROUNDS, 1)


@pytest.mark.parametrize("server_optimizer", [FedAdam, FedYogi, FedAvgM])
def test_server_optimizers_with_state_are_refused(server_optimizer):
    """FedAvgM's momentum (like Adam's moments) is built from the un-noised average."""
    dp = ClientLevelDP.start(config(), ROUNDS, SITES)
    with pytest.raises(PrivacyError, match=f"strategy {server_optimizer.__name__}: .*fedprox"):
        dp.wrap(server_optimizer(), SITES)
    assert dp.wrap(FedProx(proximal_mu=0.1), SITES) is not None


@pytest.mark.parametrize("clipping", ["server", "client"])
def test_wrapped_fedavg_clips_averages_uniformly_and_accounts_each_round(clipping):
    dp = ClientLevelDP.start(config(clipping, noise=1e-4, target=1e12), ROUNDS, SITES)
    strategy = dp.wrap(FedAvg(fraction_evaluate=1.0, min_available_nodes=SITES), SITES)
    app = fake_site if clipping == "server" else (
        lambda m, c: client_clipping_mod(m, c, fake_site))
    grid = InProcessGrid(app, [{}] * SITES)
    result = strategy.start(grid, weights(np.zeros(2)), num_rounds=3,
                            train_config=ConfigRecord({"stage-index": 0}))
    final = result.arrays["w"].numpy()
    np.testing.assert_allclose(final, 3 * clipped_mean(), atol=1e-3)
    assert dp.ledger.history == [(1e-4, 1.0, 3)]
    last = result.train_metrics_clientapp[3]
    assert last[EPSILON] == pytest.approx(dp.ledger.epsilon())


def test_client_clipping_mod_is_a_no_op_without_a_clipping_norm():
    grid = InProcessGrid(fake_site, [{}])
    message = Message(RecordDict({"arrays": weights(np.zeros(2)),
                                  "config": ConfigRecord({})}), dst_node_id=100,
                      message_type="train")
    context = grid.contexts[100]
    reply = client_clipping_mod(message, context, fake_site)
    np.testing.assert_allclose(reply.content["arrays"]["w"].numpy(), UPDATES[0])
    message.content["config"]["clipping_norm"] = 1.0
    reply = client_clipping_mod(message, context, fake_site)
    np.testing.assert_allclose(reply.content["arrays"]["w"].numpy(), [0.6, 0.8])


def test_saved_client_ledger_continues_after_a_restart(tmp_path):
    path = tmp_path / "run" / "client-dp-ledger.json"
    dp = ClientLevelDP.open(config(noise=2.0), ROUNDS, SITES, path)
    dp.record_release()
    dp.record_release()
    again = ClientLevelDP.open(config(noise=2.0), ROUNDS, SITES, path)
    assert again.ledger.history == [(2.0, 1.0, 2)]
    again.record_release()
    assert again.metrics()[EPSILON] == pytest.approx(hand_epsilon(2.0, 3, 0.01), rel=1e-9)


def test_a_round_with_a_dropped_site_is_refused_not_under_accounted():
    """Noise σ·C/m is calibrated for the mean of m sites; averaging fewer would leak more."""
    dp = ClientLevelDP.start(config(noise=2.0), ROUNDS, SITES)
    strategy = dp.wrap(FedAvg(fraction_evaluate=1.0, min_available_nodes=SITES), SITES)
    grid = InProcessGrid(fake_site, [{}] * SITES)
    messages = list(strategy.configure_train(1, weights(np.zeros(2)),
                                             ConfigRecord({"stage-index": 0}), grid))
    replies = grid.send_and_receive(messages[:-1])  # one site never answers
    with pytest.raises(PrivacyError, match="3 of 4 sites sent a usable update"):
        strategy.aggregate_train(1, replies)
    assert dp.ledger.history == []  # nothing released, nothing spent
