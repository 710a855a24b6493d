"""State dict ↔ ArrayRecord: exact round trips, wrapper prefixes, and key checks."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord
from torch import nn

from fedecg.errors import FederationError
from fedecg.federated.params import (
    check_keys,
    load_arrays,
    plain_state,
    record_bytes,
    strip_prefix,
    to_arrays,
    to_state,
)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Linear(4, 2))


class Wrapped(nn.Module):
    """Stands in for Opacus's GradSampleModule, which keeps the model as ``_module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._module = module


def test_round_trip_is_bit_exact():
    net = _net(0)
    state = to_state(to_arrays(net))
    assert list(state) == list(net.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value) and state[key].dtype == value.dtype


def test_selected_keys_only_and_bytes_counted():
    record = to_arrays(_net(0), keys=["0.weight", "2.bias"])
    assert list(record.keys()) == ["0.weight", "2.bias"]
    # 12 + 2 float32 values, plus numpy headers and key names
    assert 14 * 4 < record_bytes(record) < 14 * 4 + 400


def test_wrapper_prefix_is_stripped_out_and_mapped_back_in():
    wrapped = Wrapped(_net(0))
    assert all(key.startswith("_module.") for key in wrapped.state_dict())
    record = to_arrays(wrapped)
    assert set(record.keys()) == set(_net(0).state_dict())
    plain = _net(1)
    load_arrays(plain, record)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                 wrapped.state_dict().values(), strict=True))
    other = Wrapped(_net(2))
    load_arrays(other, to_arrays(_net(3)))
    assert torch.equal(other._module[0].weight, _net(3)[0].weight)


def test_strip_prefix_nested():
    assert strip_prefix("_orig_mod._module.a.b") == "a.b"
    assert strip_prefix("a._module.b") == "a._module.b"


def test_partial_load_leaves_other_keys():
    target, source = _net(0), _net(1)
    before = target[2].weight.clone()
    load_arrays(target, to_arrays(source, keys=["0.weight", "0.bias"]))
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[2].weight, before)


def test_missing_and_unexpected_keys_are_named():
    record = to_arrays(_net(0), keys=["0.weight", "0.bias"])
    with pytest.raises(FederationError, match=r"site3: .*missing \[2.weight\].*unexpected none"):
        load_arrays(_net(1), record, expected=["0.weight", "0.bias", "2.weight"], where="site3")
    with pytest.raises(FederationError, match="does not have"):
        load_arrays(nn.Linear(3, 4), record)
    with pytest.raises(FederationError, match=r"unexpected \[x\]"):
        check_keys({"a", "x"}, {"a"}, "here")


def test_shape_mismatch_is_named():
    record = ArrayRecord({"0.weight": to_arrays(_net(0))["2.weight"]})
    with pytest.raises(FederationError, match=r"'0.weight' has shape \(2, 4\).*\(4, 3\)"):
        load_arrays(_net(1), record)


def test_asking_for_keys_the_model_lacks_fails():
    with pytest.raises(FederationError, match="no such parameters"):
        to_arrays(_net(0), keys=["encoder.weight"])


def test_plain_state_of_wrapped_equals_inner():
    inner = _net(0)
    assert list(plain_state(Wrapped(inner))) == list(inner.state_dict())


def test_zero_dim_tensors_keep_their_shape():
    state = {"scale": torch.tensor(2.5), "vector": torch.ones(3)}
    back = to_state(to_arrays(state))
    assert back["scale"].shape == () and float(back["scale"]) == 2.5
