model G() {
    forward(x2: f16[2], c0: f16[2, 4, 3, 2]) -> (f16[2, 4, 3, 2]) {
        v0 = sigmoid(c0)
        v1 = layer_norm(v0, x2, x2, eps=1e-05)
        return v1
    }
}
