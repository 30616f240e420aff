"""Entry point of a benchmark child process: ``python bench/_child.py MODULE FUNCTION ARGS_JSON``
imports a bench script, calls the function and prints its JSON result as the last line."""

import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    import importlib

    warnings.simplefilter("ignore")
    module, name, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    result = getattr(importlib.import_module(module), name)(*args)
    print(json.dumps(result))
