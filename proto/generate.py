"""Regenerate the Python stubs: python proto/generate.py (needs grpcio-tools <= the oldest grpcio we run on)."""
import pathlib
import shutil
import tempfile

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Laid out as llmbench/proto/ so the generated imports name the installed package.
        pkg = pathlib.Path(tmp, "llmbench", "proto")
        pkg.mkdir(parents=True)
        shutil.copy(HERE / "llmbench.proto", pkg)
        rc = protoc.main(["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                          f"--grpc_python_out={tmp}", "llmbench/proto/llmbench.proto"])
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        for name in ("llmbench_pb2.py", "llmbench_pb2.pyi", "llmbench_pb2_grpc.py"):
            shutil.copy(pkg / name, HERE / name)


if __name__ == "__main__":
    main()
