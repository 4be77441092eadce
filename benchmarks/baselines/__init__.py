"""Hand-written reference programs for `benchmarks/generated_vs_handwritten.py`.

One module per framework, each with the three example models (mlp, cnn, transformer) written the
way an expert in that framework would write them, loading the SAME .safetensors file by the
PyTorch-style names shipei uses. Every module has the same small interface:

    build(model, weights_path, **shape) -> callable   # framework tensors in, framework tensor out
    to_tensor(array)                                  # numpy -> the framework's CPU tensor
    to_numpy(tensor)                                  # and back (blocks until ready)
    sync(tensor)                                      # block until the result is computed

The modules import only their framework, numpy and safetensors, so each can be read on its own.
"""
