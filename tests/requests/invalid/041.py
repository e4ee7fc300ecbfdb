"""Transfer-Encoding: chunked;param"""

status = 400
