#!/bin/bash
# bash-hello: an exec-mode function (OpenFaaS classic watchdog contract).
# The request body arrives on stdin, the query string in $Http_Query, and
# whatever this prints is the response body.
body=$(cat)
echo "Hello from bash! query: ${Http_Query:-<none>}, body: ${body:-<empty>}"
