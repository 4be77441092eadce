# A GPT-style decoder: token and position embeddings, n_layers pre-norm blocks of causal
# self-attention and an MLP, a final layer norm and the LM head.
layer Block(d_model: int, n_heads: int) {
    ln_1 = LayerNorm(d_model)
    attn = MultiHeadAttention(d_model, n_heads, causal=true)
    ln_2 = LayerNorm(d_model)
    fc = Linear(d_model, 4 * d_model)
    proj = Linear(4 * d_model, d_model)

    forward(x: f32[B, T, d_model]) -> f32[B, T, d_model] {
        x = x + attn(ln_1(x))
        return x + proj(gelu(fc(ln_2(x))))
    }
}

model GPT(vocab: int = 512, d_model: int = 128, n_heads: int = 4, n_layers: int = 2, max_len: int = 64) {
    wte = Embedding(vocab, d_model)
    wpe = Embedding(max_len, d_model)
    for i in range(n_layers) {
        h[i] = Block(d_model, n_heads)
    }
    ln_f = LayerNorm(d_model)
    lm_head = Linear(d_model, vocab, bias=false)

    forward(tokens: i64[B, T]) -> f32[B, T, vocab] {
        x = wte(tokens) + wpe(arange(T))
        for i in range(n_layers) {
            x = h[i](x)
        }
        return lm_head(ln_f(x))
    }

    loss(tokens: i64[B, T], targets: i64[B, T]) -> f32[] {
        return cross_entropy(reshape(forward(tokens), [B * T, vocab]), reshape(targets, [B * T]))
    }
}
