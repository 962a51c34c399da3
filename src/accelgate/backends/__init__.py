"""The backend axis. Importing this package registers every built-in backend, once.

Families, one module each: `torch_backends` (eager reference, torch.compile, channels-last,
fuse-qkv, bf16), `quantization` (fp8 layerwise casting, torchao int8), `caching` (DeepCache,
tomesd, diffusers cache hooks), `onediff` (OneFlow / nexfort, CUDA only), and, in their own registry,
`damage` (what broken accelerations do, for `--accelgate-selftest`). User backends are
built from a config's `factory = "module:function"` by `user.user_backend`.
"""
# Registration order is report order: the reference first, then by family.
from accelgate.backends import torch_backends  # noqa: F401  (registers)
from accelgate.backends import quantization  # noqa: F401  (registers)
from accelgate.backends import caching  # noqa: F401  (registers)
from accelgate.backends import onediff  # noqa: F401  (registers)
from accelgate.backends.registry import BACKENDS, BackendSpec, Requirement, get_backend, register
from accelgate.backends.user import resolve_factory, user_backend

__all__ = ["BACKENDS", "BackendSpec", "Requirement", "get_backend", "register", "resolve_factory", "user_backend"]
