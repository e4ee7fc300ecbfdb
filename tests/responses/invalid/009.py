"""Transfer-Encoding not ending in chunked"""

status = 502
