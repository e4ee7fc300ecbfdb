"""Transfer-Encoding whose final coding is not chunked"""

status = 400
