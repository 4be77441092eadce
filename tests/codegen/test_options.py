"""Target options: a name the target's emit does not take is an error naming what it takes."""

from __future__ import annotations

import pytest
from shipei.codegen import TARGETS, emit
from shipei.ir.errors import ShipeiError

import shipei

MLP = """\
model M() {
    forward(x: f32[B, 4]) -> f32[B, 4] {
        return relu(x)
    }
}
"""


#: The options of the README's target table.
OPTIONS = {
    "torch": "amp, tf32, compile, channels_last, reuse_buffers, keep_buffers, cpu_arena, pack_linear, fuse_post_ops,"
             " onednn_graph",
    "jax": "compute_dtype, matmul_precision, pad_to",
    "tf": "compute_dtype",
    "mindspore": "mixed_precision, differentiated",
}


@pytest.mark.parametrize("target", TARGETS)
def test_an_unknown_option_names_the_target_and_its_options(target: str) -> None:
    with pytest.raises(ShipeiError, match=f"unknown option 'colour' for target '{target}'") as e:
        emit(shipei.parse(MLP), target, colour=True)
    assert e.value.hint == (f"{target} takes {OPTIONS[target]}" if OPTIONS[target] else f"{target} takes no options")


def test_a_misspelt_option_gets_a_suggestion() -> None:
    with pytest.raises(ShipeiError, match="unknown option 'compte_dtype' for target 'jax'") as e:
        shipei.compile(MLP, "jax", options={"compte_dtype": "bf16"})
    assert e.value.hint.startswith("did you mean 'compute_dtype'? jax takes compute_dtype, matmul_precision, pad_to")


@pytest.mark.parametrize("name", ["tf32", "channels_last", "reuse_buffers", "keep_buffers", "cpu_arena", "pack_linear",
                                  "fuse_post_ops", "onednn_graph"])
def test_torch_switches_take_only_bools(name: str) -> None:
    with pytest.raises(ShipeiError, match=f"torch: {name} must be True or False, got 'yes'"):
        shipei.compile(MLP, "torch", options={name: "yes"})
    assert shipei.compile(MLP, "torch", options={name: True}).module.source
