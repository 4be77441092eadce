model G() {
    param w0: bf16[] = uniform(low=-1.0, high=1.0)

    forward(c0: bf16[1, 2, 3, 5]) -> (bf16[], bf16[1, 2, 3, 5]) {
        v0 = transpose(w0, perm=[])
        v1 = w0 + c0
        return v0, v1
    }
}
