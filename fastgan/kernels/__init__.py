"""Fused Triton kernels, each file holding its torch reference, its Triton path and an ``impl=`` dispatcher.

- ``bn_leaky_relu``: BatchNorm + LeakyReLU/ReLU, training and eval, forward and backward.
- ``gradient_penalty``: WGAN-GP interpolation and the norm penalty over the input gradient.
- ``runtime``: the shared dispatch rule (``auto`` | ``triton`` | ``torch``) and loud one-time fallback.

Nothing is imported here: importing Triton fixes its interpreter mode for the process (see runtime.py),
so fastgan's models and losses import a kernel module only when a non-torch ``impl`` is asked for.
"""
