"""A mesh node: a warm model behind llmbench.v1's gRPC service.

Imports run one way: kernels <- attention <- model <- engine <- server <- commands.
"""

__all__ = ["attention"]
