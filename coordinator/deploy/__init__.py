"""Deployment glue: the TorchX component and its role entry points.
"""

__all__ = ["mesh_launch", "torchx_component"]
