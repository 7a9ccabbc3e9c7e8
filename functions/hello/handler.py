# A seed-style exec-mode function: the guest agent runs "python3 handler.py"
# once per request (OpenFaaS classic watchdog contract) and whatever it
# prints is the response body; the agent sniffs the content type (HTML).
import os

print("<!DOCTYPE html>")
print("<html>")
print("<head><title>Hello from a microVM</title></head>")
print("<body>")
print("<h1>Hello, World!</h1>")
print("<p>This page was printed by a Python function running in its own microVM.</p>")
print("<p>Request: {} {}</p>".format(os.environ.get("Http_Method", "GET"), os.environ.get("Http_Path", "/")))
print("</body>")
print("</html>")
