"""differing Content-Length"""

status = 502
