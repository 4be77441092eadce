# A small convolutional network for scikit-learn's 8x8 handwritten digits, and its loss.
model DigitsCNN(width: int = 16, classes: int = 10) {
    conv1 = Conv2d(1, width, 3, padding=1)
    conv2 = Conv2d(width, 2 * width, 3, padding=1)
    fc = Linear(2 * width * 16, classes)

    forward(x: f32[B, 64]) -> f32[B, classes] {
        y = relu(conv1(reshape(x, [B, 1, 8, 8])))
        y = max_pool2d(y, 2, stride=2)
        y = relu(conv2(y))
        return fc(flatten(y, start_dim=1))
    }

    loss(x: f32[B, 64], y: i64[B]) -> f32[] {
        return cross_entropy(forward(x), y)
    }
}
