# A two-layer perceptron for 28x28 images.
model MLP(hidden: int = 256, classes: int = 10) {
    fc1 = Linear(784, hidden)
    fc2 = Linear(hidden, classes)

    forward(x: f32[B, 784]) -> f32[B, classes] {
        h = relu(fc1(x))
        return softmax(fc2(h), axis=-1)
    }
}
