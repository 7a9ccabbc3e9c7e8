# A handler written to OpenFaaS's classic python3 template (our own test file).
def handle(req):
    return "classic python got: " + req
