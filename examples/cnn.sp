# A small ResNet for 32x32 RGB images: conv-bn-relu stem, residual blocks, pooling, classifier.
layer BasicBlock(channels: int) {
    conv1 = Conv2d(channels, channels, 3, padding=1, bias=false)
    bn1 = BatchNorm2d(channels)
    conv2 = Conv2d(channels, channels, 3, padding=1, bias=false)
    bn2 = BatchNorm2d(channels)

    forward(x: f32[N, channels, H, W]) -> f32[N, channels, H, W] {
        y = relu(bn1(conv1(x)))
        y = bn2(conv2(y))
        return relu(y + x)
    }
}

model ResNet(width: int = 16, blocks: int = 2, classes: int = 10) {
    stem = Conv2d(3, width, 3, padding=1, bias=false)
    bn = BatchNorm2d(width)
    for i in range(blocks) {
        layers[i] = BasicBlock(width)
    }
    pool = AdaptiveAvgPool2d(1)
    fc = Linear(width, classes)

    forward(x: f32[B, 3, 32, 32]) -> f32[B, classes] {
        y = relu(bn(stem(x)))
        y = max_pool2d(y, 2, stride=2)
        for i in range(blocks) {
            y = layers[i](y)
        }
        return fc(flatten(pool(y), start_dim=1))
    }
}
