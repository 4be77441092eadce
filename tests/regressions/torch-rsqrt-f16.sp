model G() {
    forward(x2: f16[3], x4: f16[3]) -> (f16[3]) {
        v0 = rsqrt(x2)
        v1 = layer_norm(v0, v0, x4, eps=1e-05)
        return v1
    }
}
