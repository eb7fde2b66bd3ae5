"""What the Triton kernels can take, as rules that import no triton: a backend asks them before it
loads a kernel, and the kernels check their inputs with the same rule."""


def takes_head_dim(head_dim: int) -> bool:
    """The attention kernels tile head_dim in one power-of-two block of at least 16."""
    return head_dim >= 16 and not head_dim & (head_dim - 1)
