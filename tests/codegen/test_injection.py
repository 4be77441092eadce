"""Hostile names and paths on all four targets: the generated source holds user text only as
validated names, literals and comments, loads, computes what the reference does, and leaves the
frameworks as they were."""

from __future__ import annotations

import io
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest
from shipei.codegen import TARGETS
from shipei.ir.tolerance import compare

import shipei
from shipei.testing.fuzz_frontend import unsafe_code

HOSTILE_PATH = 'x"""; __import__("os").system("touch PWNED"); """.sp'

#: A name in every position a user name can take, each one a name the generated modules, Python or
#: a framework already use: the layer `self`, its argument `device`, the sub-layer `lambda`, the
#: param `weights`, the forward argument `torch`, the local `F`, the model `super`, its argument
#: `np`, the layer list `class`, the sub-layer `run`, the dim `jnp` and the input `os`.
HOSTILE_NAMES = """
layer self(device: int) {
    `lambda` = Linear(device, device)
    param weights: f32[device] = ones()
    forward(torch: f32[B, device]) -> f32[B, device] {
        F = `lambda`(torch)
        return F * weights
    }
}

model super(np: int = 4) {
    `class`[0] = self(np)
    run = Linear(np, np)
    forward(x: f32[jnp, np], os: f32[jnp, np]) -> f32[jnp, np] {
        KeptBuffers = `class`[0](x)
        return run(KeptBuffers) + os
    }
}
"""


def _user_text_only_in_literals(source: str, marker: str) -> None:
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if marker in tok.string:
            assert tok.type in (tokenize.STRING, tokenize.COMMENT), f"{marker} as code: {tok.line}"


@pytest.fixture(scope="module")
def torch_module_attributes() -> set[str]:
    import torch

    return set(dir(torch.nn.Module))


@pytest.mark.parametrize("target", TARGETS)
def test_a_hostile_file_name_stays_text(target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / HOSTILE_PATH
    path.write_text("model M() { forward(x: f32[B, 3]) -> f32[B, 3] { return relu(x) } }\n")
    compiled = shipei.compile(path, target)
    assert unsafe_code(compiled.source) == ""
    _user_text_only_in_literals(compiled.source, "PWNED")
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(compiled.load(device="cpu").run(x)[0], np.maximum(x, 0))
    assert not (tmp_path / "PWNED").exists()


def test_the_saved_module_run_as_a_script_runs_no_user_text(tmp_path: Path) -> None:
    path = tmp_path / HOSTILE_PATH
    path.write_text("model M() { forward(x: f32[B, 3]) -> f32[B, 3] { return relu(x) } }\n")
    module = shipei.compile(path, "torch").save(tmp_path / "out")
    done = subprocess.run([sys.executable, str(module)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("opt", [0, 3])
def test_hostile_names_in_every_position_load_and_compute(target: str, opt: int,
                                                          torch_module_attributes: set[str]) -> None:
    import torch

    compiled = shipei.compile(HOSTILE_NAMES, target, opt=opt)
    assert unsafe_code(compiled.source) == ""
    assert sorted(compiled.weights) == ["class.0.lambda.bias", "class.0.lambda.weight", "class.0.weights",
                                        "run.bias", "run.weight"]
    exe = compiled.load(device="cpu")
    rng = np.random.default_rng(0)
    x, os_ = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    got = exe.run(x, os_)[0]
    assert compare(got, shipei.reference(compiled.ir, [x, os_], compiled.weights)[0], shipei.ir.types.DType.f32).ok
    assert set(dir(torch.nn.Module)) == torch_module_attributes
    assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).shape == (1, 2)


@pytest.mark.parametrize("name", ["training", "_parameters", "_modules", "_buffers", "_version", "train", "eval",
                                  "to", "forward", "state_dict", "_kept"])
def test_a_name_torch_modules_define_is_refused_where_the_user_wrote_it(
        name: str, torch_module_attributes: set[str]) -> None:
    import torch

    source = (f"model M() {{\n    {name} = Linear(4, 4)\n"
              f"    forward(x: f32[B, 4]) -> f32[B, 4] {{ return {name}(x) }}\n}}")
    with pytest.raises(shipei.ShipeiError, match=f"'{name}' .* torch.nn.Module defines it") as info:
        shipei.compile(source, "torch")
    assert (info.value.loc.line, info.value.loc.text.strip()) == (2, f"{name} = Linear(4, 4)")
    for target in ("jax", "tf", "mindspore"):  # whose programs keep params by name, not as attributes
        assert shipei.compile(source, target).load(device="cpu").run(np.ones((1, 4), np.float32))[0].shape == (1, 4)
    assert set(dir(torch.nn.Module)) == torch_module_attributes


@pytest.mark.parametrize("opt", [0, 1, 2, 3])
def test_a_refused_name_points_at_the_declaration_through_a_param_computed_from_it(opt: int) -> None:
    """A bias-free Linear reads its weight transposed: at -O0 and -O1 the program computes the
    transpose from the weight when it loads (a param of its own, `_buffers.weight_transpose`), and
    the error about that param points where the user declared the layer."""
    source = ("model M() {\n    _buffers = Linear(4, 4, bias=false)\n"
              "    forward(x: f32[B, 4]) -> f32[B, 4] { return _buffers(x) }\n}")
    with pytest.raises(shipei.ShipeiError, match="'_buffers' .* torch.nn.Module defines it") as info:
        shipei.compile(source, "torch", opt=opt)
    assert (info.value.loc.line, info.value.loc.text.strip()) == (2, "_buffers = Linear(4, 4, bias=false)")
