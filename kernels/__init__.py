"""Custom Triton kernels, one operation per module; installed as the package ``streamtrack_kernels``."""
