model G() {
    forward(c0: bf16[B, 6, 4, 4]) -> (bf16[B, 6, 4, 4]) {
        v0 = log_softmax(c0, axis=3)
        v1 = c0 * v0
        return v1
    }
}
