import subprocess
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT = 8082


class FunctionHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        output = subprocess.check_output(["sh", "localfunction.sh"])
        self.send_response(200)
        self.send_header("Content-type", "text/html")
        self.end_headers()
        self.wfile.write(output)


if __name__ == "__main__":
    httpd = HTTPServer(("", PORT), FunctionHandler)
    print("httpd started on port", PORT)
    httpd.serve_forever()
