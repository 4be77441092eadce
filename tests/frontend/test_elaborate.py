"""Elaboration: names, compile-time evaluation, layers, loops, signatures and their diagnostics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shipei.frontend import elaborate_file, elaborate_source
from shipei.ir.errors import ShipeiError
from shipei.ir.init import init_params
from shipei.ir.interpreter import interpret
from shipei.ir.types import DType, Sym

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_mlp_signature_params_and_outputs() -> None:
    g = elaborate_file(EXAMPLES / "mlp.sp")
    assert g.name == "MLP"
    assert [str(v.type) for v in g.inputs] == ["f32[B, 784]"]
    assert [str(v.type) for v in g.outputs] == ["f32[B, 10]"]
    assert [(p.name, str(p.type)) for p in g.params] == [
        ("fc1.weight", "f32[256, 784]"), ("fc1.bias", "f32[256]"),
        ("fc2.weight", "f32[10, 256]"), ("fc2.bias", "f32[10]")]


def test_compile_time_params_override_and_loops_unroll() -> None:
    g2 = elaborate_file(EXAMPLES / "transformer.sp", params={"n_layers": 2})
    g4 = elaborate_file(EXAMPLES / "transformer.sp", params={"n_layers": 4})
    assert len(g4.nodes) - len(g2.nodes) == 2 * (len(g2.nodes) - len(
        elaborate_file(EXAMPLES / "transformer.sp", params={"n_layers": 1}).nodes))
    assert "h.3.attn.out_proj.weight" in {p.name for p in g4.params}
    assert g4.outputs[0].shape == (Sym.named("B"), Sym.named("T"), 512)


def test_nodes_carry_the_users_line_not_the_preludes() -> None:
    g = elaborate_file(EXAMPLES / "mlp.sp")
    assert {n.loc.line for n in g.nodes} == {7, 8}
    assert all(n.loc.file.endswith("mlp.sp") for n in g.nodes)


def test_placement_blocks_and_annotations_set_node_devices() -> None:
    src = """
model P() {
    forward(x: f32[4]) -> (f32[4], f32[4]) {
        on gpu { y = relu(x) }
        @on(npu) z = y * 2.0
        return y, z
    }
}
"""
    g = elaborate_source(src)
    assert [(n.op, str(n.placement)) for n in g.nodes] == [("relu", "cuda"), ("constant", "ascend"), ("mul", "ascend")]


def test_indexing_slicing_and_unpacking_compute_what_numpy_does() -> None:
    src = """
model I() {
    forward(x: f32[4, 6]) -> (f32[6], f32[4, 3], f32[2, 2], f32[4]) {
        a, b = split(x, [2, 4], axis=1)
        return x[1], x[..., ::2], x[1:3, -2:], a[:, 0] + b[:, -1]
    }
}
"""
    g = elaborate_source(src)
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    got = interpret(g, [x], {})
    expected = [x[1], x[..., ::2], x[1:3, -2:], x[:, 0] + x[:, 5]]
    for a, e in zip(got, expected):
        np.testing.assert_array_equal(a, e)


def test_linear_and_attention_builtins_compute_what_torch_does() -> None:
    import torch
    import torch.nn.functional as F

    src = """
model A() {
    forward(x: f32[2, 5, 4], w: f32[4, 4], b: f32[4]) -> (f32[2, 5, 4], f32[2, 5, 4]) {
        h = linear(x, w, b)
        return linear(x, w), attention(h, x, x, causal=true)
    }
}
"""
    g = elaborate_source(src)
    assert [n.attrs for n in g.nodes if n.op == "attention"] == [{"scale": 0.5, "causal": True}]
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 5, 4), (4, 4), (4,)))
    tx, tw, tb = map(torch.from_numpy, (x, w, b))
    expected = [F.linear(tx, tw), F.scaled_dot_product_attention(F.linear(tx, tw, tb), tx, tx, is_causal=True)]
    for got, want in zip(interpret(g, [x, w, b], {}), expected):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_import_of_another_file(tmp_path: Path) -> None:
    (tmp_path / "blocks.sp").write_text("layer Double() {\n forward(x: f32[...]) -> f32[...] { return x * 2.0 }\n}\n")
    (tmp_path / "main.sp").write_text('import "blocks.sp"\nmodel M() {\n d = Double()\n'
                                      ' forward(x: f32[3]) -> f32[3] { return d(x) }\n}\n')
    g = elaborate_file(tmp_path / "main.sp")
    np.testing.assert_array_equal(interpret(g, [np.ones(3, np.float32)], {})[0], [2, 2, 2])


def test_weights_are_deterministic_per_seed() -> None:
    g = elaborate_file(EXAMPLES / "mlp.sp")
    a, b, c = init_params(g, 0), init_params(g, 0), init_params(g, 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])
    assert a["fc1.weight"].dtype == DType.f32.numpy and np.abs(a["fc1.weight"]).max() <= 1 / 784**0.5


MODEL = "model M(n: int = 2) {{\n    fc = Linear(4, 8)\n    forward(x: f32[B, 4]) -> f32[B, 8] {{\n{body}\n    }}\n}}\n"

# (forward body, expected line, expected column, message fragment); the body starts on line 4.
ERRORS = [
    ("        return fc(y)", 4, 19, "unknown name 'y'"),
    ("        return relu(fc(x)) + fc1(x)", 4, 30, "unknown name 'fc1'"),
    ("        return fc(x[:, 0:2])", 4, 18, "argument 'x' expects f32[B, 4], got f32[B, 2]"),
    ("        return fc(cast(x, f16))", 4, 18, "got f16[B, 4]"),
    ("        return relu(x)", 4, 9, "returns f32[B, 4] but declares f32[B, 8]"),
    ("        return softmax(fc(x), axs=1)", 4, 23, "softmax() has no argument 'axs'"),
    ("        if x { return fc(x) }\n        return fc(x)", 4, 12, "must be known at compile time"),
    ("        y = fc(x)", 3, 5, "ends without return"),
    ("        return fc(x) @ x", 4, 22, "contracts dim 8"),
    ("        on dpu { y = fc(x) }\n        return y", 4, 12, "unknown target or device 'dpu'"),
    ("        return fc(x) + 1.5 * n[0]", 4, 31, "the number 2 cannot be indexed"),
    ("        l = Linear(4, 8)\n        return l(x)", 4, 19, "must be created in the layer body"),
    ("        return reshape(fc(x), [3, -1])", 4, 23, "cannot reshape f32[B, 8]"),
    ("        a, b = split(x, 3, axis=1)\n        return fc(x)", 4, 21, "cannot split dim 4"),
    ("        return linear(x, fc.weight, fc.weight)", 4, 22, "bias must be [8]"),
    ("        return attention(x, x, reshape(x, [B, 2, 2]))", 4, 25, "q, k, v of one rank"),
    ("        y = reshape(x, [B, 2, 2])\n        return fc(reshape(attention(y, y, y, scale=-1.0), [B, 4]))", 5,
     36, "scale must be positive"),
]


@pytest.mark.parametrize("body, line, col, fragment", ERRORS)
def test_errors_point_at_the_exact_place(body: str, line: int, col: int, fragment: str) -> None:
    with pytest.raises(ShipeiError) as info:
        elaborate_source(MODEL.format(body=body), "m.sp")
    err = info.value
    assert fragment in err.message
    assert (err.loc.file, err.loc.line, err.loc.col) == ("m.sp", line, col), str(err)
    assert err.loc.text and "^" in str(err)


def test_unknown_layer_parameter_suggests_the_right_one() -> None:
    with pytest.raises(ShipeiError) as info:
        elaborate_source("model M() {\n  fc = Linear(4, 8, bais=false)\n"
                         "  forward(x: f32[4]) -> f32[8] { return fc(x) }\n}\n", "m.sp")
    assert "no parameter 'bais'" in info.value.message and info.value.hint == "did you mean 'bias'?"
    assert (info.value.loc.line, info.value.loc.col) == (2, 14)


def test_unknown_model_override_is_an_error() -> None:
    with pytest.raises(ShipeiError, match="no parameter 'n_layer'"):
        elaborate_file(EXAMPLES / "transformer.sp", params={"n_layer": 3})


def test_require_failure_inside_a_prelude_layer_names_the_requirement() -> None:
    src = ("model M() {\n  a = MultiHeadAttention(10, 3)\n"
           "  forward(x: f32[B, T, 10]) -> f32[B, T, 10] { return a(x) }\n}\n")
    with pytest.raises(ShipeiError, match="embed_dim must be divisible by num_heads"):
        elaborate_source(src, "m.sp")
