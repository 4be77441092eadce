"""A PyTorch state_dict of the equivalent torch.nn module loads into a shipei model by name and
gives the same outputs: the prelude's parameter names and layouts are PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shipei.ir.tolerance import compare

import shipei

torch.manual_seed(0)


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Non-default values everywhere (running stats included) so a swapped name would show."""
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            t.copy_(torch.randn_like(t) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return module.eval()


CASES = {
    "linear": ("Linear(6, 4)", "f32[B, 3, 6]", lambda: torch.nn.Linear(6, 4), (2, 3, 6)),
    "linear_no_bias": ("Linear(6, 4, bias=false)", "f32[B, 6]", lambda: torch.nn.Linear(6, 4, bias=False), (5, 6)),
    "conv2d": ("Conv2d(4, 6, 3, stride=2, padding=1, groups=2)", "f32[B, 4, 9, 9]",
               lambda: torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 9, 9)),
    "batchnorm2d": ("BatchNorm2d(3)", "f32[B, 3, 5, 5]", lambda: torch.nn.BatchNorm2d(3), (2, 3, 5, 5)),
    "layernorm": ("LayerNorm(8)", "f32[B, T, 8]", lambda: torch.nn.LayerNorm(8), (2, 5, 8)),
    "mha": ("MultiHeadAttention(8, 2)", "f32[B, T, 8]",
            lambda: torch.nn.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8)),
    "mha_causal": ("MultiHeadAttention(8, 2, causal=true)", "f32[B, T, 8]",
                   lambda: torch.nn.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8)),
}


def _torch_forward(name: str, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if name.startswith("mha"):
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1) if name == "mha_causal" else None
        return module(x, x, x, need_weights=False, attn_mask=mask)[0]
    return module(x)


def _source(layer: str, in_type: str) -> str:
    """A model wrapping one prelude layer as `m`; its output dims are fresh symbols, bound by the result."""
    dims = ", ".join(f"D{i}" for i in range(in_type.count(",") + 1))
    return f"model Wrapped() {{\n    m = {layer}\n    forward(x: {in_type}) -> f32[{dims}] {{ return m(x) }}\n}}\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_loads_by_name_and_matches(name: str) -> None:
    layer, in_type, make, shape = CASES[name]
    module = _randomize(make())
    compiled = shipei.compile(_source(layer, in_type), "torch")
    state = {f"m.{k}": v for k, v in module.state_dict().items()}
    exe = compiled.load(device="cpu")
    exe.load_weights(state)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = _torch_forward(name, module, torch.from_numpy(x)).numpy()
    (got,) = exe.run(x)
    worst = compare(got, expected, compiled.ir.outputs[0].dtype)
    assert worst.ok, worst


def test_embedding_state_dict() -> None:
    module = _randomize(torch.nn.Embedding(10, 4))
    src = "model E() {\n  m = Embedding(10, 4)\n  forward(i: i64[B, T]) -> f32[B, T, 4] { return m(i) }\n}\n"
    exe = shipei.compile(src, "torch").load(device="cpu")
    exe.load_weights({f"m.{k}": v for k, v in module.state_dict().items()})
    idx = np.array([[0, 9, 3], [4, 4, 1]], dtype=np.int64)
    assert np.array_equal(exe(idx), module(torch.from_numpy(idx)).detach().numpy())


def test_param_names_and_shapes_match_torch() -> None:
    """Every key of the torch modules' state_dicts exists in shipei with the same shape."""
    for name, (layer, in_type, make, _) in CASES.items():
        graph = shipei.parse(_source(layer, in_type))
        ours = {p.name: tuple(p.shape) for p in graph.params}
        theirs = {f"m.{k}": tuple(v.shape) for k, v in make().state_dict().items()}
        assert ours == theirs, name


def test_wrong_state_dict_is_a_clear_error() -> None:
    exe = shipei.compile(_source("Linear(6, 4)", "f32[B, 6]"), "torch").load(device="cpu")
    with pytest.raises(shipei.ShipeiError, match="missing m.bias"):
        exe.load_weights({"m.weight": np.zeros((4, 6), np.float32)})
    with pytest.raises(shipei.ShipeiError, match=r"expected f32\[4, 6\]"):
        exe.load_weights({"m.weight": np.zeros((6, 4), np.float32), "m.bias": np.zeros(4, np.float32)})
