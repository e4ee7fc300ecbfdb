"""Transfer-Encoding: chunked, chunked"""

status = 400
