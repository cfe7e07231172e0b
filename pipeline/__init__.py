"""LeNet-5 variants on Fashion-MNIST (and MNIST, KMNIST, QMNIST): one module per DVC stage."""
