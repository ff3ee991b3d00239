"""Install the `bench` extra for `make bench`, without granian or uvloop if they will not
install here.

granian ships binary wheels for the common platforms only; elsewhere it needs a Rust
toolchain, and uvloop a C compiler. The benchmark then runs without them and says so
(without uvloop, uvicorn is left out and dynocorn's ASGI worker runs on asyncio's loop),
rather than not at all.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("granian", "uvloop")


def main() -> int:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    if subprocess.run([*pip, "-e", f"{ROOT}[bench]"]).returncode == 0:
        return 0
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements: list[str] = pyproject["project"]["optional-dependencies"]["bench"]
    print("bench: the bench extra did not install; trying its packages one by one", flush=True)
    for requirement in requirements:
        if subprocess.run([*pip, requirement]).returncode == 0:
            continue
        if not requirement.startswith(OPTIONAL):
            return 1
        print(f"bench: {requirement} does not install here; the benchmark runs without it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
