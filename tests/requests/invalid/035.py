"""Transfer-Encoding: xchunked"""

status = 400
