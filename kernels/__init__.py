"""Triton kernels of pyops, installed as ``pyops.kernels``.

Plain ``@triton.jit`` functions and the helpers that launch them on given tensors; no autograd or
dispatch logic (that lives in :mod:`pyops`). Under ``TRITON_INTERPRET=1`` they run on CPU tensors.
"""
