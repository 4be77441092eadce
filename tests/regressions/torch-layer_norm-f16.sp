model G() {
    param w0: f16[1] = uniform(low=-1.0, high=1.0)

    forward(c0: f16[1]) -> (f16[1]) {
        v0 = layer_norm(c0, c0, w0, eps=1e-05)
        return v0
    }
}
