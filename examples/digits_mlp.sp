# A perceptron for scikit-learn's 8x8 handwritten digits, and the loss it is trained on.
model DigitsMLP(hidden: int = 64, classes: int = 10) {
    fc1 = Linear(64, hidden)
    fc2 = Linear(hidden, classes)

    forward(x: f32[B, 64]) -> f32[B, classes] {
        h = relu(fc1(x))
        return fc2(h)
    }

    loss(x: f32[B, 64], y: i64[B]) -> f32[] {
        return cross_entropy(forward(x), y, label_smoothing=0.05)
    }
}
