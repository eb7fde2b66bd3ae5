"""The coordinator: LoadGen run centrally, queries streamed to the agents of the mesh.

Imports run one way: data, scoring, loadgen, mesh, observe <- run <- report <- commands.
"""

__all__ = []
