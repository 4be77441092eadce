model G() {
    param w0: f32[] = uniform(low=-1.0, high=1.0)

    forward(x7: f32[4, 2, 3, 4]) -> (f32[], f32[4, 2, 3, 4]) {
        v0 = sigmoid(w0)
        v1 = mean(v0, keepdim=true)
        v2 = v0 / x7
        return v1, v2
    }
}
