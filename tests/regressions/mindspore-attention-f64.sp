model G() {
    forward(x3: f64[1, 2, 4, 8]) -> (f64[1, 2, 4, 8]) {
        v0 = attention(x3, x3, x3, scale=0.35, causal=true)
        return v0
    }
}
