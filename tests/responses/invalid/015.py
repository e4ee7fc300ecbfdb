"""bad Content-Length"""

status = 502
