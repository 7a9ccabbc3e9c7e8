"""Runner for OpenFaaS's classic python3 template (exec mode).

The agent runs it once per request as `python3 classic.py HANDLER`: it
imports HANDLER (relative to the working directory, the code directory),
reads the request body from stdin as text, calls handle(req) and prints what
it returns (nothing for None), as the template's index.py does.
"""

import importlib.util
import os
import sys


def main():
    handler = sys.argv[1]
    function = os.environ.get("FAAS_FUNCTION") or "handle"
    path = os.path.join(os.getcwd(), handler)
    sys.path.insert(0, os.path.dirname(path))
    sys.path.insert(0, os.getcwd())
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        sys.exit(f"classic: cannot load {handler} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    fn = getattr(module, function, None)
    if not callable(fn):
        sys.exit(f"classic: {handler} defines no function {function}(req)")
    ret = fn(sys.stdin.read())
    if ret is not None:
        print(ret)


if __name__ == "__main__":
    main()
